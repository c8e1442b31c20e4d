"""``regionshards build``: a thin shell over ``regionshards.builder``.

Exit status: 0 every input ok; 1 some inputs failed (each is a row with its reason); 2 usage error (a one-line
message, before Ray starts: bad options, empty or malformed source, unusable OUT, OUT locked by another build);
3 internal error (including a shard whose task died on every retry).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from ..images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from ..proposals import NAMED_FILTERS
from .options import Location, method_options


def _usage_error(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


@click.command("build")
@click.argument("source", type=Location(exists=True))
@click.argument("out", type=Location(file_okay=False))
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO instances JSON; SOURCE is then the image folder.")
@click.option("--layout", type=click.Choice(["auto", "imagenet", "coco", "folder", "list"]), default="auto",
              show_default=True, help="Input layout; auto detects it (and says what it found).")
@method_options
@click.option("--filter", "filters", multiple=True, default=("ratio3size0308", "ratio3", "none"), show_default=True,
              type=click.Choice(sorted(NAMED_FILTERS)), help="Filters whose selections every sample records.")
@click.option("--shard-size", type=int, default=1000, show_default=True, help="Inputs per shard.")
@click.option("--order", type=click.Choice(["permuted", "sorted"]), default="permuted", show_default=True,
              help="Inputs in a seeded random order (shards mix classes) or in sorted order.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the permuted order.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Images with more pixels are refused before decoding (≈ 200 B of worker memory per pixel).")
@click.option("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, show_default=True,
              help="Input files larger than this are refused before reading.")
@click.option("--prefix", default="shard", show_default=True, help="Shard file-name prefix.")
@click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster address (default: a local Ray on this machine).")
@click.option("--num-cpus", type=int, help="CPUs of the local Ray (default: all).")
@click.option("--overwrite", is_flag=True, help="Delete a previous build in OUT instead of resuming it.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def build_command(source, out, annotations, layout, segments, fh_scale, fh_sigma, fh_min_size, proposals_variant,
                  ss_scale, ss_sigma, ss_min_size, filters, shard_size, order, seed, max_pixels, max_bytes, prefix,
                  address, num_cpus, overwrite, progress) -> None:
    """Turn an image source into shards with segments and proposals (resumes by default).

    SOURCE is an ImageNet-style folder (class sub-folders), a COCO image folder with --annotations, a flat
    folder, or a .txt/.parquet file list; SOURCE (imagenet or flat layout) and OUT may be object-store URLs
    (s3://bucket/prefix; credentials and endpoint from the environment, e.g. AWS_ENDPOINT_URL).
    Exit status: 0 all inputs ok, 1 some inputs failed (each is listed with its reason in the index and counted
    in the summary), 2 usage error, 3 internal error.
    """
    from ..builder import (
        ConfigMismatchError,
        LockedError,
        OutputError,
        ShardFailedError,
        SourceError,
        StorageError,
        list_source,
        make_config,
        run_build,
    )
    from ..shards import DuplicateKeyError

    try:
        listing = list_source(source, annotations, layout)
        if not listing.refs:
            raise SourceError(f"{source}: no inputs found (an empty source builds nothing)")
        config = make_config(
            segments=segments, fh_scale=fh_scale, fh_sigma=fh_sigma, fh_min_size=fh_min_size,
            proposals=proposals_variant, ss_scale=ss_scale, ss_sigma=ss_sigma, ss_min_size=ss_min_size,
            filters=tuple(filters), shard_size=shard_size, max_pixels=max_pixels, max_bytes=max_bytes,
            order=order, seed=seed, prefix=prefix, layout=listing.layout, classes=listing.classes,
        )
    except (SourceError, DuplicateKeyError, ValueError) as exc:
        _usage_error(str(exc))
    click.echo(f"source: {listing.describe()}")
    try:
        summary = run_build(listing, out, config, address=address, num_cpus=num_cpus, overwrite=overwrite,
                            progress=progress)
    except (ConfigMismatchError, OutputError, LockedError) as exc:
        _usage_error(str(exc))
    except (ShardFailedError, StorageError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(3)
    except Exception as exc:  # noqa: BLE001 - anything else is our bug: say so, distinctly from failed inputs
        if os.environ.get("REGIONSHARDS_DEBUG"):
            traceback.print_exc()
        click.echo(f"internal error: {type(exc).__name__}: {str(exc)[:500]} "
                   "(set REGIONSHARDS_DEBUG=1 for the traceback)", err=True)
        sys.exit(3)
    click.echo(str(summary))
    click.echo(f"wrote {str(out).rstrip('/')}/manifest.json and {str(out).rstrip('/')}/summary.json")
    sys.exit(1 if summary.failed else 0)
