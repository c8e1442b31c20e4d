"""``regionshards plot-run``: a training run's metrics against steps, several runs overlaid (matplotlib, Agg).

Reads ``RUN/metrics.jsonl`` (one JSON object per optimiser step, written by the trainer; format in
``docs/trainer.md``) and, for the legend, ``RUN/config.json``'s method and backbone. One PNG per quantity —
``loss``, ``lr`` (learning rate), ``momentum`` (the target's EMA momentum, ``ema``), ``img_per_s`` and
``probe_top1`` (the online linear probe's top-1) — with every run that logged it as one line; a quantity no run
logged is skipped. No torch here: this reads files the trainer wrote.

Bad input is reported, never fatal for the other runs: a run folder without a regular ``metrics.jsonl``, or a
line that is not a JSON object with an integer ``step``, is listed with its reason (a truncated last line —
a run killed while writing — is skipped the same way).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
#: PNG name → (metrics field, title, y label)
QUANTITIES = {
    "loss": ("loss", "Training loss (mean over ranks)", "loss"),
    "lr": ("lr", "Learning rate", "learning rate"),
    "momentum": ("ema", "Target momentum (EMA)", "momentum"),
    "img_per_s": ("img_per_s", "Throughput (global samples per second)", "images / s"),
    "probe_top1": ("probe_top1", "Online linear probe top-1 (training batches)", "top-1 accuracy"),
}
MAX_LINE = 1 << 20  # a metrics line is ~200 bytes; anything this long is not one
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class RunMetrics:
    """The metrics rows of one run folder (sorted by step; a step logged twice keeps its last row)."""

    path: Path
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one field over the rows that have a finite number for it."""
        xs, ys = [], []
        for row in self.rows:
            value = row.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                xs.append(row["step"])
                ys.append(float(value))
        return xs, ys


class RunReadError(ValueError):
    """A run folder whose metrics cannot be read at all (the message says why)."""


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _label(run: Path) -> str:
    """``name (method backbone)`` from the run's config.json when it is readable, else the folder name."""
    config = run / CONFIG_NAME
    if _regular_file(config) and config.stat().st_size < MAX_LINE:
        try:
            data = json.loads(config.read_text("utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            return f"{run.name} ({data['method']} {data.get('backbone', '')})".replace(" )", ")")
    return run.name


def read_run(run: Path) -> RunMetrics:
    """The metrics of one run folder.

    Raises:
        RunReadError: no regular ``metrics.jsonl`` in ``run``, or none of its lines is a metrics row.
    """
    run = Path(run)
    path = run / METRICS_NAME
    if not _regular_file(path):
        raise RunReadError(f"{run}: no {METRICS_NAME} (not a training run folder, or not started)")
    out = RunMetrics(run, _label(run))
    by_step: dict[int, dict[str, Any]] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE + 1), b""), start=1):
            if len(raw) > MAX_LINE:
                out.skipped.append(f"line {number}: longer than {MAX_LINE} bytes")
                f.readline()  # the rest of that line
                continue
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                out.skipped.append(f"line {number}: not JSON")
                continue
            if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row["step"], bool):
                out.skipped.append(f"line {number}: no integer step")
                continue
            by_step[row["step"]] = row
    if not by_step:
        raise RunReadError(f"{path}: no metrics rows" + (f" ({out.skipped[0]})" if out.skipped else ""))
    out.rows = [by_step[s] for s in sorted(by_step)]
    return out


def make_figure(runs: list[RunMetrics], name: str) -> Figure | None:
    """The figure of quantity ``name`` (``QUANTITIES``) with one line per run that logged it; None if none did."""
    key, title, ylabel = QUANTITIES[name]
    lines = [(r, *r.series(key)) for r in runs]
    lines = [(r, xs, ys) for r, xs, ys in lines if xs]
    if not lines:
        return None
    fig = Figure(figsize=(7.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (run, xs, ys) in enumerate(lines):
        ax.plot(xs, ys, color=_COLOURS[i % len(_COLOURS)], linewidth=1.4, marker="." if len(xs) < 30 else None,
                label=f"{run.label}: last {ys[-1]:.4g} at step {xs[-1]}")
    ax.set_title(title)
    ax.set_xlabel("optimiser step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    if name == "probe_top1":
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_runs(runs: list[Path], out: Path) -> dict[str, Any]:
    """Write ``OUT/<quantity>.png`` for every quantity some run logged.

    Returns ``{"written": [paths], "runs": [labels], "failed": {run: reason}, "skipped_lines": {run: [...]}}``.

    Raises:
        RunReadError: no run could be read (the message gives the first reason).
    """
    read, failed = [], {}
    for run in runs:
        try:
            read.append(read_run(run))
        except RunReadError as exc:
            failed[str(run)] = str(exc)
    if not read:
        raise RunReadError(next(iter(failed.values())) if failed else "no runs given")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in QUANTITIES:
        fig = make_figure(read, name)
        if fig is not None:
            path = out / f"{name}.png"
            fig.savefig(path)
            written.append(str(path))
    return {"written": written, "runs": [r.label for r in read], "failed": failed,
            "skipped_lines": {str(r.path): r.skipped for r in read if r.skipped}}
