"""``regionshards plot``: one PNG histogram per figure of ``DatasetStats`` (matplotlib, Agg, no pyplot state).

Each figure draws the distributions that belong together as step histograms on shared bins (all proposals and
each filter's selection, say), titled with what is measured and over which dataset, the axes labelled with the
unit and with what is counted, and a legend giving each series' count and median, so a picture reads on its own.
The histograms are drawn from the streamed sketches' buckets (see ``sketch.py``), so plotting needs no second pass
over the data and no per-sample memory.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .stats import DatasetStats, Distribution

_BINS = 40
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _edges(series: list[Distribution]) -> np.ndarray:
    """Shared bin edges for the series of one figure: one bin per whole number when few, log or linear else;
    whole-number series get edges at half-integers (``_integer_edges``)."""
    lo = min(d.sketch.min for d in series)
    hi = max(d.sketch.max for d in series)
    integer = all(d.sketch.integer for d in series)
    log = series[0].log
    if integer and hi - lo <= 60:
        return np.arange(lo - 0.5, hi + 1.5)
    if log:
        positive = [float(v[v > 0].min()) for v in (d.sketch.buckets()[0] for d in series) if (v > 0).any()]
        lo = max(min(positive, default=1e-9), 1e-9)
        if hi <= lo:
            hi = lo * 1.01
        edges = np.geomspace(lo / 1.001, hi * 1.001, _BINS + 1)
        return _integer_edges(edges, lo, hi) if integer else edges
    if hi <= lo:
        return np.array([lo - 0.5, lo + 0.5]) if hi == lo and lo >= 1 else np.linspace(lo - 0.05, hi + 0.05, 3)
    edges = np.linspace(lo, hi, _BINS + 1)
    return _integer_edges(edges, lo, hi) if integer else edges


def _integer_edges(edges: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``edges`` moved to half-integers, duplicates dropped: every bin then holds at least one whole number and
    none is cut in two (edges between whole numbers alias into a comb of alternating 1- and 2-value bins)."""
    snapped = np.unique(np.clip(np.floor(edges) + 0.5, np.ceil(lo) - 0.5, np.floor(hi) + 0.5))
    return np.unique(np.concatenate([[np.ceil(lo) - 0.5], snapped, [np.floor(hi) + 0.5]]))


def _gapped(hist: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-number histograms drawn as separate bars: an empty sliver (10 % of the narrower neighbour) between
    bins, so adjacent bars of one height do not read as one wide bar. The counts are unchanged."""
    widths = np.diff(edges)
    gap = 0.1 * np.minimum(widths[:-1], widths[1:])
    inner = np.repeat(edges[1:-1], 2) + np.tile([-0.5, 0.5], len(gap)) * np.repeat(gap, 2)
    new_edges = np.concatenate([[edges[0]], inner, [edges[-1]]])
    new_hist = np.zeros(2 * len(hist) - 1, dtype=hist.dtype)
    new_hist[::2] = hist
    return new_hist, new_edges


def _figure_title(series: list[Distribution]) -> str:
    title = series[0].title
    return title.rsplit(" (", 1)[0] if len(series) > 1 and title.endswith(")") else title


def make_figure(series: list[Distribution], dataset_name: str) -> Figure:
    """One matplotlib figure (Agg canvas): histograms of ``series`` on shared bins, legend with count and median."""
    series = [d for d in series if d.sketch.count]
    if not series:
        raise ValueError("nothing to plot: every series is empty")
    fig = Figure(figsize=(7.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    edges = _edges(series)
    integer = all(d.sketch.integer for d in series)
    for i, d in enumerate(series):
        values, counts = d.sketch.buckets()
        hist, _ = np.histogram(values, bins=edges, weights=counts)
        drawn_hist, drawn_edges = _gapped(hist, edges) if integer and len(hist) > 1 else (hist, edges)
        s = d.sketch.summary()
        median = f"{s['median']:,}" if d.sketch.integer else f"{s['median']:.3g}"
        label = f"{d.series or d.title}: n={s['count']:,}, median {median}"
        ax.stairs(drawn_hist, drawn_edges, label=label, color=_COLOURS[i % len(_COLOURS)], linewidth=1.6,
                  fill=len(series) == 1, alpha=0.85 if len(series) > 1 else 0.6)
    if series[0].log and edges[0] > 0 and edges[-1] / edges[0] > 20:
        ax.set_xscale("log")
    ax.set_xlabel(series[0].unit)
    ax.set_ylabel(f"number of {series[0].per}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{_figure_title(series)}\n{dataset_name}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="selection" if len(series) > 1 and series[0].figure.startswith("proposals.")
              else None, title_fontsize=8)
    return fig


def render_figure(series: list[Distribution], dataset_name: str) -> bytes:
    """``make_figure`` as PNG bytes (no software tag: the same stats give the same bytes)."""
    buf = io.BytesIO()
    make_figure(series, dataset_name).savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def render_plots(stats: DatasetStats) -> dict[str, bytes]:
    """``{figure name: PNG bytes}`` for every figure of ``stats`` that has data (e.g. ``proposals.width``)."""
    name = Path(stats.path).name or stats.path
    return {fig: render_figure(series, name) for fig, series in stats.figures().items()
            if any(d.sketch.count for d in series)}


def write_plots(stats: DatasetStats, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``<figure>.png`` files (dots become ``_``) into ``out_dir`` (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fig, png in render_plots(stats).items():
        path = out / f"{fig.replace('.', '_')}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths
