"""``regionshards`` command line: the group; each command lives in the module of its role."""

from __future__ import annotations

import click

from .. import __version__
from .build_cmd import build_command
from .failures_cmd import failures_command
from .inspect_cmd import eval_command, plot_command, report_command, show_command, stats_command, verify_command
from .proposals_cmd import proposals_command
from .run_cmd import plot_run_command
from .train_cmd import export_command, train_command


@click.group()
@click.version_option(__version__, prog_name="regionshards")
def main() -> None:
    """Unsupervised segments and proposals for object-level self-supervised pretraining."""


for _command in (build_command, proposals_command, verify_command, train_command, export_command, stats_command,
                 plot_command, show_command, eval_command, report_command, plot_run_command):
    main.add_command(_command)
main.add_command(failures_command)
