"""Inspection commands: thin shells over ``regionshards.shards`` and ``regionshards.report`` (imported lazily:
matplotlib loads only when needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import Location


@click.command("verify")
@click.argument("out", type=Location(exists=True))
def verify_command(out: Path) -> None:
    """Check a shard dataset (its folder or manifest.json) against its manifest and the format.

    Prints every problem found; the exit status is 0 only when there is none.
    """
    from ..shards.verify import verify

    report = _inspect(verify, out)  # a store that does not answer (OSError) is one line, not a traceback
    _echo(str(report))
    sys.exit(0 if report.ok else 1)


# ShardError and ManifestError are ValueErrors; OSError covers unreadable inputs (a FIFO, a device, EIO).
_INSPECT_ERRORS = (OSError, KeyError, ValueError)


def _echo(text: str) -> None:
    """Print text built from dataset strings: control characters escaped (ANSI sequences never reach the
    terminal), lines kept."""
    from ..shards.checks import printable

    click.echo(printable(text, keep_newlines=True))


def _inspect(call, *args, **kwargs):
    """Run a report function; errors naming the input (dataset, key, filter, annotations) become one-line click
    errors, their control characters escaped."""
    from ..shards.checks import printable

    try:
        return call(*args, **kwargs)
    except _INSPECT_ERRORS as exc:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        raise click.ClickException(printable(message)) from exc


@click.command("stats")
@click.argument("out", type=Location())
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats_command(out: Path, as_json: bool) -> None:
    """Counts and distributions of a built dataset (OUT: its folder), streamed over the shards in flat memory."""
    from ..report.stats import compute_stats, format_stats

    stats = _inspect(compute_stats, out)
    _echo(json.dumps(stats.to_json(), indent=2) if as_json else format_stats(stats))


@click.command("plot")
@click.argument("out", type=Location())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the PNG histograms.")
def plot_command(out: Path, out_dir: Path) -> None:
    """PNG histograms of the distributions `regionshards stats` reports."""
    from ..report.plots import write_plots
    from ..report.stats import compute_stats

    for path in write_plots(_inspect(compute_stats, out), out_dir):
        _echo(str(path))


@click.command("show")
@click.argument("out", type=Location())
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
        from ..report.views import show_views
        from ..trainer.config import TrainConfig

        cfg = TrainConfig()
        try:
            from ..trainer.preview import views_augmenter

            augment = views_augmenter(cfg)
        except ImportError as exc:
            raise click.ClickException("regionshards show --views needs the train extra (torch): "
                                       "pip install 'regionshards[train]'") from exc
        paths = _inspect(show_views, out, out_dir, keys=keys, n=n or 6, seed=seed, augment=augment,
                         method=cfg.method)
        for path in paths:
            _echo(str(path))
        return
    for path in _inspect(show, out, out_dir, keys=keys, n=n or 6, seed=seed, filter_name=filter_name):
        _echo(str(path))


@click.command("eval")
@click.argument("outs", nargs=-1, required=True, type=Location())
@click.option("--annotations", required=True, type=click.Path(path_type=Path), help="COCO instances JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def eval_command(outs: tuple[Path, ...], annotations: Path, as_json: bool) -> None:
    """Box recall at IoU 0.5/0.7, ABO and best mask IoU of built datasets against COCO annotations."""
    from ..report.evaluate import evaluate, format_eval

    result = _inspect(evaluate, outs, annotations)
    _echo(json.dumps(result, indent=2) if as_json else format_eval(result))


@click.command("report")
@click.argument("out", type=Location())
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
    _echo(f"wrote {path}")
