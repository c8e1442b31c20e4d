"""Training commands: thin shells over ``regionshards.trainer`` (torch is imported inside the commands only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .options import Location

_TRAIN_OPTIONS = {  # option name → TrainConfig field, for options that map one to one
    "method": "method", "backbone": "backbone", "image_size": "image_size", "batch_size": "batch_size",
    "steps": "steps", "workers": "workers", "seed": "seed", "base_lr": "base_lr", "weight_decay": "weight_decay",
    "warmup_steps": "warmup_steps", "num_masks": "num_masks", "checkpoint_every": "checkpoint_every",
    "log_every": "log_every", "stop_at": "stop_at", "device": "device",
}


@click.command("train")
@click.option("--method", type=click.Choice(["detcon-b", "detcon-s", "soco", "soco-star", "detco"]), default="detcon-b",
              show_default=True)
@click.option("--data", required=True, type=Location(exists=True), help="Dataset folder (built; or s3://...).")
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


@click.command("export")
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
