"""``regionshards`` command line."""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable
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


def _method_options(command: Callable) -> Callable:
    """The segment and proposal options shared by ``build`` and ``proposals`` (defaults: the papers')."""
    options = [
        click.option("--segments", type=click.Choice(["fh", "gt", "none"]), default="fh", show_default=True),
        click.option("--fh-scale", type=float, default=1000, show_default=True),
        click.option("--fh-sigma", type=float, default=0.8, show_default=True),
        click.option("--fh-min-size", type=int, default=1000, show_default=True),
        click.option("--proposals", "proposals_variant", default="soco", show_default=True,
                     type=click.Choice(["soco", "alpacadb", "opencv-fast", "opencv-quality", "none"])),
        click.option("--ss-scale", type=float, default=300, show_default=True),
        click.option("--ss-sigma", type=float, default=0.9, show_default=True),
        click.option("--ss-min-size", type=int, default=100, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("build")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO instances JSON; SOURCE is then the image folder.")
@click.option("--layout", type=click.Choice(["auto", "imagenet", "coco", "folder", "list"]), default="auto",
              show_default=True, help="Input layout; auto detects it (and says what it found).")
@_method_options
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
@click.option("--fh-backend", type=click.Choice(["exact", "skimage", "opencv"]), default="exact", show_default=True)
@_method_options
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


# --- training: thin shells over regionshards.trainer (torch is imported inside the commands only) ------------

_TRAIN_OPTIONS = {  # option name → TrainConfig field, for options that map one to one
    "method": "method", "backbone": "backbone", "image_size": "image_size", "batch_size": "batch_size",
    "steps": "steps", "workers": "workers", "seed": "seed", "base_lr": "base_lr", "weight_decay": "weight_decay",
    "warmup_steps": "warmup_steps", "num_masks": "num_masks", "checkpoint_every": "checkpoint_every",
    "log_every": "log_every", "stop_at": "stop_at", "device": "device",
}


@main.command("train")
@click.option("--method", type=click.Choice(["detcon-b", "detcon-s", "soco", "soco-star", "detco"]), default="detcon-b",
              show_default=True)
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path), help="Dataset folder (built).")
@click.option("--out", "run", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]),
              default="resnet50", show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Per process (global = x processes).")
@click.option("--steps", type=int, required=True, help="Optimiser steps of the whole run (sets the schedules).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest checkpoint.")
@click.option("--workers", type=int, default=4, show_default=True, help="Loader processes per training process.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", "base_lr", type=float,
              help="Per 256 images (LARS). Default: the method's (DetCon 0.2, SoCo 1.0, DetCo 0.03).")
@click.option("--weight-decay", type=float, help="Default: the method's (DetCon 1.5e-6, SoCo 1e-5, DetCo 1e-4).")
@click.option("--warmup-steps", type=int, help="Linear warmup steps (default: 1% of --steps).")
@click.option("--num-masks", type=int, default=16, show_default=True, help="K masks sampled per view (DetCon).")
@click.option("--proposal-filter", help="SoCo: the recorded proposal filter to train on (default ratio3size0308).")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--stop-at", type=int, help="Stop (with a checkpoint) after this step; --resume continues.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON object of any trainer config fields; options given on the command line win.")
@click.pass_context
def train_command(ctx: click.Context, data: Path, run: Path, resume: bool, config_file: Path | None,
                  proposal_filter: str | None, **options) -> None:
    """DetCon-B/S, SoCo/SoCo* or DetCo pretraining on a built dataset; launch with torchrun for several processes.

    Writes RUN/config.json, RUN/metrics.jsonl (one line per step) and RUN/checkpoint-<step>.pt.
    """
    from ..trainer.config import TrainConfig

    values = json.loads(config_file.read_text("utf-8")) if config_file else {}
    values.pop("run", None)  # a previous run's config.json may serve as --config
    for name, field in _TRAIN_OPTIONS.items():
        if field not in values or ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            values[field] = options[name]
    values.update(data=str(data), out=str(run))
    if proposal_filter is not None:
        values["soco"] = {**values.get("soco", {}), "proposal_filter": proposal_filter}
    try:
        cfg = TrainConfig.from_dict(values).validate()
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    from ..trainer.loop import RunError, train

    try:
        result = train(cfg, resume=resume)
    except (RunError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"done: step {result['step']}, loss {result['loss']}, checkpoint {result['checkpoint']}")


