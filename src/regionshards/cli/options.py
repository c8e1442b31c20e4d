"""Option declarations shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import click


class Location(click.ParamType):
    """A local path (checked as ``click.Path(**checks)`` would, given as a ``Path``) or an object-store URL such as
    ``s3://bucket/prefix`` (given as a ``str``, opened with ``pyarrow.fs``; credentials from the environment)."""

    name = "path"

    def __init__(self, **checks: bool) -> None:
        self.local = click.Path(path_type=Path, **checks)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and urlparse(value).scheme not in ("", "file") and len(urlparse(value).scheme) > 1:
            return value
        return self.local.convert(value, param, ctx)


def method_options(command: Callable) -> Callable:
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
