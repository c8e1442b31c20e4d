"""Commands about training runs that need no torch: ``plot-run`` (thin shell over ``report.run_plots``)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot-run")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the PNGs.")
def plot_run_command(runs: tuple[Path, ...], out: Path) -> None:
    """Plot training runs' loss, learning rate, momentum, images/s and probe top-1 against steps (one PNG per
    quantity in OUT, the runs overlaid). Exit 1 when some run could not be read."""
    from ..report.run_plots import RunReadError, plot_runs

    try:
        result = plot_runs(list(runs), out)
    except RunReadError as exc:
        raise click.ClickException(str(exc)) from exc
    for run, reasons in result["skipped_lines"].items():
        click.echo(f"{run}: skipped {len(reasons)} line(s), e.g. {reasons[0]}", err=True)
    for run, reason in result["failed"].items():
        click.echo(f"skipped {run}: {reason}", err=True)
    click.echo(f"wrote {len(result['written'])} plots of {len(result['runs'])} run(s) to {out}: "
               + ", ".join(Path(p).name for p in result["written"]))
    if result["failed"]:
        raise SystemExit(1)