@main.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="state_dict file.")
@click.option("--which", type=click.Choice(["online", "target"]), default="online", show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A particular checkpoint (default: the newest in RUN).")
@click.option("--format", "fmt", type=click.Choice(["torchvision", "maskrcnn"]), default="torchvision",
              show_default=True, help="maskrcnn (SoCo runs): backbone + FPN under maskrcnn_resnet50_fpn key names.")
@click.option("--head", is_flag=True, help="With --format maskrcnn: add the 4conv1fc box head (roi_heads.box_head).")
def export_command(run: Path, out: Path, which: str, checkpoint: Path | None, fmt: str, head: bool) -> None:
    """Write a run's backbone as a torchvision resnet state_dict (loads with strict=True), or a SoCo run's
    backbone + FPN (+ head) under torchvision's Mask R-CNN key names (load with strict=False)."""
    from ..trainer.checkpoint import export_backbone
    from ..trainer.detector_export import export_detector

    try:
        if fmt == "maskrcnn":
            info = export_detector(run, out, which=which, checkpoint=checkpoint, head=head)
        else:
            info = export_backbone(run, out, which=which, checkpoint=checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    what = (f"maskrcnn_resnet50_fpn keys, {info['tensors']} tensors{' with the box head' if head else ''}"
            if fmt == "maskrcnn" else f"torchvision {info['backbone']}")
    click.echo(f"wrote {info['path']}: {what} ({info['which']} network, step {info['step']})")


# --- inspection: thin shells over regionshards.report (imported lazily: matplotlib loads only when needed) -----

_INSPECT_ERRORS = (FileNotFoundError, KeyError, ValueError)


def _inspect(call, *args, **kwargs):
    """Run a report function; errors naming the input (dataset, key, filter, annotations) become click errors."""
    try:
        return call(*args, **kwargs)
    except _INSPECT_ERRORS as exc:
        raise click.ClickException(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)) from exc


@main.command("stats")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats_command(out: Path, as_json: bool) -> None:
    """Counts and distributions of a built dataset (OUT: its folder), streamed over the shards in flat memory."""
    from ..report.stats import compute_stats, format_stats

    stats = _inspect(compute_stats, out)
    click.echo(json.dumps(stats.to_json(), indent=2) if as_json else format_stats(stats))


@main.command("plot")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the PNG histograms.")
def plot_command(out: Path, out_dir: Path) -> None:
    """PNG histograms of the distributions `regionshards stats` reports."""
    from ..report.plots import write_plots
    from ..report.stats import compute_stats

    for path in write_plots(_inspect(compute_stats, out), out_dir):
        click.echo(str(path))


@main.command("show")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--key", "keys", multiple=True, help="Sample key to draw; repeatable.")
@click.option("--sample", "n", type=click.IntRange(min=1), help="Draw N samples at random instead (default 6).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random draw.")
@click.option("--filter", "filter_name", help="Draw only the proposals this recorded filter keeps.")
@click.option("--views", is_flag=True, help="Draw DetCon's two augmented views instead (seeded by --seed; "
              "needs the train extra).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def show_command(out: Path, keys: tuple[str, ...], n: int | None, seed: int, filter_name: str | None,
                 views: bool, out_dir: Path) -> None:
    """Overlay pictures: segments in colour with outlines (left), boxes (right), counts in a caption; with
    --views, the original with both crops, each augmented view beside its segment map and majority grid."""
    from ..report.overlay import show

    if keys and n is not None:
        raise click.UsageError("give --key or --sample, not both")
    if views and filter_name is not None:
        raise click.UsageError("--filter does not apply to --views")
    if views:
        from ..report.views import TrainExtraMissing, show_views

        try:
            paths = _inspect(show_views, out, out_dir, keys=keys, n=n or 6, seed=seed)
        except TrainExtraMissing as exc:
            raise click.ClickException(str(exc)) from exc
        for path in paths:
            click.echo(str(path))
        return
    for path in _inspect(show, out, out_dir, keys=keys, n=n or 6, seed=seed, filter_name=filter_name):
        click.echo(str(path))


@main.command("eval")
@click.argument("outs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--annotations", required=True, type=click.Path(path_type=Path), help="COCO instances JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def eval_command(outs: tuple[Path, ...], annotations: Path, as_json: bool) -> None:
    """Box recall at IoU 0.5/0.7, ABO and best mask IoU of built datasets against COCO annotations."""
    from ..report.evaluate import evaluate, format_eval

    result = _inspect(evaluate, outs, annotations)
    click.echo(json.dumps(result, indent=2) if as_json else format_eval(result))


@main.command("report")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--out", "html_out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--annotations", type=click.Path(path_type=Path), help="COCO instances JSON: adds the eval tables.")
@click.option("--sample", "n", type=click.IntRange(min=0), default=12, show_default=True, help="Overlays to draw.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--filter", "filter_name", help="Overlays show only the proposals this recorded filter keeps.")
def report_command(out: Path, html_out: Path, annotations: Path | None, n: int, seed: int,
                   filter_name: str | None) -> None:
    """One self-contained HTML page: statistics, histograms, overlays and (with --annotations) evaluation."""
    from ..report.html import write_report

    path = _inspect(write_report, out, html_out, annotations=annotations, overlays=n, seed=seed,
                    filter_name=filter_name)
    click.echo(f"wrote {path}")


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
