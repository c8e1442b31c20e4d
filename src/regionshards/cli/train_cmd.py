"""Training commands: thin shells over ``regionshards.trainer`` (torch is imported inside the commands only)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

# the method table, the recipes and the export formats are torch-free; the rest of the trainer is imported inside
# the commands
from ..trainer.export_formats import EXPORT_FORMATS
from ..trainer.methods import DEFAULT_METHOD, METHOD_NAMES, METHODS
from ..trainer.recipes import RECIPES, recipe_values
from .options import Location

REFUSAL_GRACE_S = 5.0


class Refusal(click.ClickException):
    """A request the run or dataset cannot satisfy: one ``Error:`` line, exit 2 (a usage error). Under torchrun
    every rank refuses alike; only rank 0 prints, the others exit quietly with the same status."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: ANN001 (click's signature)
        if int(os.environ.get("RANK", "0")) == 0:
            super().show(file)
        else:
            # torchrun stops every rank as soon as one exits: give rank 0 the time to print the refusal (it
            # refuses alike and exits first; torchrun then ends this rank)
            time.sleep(REFUSAL_GRACE_S)


class DatasetError(Refusal):
    """A dataset that cannot be read (a damaged shard: ``shards.ShardError``, naming shard and member): one
    ``Error:`` line and exit 1, as ``regionshards stats`` / ``show`` / ``verify`` report an unreadable dataset (bad
    input, not a usage error). Under torchrun rank 0 prints it; another rank prints it only if it is still running
    after the grace period — i.e. rank 0 has not failed alike (torchrun ends every rank when one exits) — so a shard
    only that rank reads is still reported, and a shard every rank reads is reported once."""

    exit_code = 1

    def show(self, file=None) -> None:  # noqa: ANN001 (click's signature)
        super().show(file)
        if int(os.environ.get("RANK", "0")) != 0:
            click.ClickException.show(self, file)

_TRAIN_OPTIONS = {  # option name → TrainConfig field, for options that map one to one
    "method": "method", "backbone": "backbone", "image_size": "image_size", "batch_size": "batch_size",
    "steps": "steps", "workers": "workers", "seed": "seed", "base_lr": "base_lr", "weight_decay": "weight_decay",
    "warmup_steps": "warmup_steps", "num_masks": "num_masks", "checkpoint_every": "checkpoint_every",
    "log_every": "log_every", "stop_at": "stop_at", "device": "device",
}


@click.command("train")
@click.option("--method", type=click.Choice(METHOD_NAMES), default=DEFAULT_METHOD, show_default=True,
              help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()))
@click.option("--data", required=True, type=Location(exists=True), help="Dataset folder (built; or s3://...).")
@click.option("--out", "run", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]),
              default="resnet50", show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Per process (global = x processes).")
@click.option("--recipe", type=click.Choice(list(RECIPES)),
              help="An official run's settings, field by field (docs/trainer.md); other options win over it.")
@click.option("--steps", type=int, help="Optimiser steps of the whole run (sets the schedules).")
@click.option("--epochs", type=float, help="Instead of --steps: epochs of the dataset (steps = epochs x batches per "
              "epoch for this dataset, world size and batch size).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest checkpoint.")
@click.option("--workers", type=int, help="Loader processes per training process (default: what the cores allow "
              "per rank — affinity cores / LOCAL_WORLD_SIZE, less one — or the resumed run's).")
@click.option("--extend", is_flag=True, help="With --resume: continue a finished run to a larger --steps (the "
              "schedules become those of the new total from the resumed step on; see docs/trainer.md).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", "base_lr", type=float,
              help="Per 256 images. Default: the method's (" + ", ".join(f"{m.name} {m.base_lr:g}"
                                                                        for m in METHODS.values()) + ").")
@click.option("--weight-decay", type=float,
              help="Default: the method's (" + ", ".join(f"{m.name} {m.weight_decay:g}" for m in METHODS.values())
              + ").")
@click.option("--warmup-steps", type=int, help="Linear warmup steps (default: 1% of --steps).")
@click.option("--num-masks", type=int, default=16, show_default=True, help="K masks sampled per view (DetCon).")
@click.option("--proposal-filter", help="Methods that need proposals: the recorded filter to train on "
              "(default ratio3size0308).")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--stop-at", type=int, help="Stop (with a checkpoint) after this step; --resume continues.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON object of any trainer config fields; options given on the command line win.")
