"""``regionshards report``: one self-contained HTML page about a dataset.

The page holds the counts and the statistics table (``stats``), the histograms (``plots``, PNG), a grid of
overlay pictures of reproducibly drawn samples (``overlay``, JPEG to keep the page small) and, when annotations
are given, the evaluation tables (``evaluate``). Every image is embedded as a ``data:`` URI and the page carries
a Content-Security-Policy that allows nothing else (no scripts, no fetches), so it opens offline, from a
``file://`` URL or as a mail attachment, exactly as written.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .dataset import check_filter, choose_samples, naming, open_report_dataset
from .evaluate import evaluate
from .overlay import render_overlay
from .plots import render_plots
from .stats import DatasetStats, compute_stats, format_stats

_SINGULAR = {"images": "image", "boxes": "box", "segments": "segment", "samples": "sample"}
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1400px;padding:0 16px;color:#1b1b1b}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 9px;border-bottom:1px solid #eee}
th{text-align:left;background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
figure{margin:0}figure img{width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:12px;color:#555}.note{color:#555;font-size:12px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-3):
        return f"{v:.{digits}g}"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.{digits}f}"


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` of ``data``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        cells = [f"<td class=n>{_esc(c)}</td>" if i >= numeric_from else f"<td>{_esc(c)}</td>"
                 for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _summary_section(stats: DatasetStats) -> str:
    text = format_stats(stats).split("\n\n", 1)[0]
    return "<h2>Dataset</h2><pre>" + _esc(text) + "</pre>"


def _stats_section(stats: DatasetStats) -> str:
    j = stats.to_json()
    rows = [[d["title"], d["per"], *(_num(d[c]) for c in ("count", "mean", "min", "median", "p95", "max"))]
            for d in j["distributions"].values()]
    return ("<h2>Statistics</h2>" + _table(["distribution", "per", "count", "mean", "min", "median", "p95", "max"],
                                           rows, numeric_from=2)
            + f"<p class=note>{_esc(j['precision'])}</p>")


def _eval_section(result: dict[str, Any]) -> str:
    parts = [f"<h2>Evaluation against {_esc(Path(result['annotations']).name)}</h2>"]
    for d in result["datasets"]:
        parts.append(f"<p>{d['images_matched']} images matched, {d['samples_unmatched']} samples without annotations, "
                     f"{d['annotated_images_missing']} annotated images not in the dataset; {d['crowd_excluded']} "
                     "crowd annotations excluded.</p>")
    if result["proposals"]:
        rows = [[r["method"], r["filter"], r["images"], r["gt_boxes"], _num(r["proposals_per_image"], 1),
                 _num(r["recall@0.5"]), _num(r["recall@0.7"]), _num(r["abo"])] for r in result["proposals"]]
        parts.append("<h3>Proposals</h3>" + _table(
            ["method", "filter", "images", "gt boxes", "proposals/image", "recall@0.5", "recall@0.7", "ABO"], rows, 2))
        parts.append("<p class=note>Recall and ABO pooled over ground-truth objects (crowd excluded); a whole-image "
                     "fallback counts as one box.</p>")
    if result["segments"]:
        rows = []
        for r in result["segments"]:
            b = r["best_iou"]
            rows.append([r["method"], r["images"], r["gt_masks"], _num(r["segments_per_image"], 1),
                         *(_num(b[k]) for k in ("mean", "fraction>=0.5", "min", "p25", "median", "p75", "max")),
                         " ".join(str(c) for c in b["histogram"]["counts"])])
        parts.append("<h3>Segments: best IoU per ground-truth mask</h3>" + _table(
            ["method", "images", "gt masks", "segments/image", "mean", ">=0.5", "min", "p25", "median", "p75", "max",
             "histogram (0.1 bins)"], rows, 1))
    return "".join(parts)


def _figure(uri: str, alt: str, caption: str) -> str:
    return (f"<figure><img src=\"{uri}\" alt=\"{_esc(alt)}\"><figcaption>{_esc(caption)}</figcaption></figure>")


def render_report(path: str | os.PathLike[str], *, annotations: str | os.PathLike[str] | None = None,
                  overlays: int = 12, seed: int = 0, filter_name: str | None = None) -> str:
    """The HTML text of the report on the dataset at ``path`` (see the module docstring).

    Args:
        overlays: how many samples to draw (``dataset.choose_samples`` with ``seed``); 0 for none.
        filter_name: overlays show the boxes this recorded filter keeps; None shows every proposal.
    """
    ds = open_report_dataset(path)
    check_filter(ds, filter_name)
    stats = compute_stats(path)
    name = Path(path).name or os.fspath(path)
    body = [f"<h1>regionshards report: {_esc(name)}</h1>",
            f"<p class=note>{_esc(os.fspath(path))} &middot; regionshards {_esc(__version__)}</p>",
            _summary_section(stats), _stats_section(stats)]
    if annotations is not None:
        body.append(_eval_section(evaluate([path], annotations)))
    plots, figures = render_plots(stats), stats.figures()
    body.append("<h2>Distributions</h2><div class=grid>")
    for fig, png in plots.items():
        series = figures[fig]
        names = ", ".join(d.series for d in series if d.series)
        body.append(_figure(data_uri(png, "image/png"), f"histogram {fig}",
                            f"{fig}: {series[0].unit}, one value per {_SINGULAR.get(series[0].per, series[0].per)}"
                            + (f"; series {names}" if len(series) > 1 else "")))
    body.append("</div>")
    if overlays > 0:
        shown = "every proposal" if filter_name is None else f"proposals kept by {filter_name}"
        samples = choose_samples(ds, overlays, seed)
        body.append(f"<h2>Samples</h2><p class=note>{len(samples)} samples drawn with seed {seed}; left: segments, "
                    f"right: {_esc(shown)}.</p><div class=grid>")
        for sample in samples:
            buf = io.BytesIO()
            with naming(sample):
                render_overlay(sample, filter_name).save(buf, format="JPEG", quality=88)
            body.append(_figure(data_uri(buf.getvalue(), "image/jpeg"), f"overlay {sample.key}", sample.key))
        body.append("</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<title>regionshards report: {_esc(name)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(path: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any) -> Path:
    """Write ``render_report(path, **options)`` to ``out`` (its folder is created); returns ``out``."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_report(path, **options), encoding="utf-8")
    return target
