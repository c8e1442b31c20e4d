"""``regionshards build``: a thin shell over ``regionshards.builder``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..images import DEFAULT_MAX_PIXELS
from ..proposals import NAMED_FILTERS
from .options import method_options


@click.command("build")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO instances JSON; SOURCE is then the image folder.")
@click.option("--layout", type=click.Choice(["auto", "imagenet", "coco", "folder", "list"]), default="auto",
              show_default=True, help="Input layout; auto detects it (and says what it found).")
@method_options
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
    from ..builder import ConfigMismatchError, list_source, make_config, run_build

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