@click.pass_context
def train_command(ctx: click.Context, data: Path, run: Path, resume: bool, extend: bool, config_file: Path | None,
                  proposal_filter: str | None, recipe: str | None, epochs: float | None, **options) -> None:
    """Self-supervised pretraining (DetCon-B/S, SoCo/SoCo*, DetCo: see --method) on a built dataset; launch with
    torchrun for several processes.

    Writes RUN/config.json, RUN/metrics.jsonl (one line per step) and RUN/checkpoint-<step>.pt.
    """
    from ..shards import ShardError
    from ..shards.checks import printable
    from ..trainer.config import TrainConfig
    from ..trainer.preflight import PreflightError, default_workers

    if extend and not resume:
        raise click.UsageError("--extend continues a run: pass --resume too")
    if options["workers"] is None:
        options["workers"] = _saved_workers(run) if resume else None
        if options["workers"] is None:
            options["workers"] = default_workers()
    values = recipe_values(recipe) if recipe else {}
    given = json.loads(config_file.read_text("utf-8")) if config_file else {}
    given.pop("run", None)  # a previous run's config.json may serve as --config
    for key, value in given.items():  # the file wins over the recipe (nested objects merged)
        merge = isinstance(value, dict) and isinstance(values.get(key), dict)
        values[key] = {**values[key], **value} if merge else value
    for name, field in _TRAIN_OPTIONS.items():
        if field not in values or ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            values[field] = options[name]
    if epochs is not None:
        values["epochs"] = epochs
        if ctx.get_parameter_source("steps") != click.core.ParameterSource.COMMANDLINE:
            values["steps"] = 0
    elif ctx.get_parameter_source("steps") == click.core.ParameterSource.COMMANDLINE:
        values["epochs"] = None
    if epochs is not None and options["steps"] is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    if not values.get("steps") and values.get("epochs") is None:
        raise click.UsageError("give --steps or --epochs (or a --recipe)")
    values["steps"] = values.get("steps") or 0
    values.update(data=str(data), out=str(run))
    if proposal_filter is not None:
        spec = METHODS.get(values.get("method", DEFAULT_METHOD))
        if spec is None or "proposals" not in spec.needs or not spec.settings:
            raise click.UsageError(f"--proposal-filter: method {values.get('method')!r} uses no proposals")
        values[spec.settings] = {**values.get(spec.settings, {}), "proposal_filter": proposal_filter}
    try:
        cfg = TrainConfig.from_dict(values).validate()
    except (TypeError, ValueError) as exc:
        raise Refusal(str(exc)) from exc
    from ..trainer.loop import PeerStopped, RunError, train

    try:
        result = train(cfg, resume=resume, extend=extend)
    except (RunError, PreflightError, FileNotFoundError) as exc:
        raise Refusal(str(exc)) from exc
    except ShardError as exc:  # before the loop (epochs, probe classes) or from the stream, workers included
        raise DatasetError(printable(str(exc))) from exc
    except PeerStopped as exc:  # the rank that stopped the run prints why; torchrun names it too
        raise click.exceptions.Exit(1) from exc
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"done: step {result['step']}, loss {result['loss']}, checkpoint {result['checkpoint']}")


def _saved_workers(run: Path) -> int | None:
    """The loader workers of the run being resumed (part of its data order), if its config.json says."""
    try:
        saved = json.loads((run / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    workers = saved.get("workers") if isinstance(saved, dict) else None
    return workers if isinstance(workers, int) and workers >= 0 else None


@click.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Weights file.")
@click.option("--which", type=click.Choice(["online", "target"]), default="online", show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A particular checkpoint (default: the newest in RUN).")
@click.option("--format", "fmt", type=click.Choice(list(EXPORT_FORMATS)), default="torchvision", show_default=True,
              help="What the file loads into: " + "; ".join(f"{f.name}: {f.loads_into}"
                                                            for f in EXPORT_FORMATS.values()) + ".")
@click.option("--head", is_flag=True, help="Add SoCo's 4conv1fc box head (maskrcnn_resnet50_fpn_v2, detectron2).")
def export_command(run: Path, out: Path, which: str, checkpoint: Path | None, fmt: str, head: bool) -> None:
    """Write a run's pretrained weights for a classifier or a detector: the backbone (every method), SoCo's FPN
    with its norms and, with --head, its box head. docs/trainer.md shows how to load each format."""
    if head and not EXPORT_FORMATS[fmt].head:
        able = " or ".join(f.name for f in EXPORT_FORMATS.values() if f.head)
        raise click.UsageError(f"--head needs --format {able}")
    from ..trainer.exports import export_weights

    try:
        info = export_weights(run, out, fmt, which=which, checkpoint=checkpoint, head=head)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:
        raise Refusal(str(exc)) from exc
    parts = f"{' + '.join(info['parts'])}, {info['tensors']} tensors; " if info["tensors"] else ""
    click.echo(f"wrote {info['path']}: {info['loads_into']} ({parts}{info['which']} network, step {info['step']})")
