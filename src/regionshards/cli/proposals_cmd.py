"""``regionshards proposals``: a quick look at a few image files."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from ..proposals import NAMED_FILTERS
from .options import method_options

if TYPE_CHECKING:  # report.preview loads numba and scipy: imported when the command runs, not for --help
    from ..report.preview import Summary


@click.command("proposals")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write one JSON line per image here.")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO instances JSON: adds box recall, ABO and best mask IoU per image.")
@click.option("--fh-backend", type=click.Choice(["exact", "skimage", "opencv"]), default="exact", show_default=True)
@method_options
@click.option("--filter", "filters", multiple=True, default=("ratio3size0308",), show_default=True,
              type=click.Choice(sorted(NAMED_FILTERS)), help="SoCo filter(s) to report; repeatable.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True)
@click.option("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, show_default=True)
def proposals_command(paths, out, annotations, segments, fh_backend, fh_scale, fh_sigma, fh_min_size,
                      proposals_variant, ss_scale, ss_sigma, ss_min_size, filters, max_pixels, max_bytes) -> None:
    """Segments and proposals of image files or folders, with a readable summary.

    Each image is computed by the build's own per-image function with the build's config for the same options,
    so what you see here is what ``regionshards build`` stores. Failed inputs are reported with their reason,
    and the exit status is 1 when any input failed.
    """
    from ..builder import make_config
    from ..builder.sources import ImageRef
    from ..builder.worker import STAGES, compute_input
    from ..report.preview import Summary, preview
    from ..shards.records import Source

    if segments == "gt" and annotations is None:
        raise click.UsageError("--segments gt needs --annotations (a COCO instances JSON)")
    try:
        config = make_config(
            segments=segments, fh_scale=fh_scale, fh_sigma=fh_sigma, fh_min_size=fh_min_size, fh_backend=fh_backend,
            proposals=proposals_variant, ss_scale=ss_scale, ss_sigma=ss_sigma, ss_min_size=ss_min_size,
            filters=tuple(filters), max_pixels=max_pixels, max_bytes=max_bytes,
            layout="coco" if annotations else "folder",
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    def compute(path: Path, anns: list | None):
        seconds = dict.fromkeys(STAGES, 0.0)
        ref = ImageRef("preview", str(path), Source(path=path.name), None if anns is None else tuple(anns))
        outcome = compute_input(ref, config, seconds)
        return outcome.record, outcome.note, {k: v for k, v in seconds.items() if k != "write"}

    summary = Summary()
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
    sink = out.open("w", encoding="utf-8") if out else None
    try:
        click.echo(f"{'image':<40} {'size':>9} {'segs':>5} {'props':>6} {'kept':>5}  note")
        for record, running in preview(paths, compute, annotations):
            summary = running
            click.echo(_row(record, filters))
            if sink:
                sink.write(json.dumps(record, separators=(",", ":")) + "\n")
    finally:
        if sink:
            sink.close()
    click.echo(format_summary(summary, segments, proposals_variant))
    if out:
        click.echo(f"wrote {summary.inputs} records to {out}")
    if summary.inputs != summary.ok + sum(summary.failed.values()):
        raise click.ClickException("internal error: inputs != ok + failed")
    sys.exit(1 if summary.failed else 0)


def _row(record: dict, filters: tuple[str, ...]) -> str:
    name = Path(record["path"]).name[-40:]
    if record["status"] != "ok":
        return f"{name:<40} {'-':>9} {'-':>5} {'-':>6} {'-':>5}  FAILED {record['reason']}: {record['detail'][:60]}"
    size = f"{record['width']}x{record['height']}"
    segs = len(record["segments"]["rles"]) if "segments" in record else "-"
    props = len(record["proposals"]["boxes"]) if "proposals" in record else "-"
    kept, note = "-", ""
    if filters and "filters" in record:
        f = record["filters"][filters[0]]
        kept = len(f["keep"])
        note = "" if f["used"] == filters[0] else f"fallback {f['used']}"
    if "eval" in record and "recall_05" in record["eval"]:
        note += f" recall@0.5 {record['eval']['recall_05']:.2f}"
    return f"{name:<40} {size:>9} {segs:>5} {props:>6} {kept:>5}  {note.strip()}"


def format_summary(s: Summary, segments: str, proposals: str) -> str:
    """A few lines a person reads at the end of a run."""

    def med(values: list) -> str:
        return f"{statistics.median(values):g}" if values else "-"

    failed = sum(s.failed.values())
    lines = [
        "",
        f"inputs {s.inputs} = ok {s.ok} + failed {failed}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(s.failed.items()))})" if failed else ""),
    ]
    if s.segments_per_image:
        lines.append(f"segments per image ({segments}): median {med(s.segments_per_image)}, "
                     f"min {min(s.segments_per_image)}, max {max(s.segments_per_image)}")
    if s.proposals_per_image:
        lines.append(f"proposals per image ({proposals}): median {med(s.proposals_per_image)}")
        for name, kept in s.kept_per_image.items():
            lines.append(f"  kept by {name} (with fallbacks): median {med(kept)}")
    if s.recall_05:
        lines.append(f"box recall@0.5 {statistics.fmean(s.recall_05):.3f}, recall@0.7 "
                     f"{statistics.fmean(s.recall_07):.3f}, ABO {statistics.fmean(s.abo):.3f} "
                     f"(mean over {len(s.recall_05)} annotated images)")
    if s.mask_best_iou:
        lines.append(f"best segment IoU per ground-truth mask: mean {statistics.fmean(s.mask_best_iou):.3f} "
                     f"over {len(s.mask_best_iou)} masks")
    if s.ok:
        per = ", ".join(f"{k} {1000 * v / s.ok:.1f} ms" for k, v in s.seconds.items())
        lines.append(f"time per image: {per}")
    return "\n".join(lines)
