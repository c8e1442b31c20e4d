"""``regionshards failures``: which inputs a build could not use, and why (a thin shell over
``regionshards.report.failures``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .inspect_cmd import _inspect
from .options import Location


@click.command("failures")
@click.argument("out", type=Location())
@click.option("--json", "as_json", is_flag=True, help="Print the failures as JSON.")
def failures_command(out: Path, as_json: bool) -> None:
    """Every failed input of a built dataset (OUT: its folder): key, source path, reason and detail, read from
    the Parquet indexes. The exit status is 0 when the list could be read, whether or not it is empty."""
    from ..report.failures import failures_json, format_failures

    result = _inspect(failures_json, out)
    click.echo(json.dumps(result, indent=2) if as_json else format_failures(result))
