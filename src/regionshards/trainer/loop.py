"""The training loop: one process per device under torchrun (or a single process), DDP when there are several.

A run folder holds ``config.json`` (the full config plus the run's world size, global batch and schedule),
``metrics.jsonl`` (one object per optimiser step, written by rank 0) and ``checkpoint-{step:08d}.pt``. Steps
are counted from 1 in metrics and checkpoints (``step`` = optimiser steps done). A checkpoint at step t lets
``resume=True`` continue with step t + 1 exactly as an uninterrupted run would: the model, EMA target,
optimiser state and the data stream position (``ShardStream(start_step=t)``) are restored and nothing else is
random.

Metrics per step: ``step``, ``epoch``, ``loss`` (mean over ranks), ``lr``, ``img_per_s`` (global samples — each
with all its views — per second over the logging window holding the step; the first window includes start-up),
``ema`` (the target's momentum: DetCon-B, SoCo, DetCo's key encoder), ``time`` (seconds since the start of this
process's loop). The method (DetCon-B/S, SoCo/SoCo*, DetCo) comes from ``methods.make_method``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_differences
from .data import ShardStream, make_loader
from .lars import LARS, learning_rate, peak_learning_rate
from .methods import DETCON, has_target, make_method, optimizer_groups, to_device
from .runtime import (
    Runtime,
    barrier,
    configure_cuda,
    init_distributed,
    select_runtime,
    shutdown_distributed,
)
from .transforms import normalize

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"


class RunError(RuntimeError):
    """A run folder that cannot be started or resumed as asked (message says why)."""


def _run_info(cfg: TrainConfig, runtime: Runtime, stream: ShardStream) -> dict[str, Any]:
    global_batch = cfg.batch_size * runtime.world_size
    return {"world_size": runtime.world_size, "global_batch": global_batch,
            "peak_lr": peak_learning_rate(cfg.base_lr, global_batch, cfg.lr_batch_base),
            "warmup_steps": cfg.warmup_for(stream.batches_per_epoch), "batches_per_epoch": stream.batches_per_epoch,
            "samples_per_epoch": stream.samples_per_epoch, "device": runtime.device.type,
            "amp": str(runtime.amp_dtype).replace("torch.", "") if runtime.amp_dtype else None,
            "torch": torch.__version__}


def _check_run_folder(cfg: TrainConfig, runtime: Runtime, resume: bool) -> tuple[int, Path | None]:
    """Validate the run folder for a fresh start or a resume; returns the step to start from and its checkpoint."""
    run = Path(cfg.out)
    saved = run / CONFIG_NAME
    found = list_checkpoints(run)
    if not resume:
        if saved.exists() or found:
            raise RunError(f"{run} already holds a run: pass --resume to continue it, or choose a new folder")
        return 0, None
    if not saved.exists():
        raise RunError(f"{run}: nothing to resume (no {CONFIG_NAME})")
    old = json.loads(saved.read_text("utf-8"))
    diff = config_differences({k: v for k, v in old.items() if k != "run"}, cfg.to_dict())
    if old.get("run", {}).get("world_size") != runtime.world_size:
        diff.append("world_size")
    if diff:
        raise RunError(f"{run}: the config differs from the saved run in {', '.join(diff)}; resume with the same "
                       f"settings or start a new folder")
    return found[-1] if found else (0, None)


def _trim_metrics(path: Path, step: int) -> None:
    """Keep only the metrics lines of steps <= ``step`` (those after the resumed checkpoint are redone)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text("utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines), "utf-8")
    os.replace(tmp, path)


def _to_device(batch: dict[str, Any], runtime: Runtime, cfg: TrainConfig) -> tuple[dict[str, Any], tuple]:
    dev = runtime.device
    moved = {k: batch[k].to(dev, non_blocking=True) for k in ("grid0", "grid1", "ids0", "ids1")}
    views = []
    for name in ("view0", "view1"):
        x = batch[name].to(dev, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last if runtime.channels_last else torch.contiguous_format)
        views.append(normalize(x, cfg.mean, cfg.std))
    return moved, tuple(views)


def build(cfg: TrainConfig, runtime: Runtime) -> tuple[nn.Module, LARS]:
    """The method module on the runtime's device and its LARS optimiser (same init for a given seed)."""
    torch.manual_seed(cfg.seed)
    method = make_method(cfg)
    if runtime.distributed and runtime.device.type == "cuda" and cfg.sync_bn:
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method = method.to(runtime.device)
    if runtime.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = LARS(optimizer_groups(method, cfg), lr=0.0, momentum=cfg.lars_momentum, eta=cfg.lars_eta)
    return method, optimizer


def check_dataset(cfg: TrainConfig) -> None:
    """Refuse, naming the dataset, a method whose inputs the build did not store (segments for DetCon,
    proposals and the chosen filter for SoCo); DetCo needs images only."""
    from ..shards import MANIFEST_NAME, ManifestError, read_manifest

    path = Path(cfg.data)
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    if "://" in cfg.data and not cfg.data.startswith("file:"):  # an object-store dataset (s3://bucket/out)
        manifest_path = cfg.data if cfg.data.endswith(".json") else f"{cfg.data.rstrip('/')}/{MANIFEST_NAME}"
    try:
        built = read_manifest(manifest_path)["config"]
    except (FileNotFoundError, ManifestError) as exc:
        raise RunError(f"{cfg.data}: not a finished regionshards dataset ({exc})") from exc
    if cfg.method.startswith("detcon"):
        if cfg.mask_source == "segments" and built.get("segments", {}).get("method") in (None, "none"):
            raise RunError(f"{cfg.data} was built with --segments none: {cfg.method} needs segments")
    elif cfg.method.startswith("soco"):
        if built.get("proposals", {}).get("method") in (None, "none"):
            raise RunError(f"{cfg.data} was built with --proposals none: {cfg.method} needs proposals")
        wanted = cfg.soco.proposal_filter
        if wanted not in built.get("filters", []):
            raise RunError(f"{cfg.data} records the filters {built.get('filters')}, not {wanted!r} "
                           "(rebuild with --filter, or pass --proposal-filter)")


def train(cfg: TrainConfig, resume: bool = False, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns ``{"step", "loss", "checkpoint"}`` of the last step.

    Launch under ``torchrun --nproc-per-node N`` for N processes (NCCL on CUDA, gloo on CPU).

    Raises:
        RunError: the run folder holds another run, or differs from the one being resumed.
    """
    cfg.validate()
    check_dataset(cfg)
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    runtime = select_runtime(torch.cuda.is_available(), cfg.device)
    init_distributed(runtime)
    try:
        result = _train(cfg, runtime, resume, echo)
    except BaseException:
        shutdown_distributed(wait=False)  # the other ranks may never reach a barrier
        raise
    shutdown_distributed()
    return result


def _train(cfg: TrainConfig, runtime: Runtime, resume: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    configure_cuda(runtime)
    run = Path(cfg.out)
    start, checkpoint = _check_run_folder(cfg, runtime, resume)
    barrier(runtime)
    method, optimizer = build(cfg, runtime)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, map_location=runtime.device)
        if state["step"] != start:
            raise RunError(f"{checkpoint}: holds step {state['step']}, its name says {start}")
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    online: nn.Module = method.online
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        online = DistributedDataParallel(method.online, device_ids=device_ids)
    stream = ShardStream(cfg.data, cfg, rank=runtime.rank, world_size=runtime.world_size, start_step=start)
    info = _run_info(cfg, runtime, stream)
    if runtime.is_main:
        run.mkdir(parents=True, exist_ok=True)
        if not start and not (run / CONFIG_NAME).exists():
            (run / CONFIG_NAME).write_text(json.dumps({**cfg.to_dict(), "run": info}, indent=2) + "\n", "utf-8")
        _trim_metrics(run / METRICS_NAME, start)
        echo(f"{cfg.method} {cfg.backbone} on {runtime.world_size} x {runtime.device.type}: global batch "
             f"{info['global_batch']}, peak lr {info['peak_lr']:.4g}, {info['batches_per_epoch']} steps/epoch, "
             f"{'resuming at step ' + str(start) if start else 'starting'} → {cfg.steps}")
    barrier(runtime)
    loader = make_loader(stream, cfg.workers, pin_memory=runtime.device.type == "cuda")
    end = cfg.steps if cfg.stop_at is None else max(start, min(cfg.steps, cfg.stop_at))
    peak, warmup = info["peak_lr"], info["warmup_steps"]
    window: list[tuple[int, int, torch.Tensor, float, float]] = []
    t0 = t_window = time.perf_counter()
    last: dict[str, Any] = {"step": start, "loss": None, "checkpoint": None}
    method.train()
    batches = iter(loader)
    try:
        for step in range(start, end):
            batch = next(batches)
            if batch["step"] != step:
                raise RuntimeError(f"data stream out of step: got batch {batch['step']} for step {step}")
            lr = learning_rate(step, cfg.steps, peak, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if cfg.method in DETCON:
                moved, views = _to_device(batch, runtime, cfg)
            else:
                moved, views = to_device(batch, runtime.device, runtime.channels_last, cfg.mean, cfg.std)
            loss = method.loss(moved, online=online, images=views, autocast=runtime.autocast)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema = method.update_target(step, cfg.steps)
            window.append((step + 1, int(batch["epoch"]), loss.detach(), lr, ema))
            done = step + 1
            checkpoint_due = done % cfg.checkpoint_every == 0 or done == end
            if done % cfg.log_every == 0 or checkpoint_due:
                now = time.perf_counter()
                last["loss"] = _flush(window, now - t_window, now - t0, cfg, runtime, run, echo)
                window, t_window = [], now
            if checkpoint_due:
                if runtime.is_main:
                    state = {"model": method.state_dict(), "optimizer": optimizer.state_dict(),
                             "config": cfg.to_dict(), "world_size": runtime.world_size}
                    last["checkpoint"] = str(save_checkpoint(run, done, state, cfg.keep_checkpoints))
                barrier(runtime)
                t_window = time.perf_counter()  # saving is not training time
            last["step"] = done
    finally:
        del batches
    return last


def _flush(window: list, seconds: float, elapsed: float, cfg: TrainConfig, runtime: Runtime, run: Path,
           echo: Callable[[str], None]) -> float:
    """Write the window's metrics lines (rank 0) and the progress line; returns the last step's mean loss."""
    losses = torch.stack([w[2].float() for w in window])
    if runtime.distributed:
        dist.all_reduce(losses)
        losses /= runtime.world_size
    values = losses.cpu().tolist()
    rate = len(window) * cfg.batch_size * runtime.world_size / max(seconds, 1e-9)
    if runtime.is_main:
        with open(run / METRICS_NAME, "a", encoding="utf-8") as f:
            for (step, epoch, _, lr, ema), loss in zip(window, values, strict=True):
                row = {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "img_per_s": rate, "time": elapsed}
                if has_target(cfg):
                    row["ema"] = ema
                f.write(json.dumps(row) + "\n")
        if cfg.progress:
            step, epoch, _, lr, _ = window[-1]
            remaining = (cfg.steps - step) * cfg.batch_size * runtime.world_size / max(rate, 1e-9)
            echo(f"step {step}/{cfg.steps}  epoch {epoch}  loss {values[-1]:.4f}  lr {lr:.3e}  img/s {rate:.1f}  "
                 f"eta {time.strftime('%H:%M:%S', time.gmtime(remaining))}")
    return values[-1]
