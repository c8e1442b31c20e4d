"""``regionshards`` command line."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import click

from .. import __version__
from ..images import DEFAULT_MAX_PIXELS
from ..proposals import NAMED_FILTERS
from ..report.preview import ProposalConfig, Summary, preview


@click.group()
@click.version_option(__version__, prog_name="regionshards")
def main() -> None:
    """Unsupervised segments and proposals for object-level self-supervised pretraining."""


@main.command("build")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO instances JSON; SOURCE is then the image folder.")
@click.option("--layout", type=click.Choice(["auto", "imagenet", "coco", "folder", "list"]), default="auto",
              show_default=True, help="Input layout; auto detects it (and says what it found).")
@click.option("--segments", type=click.Choice(["fh", "gt", "none"]), default="fh", show_default=True)
@click.option("--fh-scale", type=float, default=1000, show_default=True)
@click.option("--fh-sigma", type=float, default=0.8, show_default=True)
@click.option("--fh-min-size", type=int, default=1000, show_default=True)
@click.option("--proposals", "proposals_variant", default="soco", show_default=True,
              type=click.Choice(["soco", "alpacadb", "opencv-fast", "opencv-quality", "none"]))
@click.option("--ss-scale", type=float, default=300, show_default=True)
@click.option("--ss-sigma", type=float, default=0.9, show_default=True)
@click.option("--ss-min-size", type=int, default=100, show_default=True)
@click.option("--filter", "filters", multiple=True, default=("ratio3size0308", "ratio3", "none"), show_default=True,
              type=click.Choice(sorted(NAMED_FILTERS)), help="Filters whose selections every sample records.")
@click.option("--shard-size", type=int, default=1000, show_default=True, help="Inputs per shard.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Images with more pixels are refused before decoding.")
@click.option("--prefix", default="shard", show_default=True, help="Shard file-name prefix.")
@click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster address (default: a local Ray on this machine).")
@click.option("--num-cpus", type=int, help="CPUs of the local Ray (default: all).")
@click.option("--overwrite", is_flag=True, help="Delete a previous build in OUT instead of resuming it.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def build_command(source, out, annotations, layout, segments, fh_scale, fh_sigma, fh_min_size, proposals_variant,
                  ss_scale, ss_sigma, ss_min_size, filters, shard_size, max_pixels, prefix, address, num_cpus,
                  overwrite, progress) -> None:
    """Turn an image source into shards with segments and proposals (resumes by default).

    SOURCE is an ImageNet-style folder (class sub-folders), a COCO image folder with --annotations, a flat
    folder, or a .txt/.parquet file list. The exit status is 1 when any input failed (each is listed with
    its reason in the index and counted in the summary).
    """
    from ..build import ConfigMismatchError, list_source, make_config, run_build

    try:
        listing = list_source(source, annotations, layout)
        config = make_config(
            segments=segments, fh_scale=fh_scale, fh_sigma=fh_sigma, fh_min_size=fh_min_size,
            proposals=proposals_variant, ss_scale=ss_scale, ss_sigma=ss_sigma, ss_min_size=ss_min_size,
            filters=tuple(filters), shard_size=shard_size, max_pixels=max_pixels, prefix=prefix,
            layout=listing.layout, classes=listing.classes,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"source: {listing.describe()}")
    try:
        summary = run_build(listing, out, config, address=address, num_cpus=num_cpus, overwrite=overwrite,
                            progress=progress)
    except ConfigMismatchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(summary))
    click.echo(f"wrote {out}/manifest.json and {out}/summary.json")
    sys.exit(1 if summary.failed else 0)


@main.command("proposals")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write one JSON line per image here.")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO instances JSON: adds box recall, ABO and best mask IoU per image.")
@click.option("--segments", type=click.Choice(["fh", "gt", "none"]), default="fh", show_default=True)
@click.option("--fh-backend", type=click.Choice(["exact", "skimage", "opencv"]), default="exact", show_default=True)
@click.option("--fh-scale", type=float, default=1000, show_default=True)
@click.option("--fh-sigma", type=float, default=0.8, show_default=True)
@click.option("--fh-min-size", type=int, default=1000, show_default=True)
@click.option("--proposals", "proposals_variant", default="soco", show_default=True,
              type=click.Choice(["soco", "alpacadb", "opencv-fast", "opencv-quality", "none"]))
@click.option("--ss-scale", type=float, default=300, show_default=True)
@click.option("--ss-sigma", type=float, default=0.9, show_default=True)
@click.option("--ss-min-size", type=int, default=100, show_default=True)
@click.option("--filter", "filters", multiple=True, default=("ratio3size0308",), show_default=True,
              type=click.Choice(sorted(NAMED_FILTERS)), help="SoCo filter(s) to report; repeatable.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True)
def proposals_command(paths, out, annotations, segments, fh_backend, fh_scale, fh_sigma, fh_min_size,
                      proposals_variant, ss_scale, ss_sigma, ss_min_size, filters, max_pixels) -> None:
    """Segments and proposals of image files or folders, with a readable summary.

    Failed inputs are reported with their reason, and the exit status is 1 when any input failed.
    """
    config = ProposalConfig(
        segments=segments, fh_scale=fh_scale, fh_sigma=fh_sigma, fh_min_size=fh_min_size, fh_backend=fh_backend,
        proposals=proposals_variant, ss_scale=ss_scale, ss_sigma=ss_sigma, ss_min_size=ss_min_size,
        filters=tuple(filters), max_pixels=max_pixels,
    )
    if segments == "gt" and annotations is None:
        raise click.UsageError("--segments gt needs --annotations (a COCO instances JSON)")
    summary = Summary()
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
    sink = out.open("w", encoding="utf-8") if out else None
    try:
        click.echo(f"{'image':<40} {'size':>9} {'segs':>5} {'props':>6} {'kept':>5}  note")
        for record, running in preview(paths, config, annotations):
            summary = running
            click.echo(_row(record, config))
            if sink:
                sink.write(json.dumps(record, separators=(",", ":")) + "\n")
    finally:
        if sink:
            sink.close()
    click.echo(format_summary(summary, config))
    if out:
        click.echo(f"wrote {summary.inputs} records to {out}")
    if summary.inputs != summary.ok + sum(summary.failed.values()):
        raise click.ClickException("internal error: inputs != ok + failed")
    sys.exit(1 if summary.failed else 0)


@main.command("verify")
@click.argument("out", type=click.Path(exists=True, path_type=Path))
def verify_command(out: Path) -> None:
    """Check a shard dataset (its folder or manifest.json) against its manifest and the format.

    Prints every problem found; the exit status is 0 only when there is none.
    """
    from ..shards.verify import verify

    report = verify(out)
    click.echo(str(report))
    sys.exit(0 if report.ok else 1)


def _row(record: dict, config: ProposalConfig) -> str:
    name = Path(record["path"]).name[-40:]
    if record["status"] != "ok":
        return f"{name:<40} {'-':>9} {'-':>5} {'-':>6} {'-':>5}  FAILED {record['reason']}: {record['detail'][:60]}"
    size = f"{record['width']}x{record['height']}"
    segs = len(record["segments"]["rles"]) if "segments" in record else "-"
    props = len(record["proposals"]["boxes"]) if "proposals" in record else "-"
    kept, note = "-", ""
    if config.filters and "filters" in record:
        f = record["filters"][config.filters[0]]
        kept = len(f["keep"])
        note = "" if f["used"] == config.filters[0] else f"fallback {f['used']}"
    if "eval" in record and "recall_05" in record["eval"]:
        note += f" recall@0.5 {record['eval']['recall_05']:.2f}"
    return f"{name:<40} {size:>9} {segs:>5} {props:>6} {kept:>5}  {note.strip()}"


def format_summary(s: Summary, config: ProposalConfig) -> str:
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
        lines.append(f"segments per image ({config.segments}): median {med(s.segments_per_image)}, "
                     f"min {min(s.segments_per_image)}, max {max(s.segments_per_image)}")
    if s.proposals_per_image:
        lines.append(f"proposals per image ({config.proposals}): median {med(s.proposals_per_image)}")
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
