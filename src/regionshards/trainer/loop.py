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
process's loop). What the method is — its networks, loss, batches, optimiser, BatchNorm regime and dataset
needs — comes from its row of the method table (``methods.METHODS``); nothing here names a method.
"""

from __future__ import annotations

import json
import math
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

from ..shards import ShardError
from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig, adopt_legacy, config_differences
from .data import ShardStream, loader_batches, make_loader, start_loader_server
from .lars import LARS, learning_rate, param_groups, peak_learning_rate
from .methods import MethodSpec, method_spec
from .preflight import check_batch, extension, manifest_source
from .runtime import (
    Runtime,
    barrier,
    configure_cuda,
    env_ranks,
    init_distributed,
    select_runtime,
    shutdown_distributed,
    to_device,
)
from .watch import dataset_classes, make_probe, tensorboard_writer, write_scalars

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"


class RunError(RuntimeError):
    """A run folder that cannot be started or resumed as asked (message says why)."""


class PeerStopped(RuntimeError):
    """Under torchrun (gloo), another rank ended mid-collective — it reports why (e.g. a damaged shard); this
    rank only stops."""


# what gloo raises in a collective when a peer process has exited (NCCL ranks are simply ended by torchrun)
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer")


def _run_info(cfg: TrainConfig, runtime: Runtime, stream: ShardStream) -> dict[str, Any]:
    global_batch = cfg.batch_size * runtime.world_size
    return {"world_size": runtime.world_size, "global_batch": global_batch,
            "peak_lr": peak_learning_rate(cfg.base_lr, global_batch, cfg.lr_batch_base),
            "warmup_steps": cfg.warmup_for(stream.batches_per_epoch), "batches_per_epoch": stream.batches_per_epoch,
            "samples_per_epoch": stream.samples_per_epoch, "device": runtime.device.type,
            "amp": str(runtime.amp_dtype).replace("torch.", "") if runtime.amp_dtype else None,
            "torch": torch.__version__}


def _check_run_folder(cfg: TrainConfig, runtime: Runtime, resume: bool, extend: bool = False
                      ) -> tuple[int, Path | None]:
    """Validate the run folder for a fresh start or a resume; returns the step to start from and its checkpoint.
    With ``extend``, ``cfg`` takes the extended schedule (``preflight.extension``) and may change ``steps``."""
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
    adopt_legacy(cfg, old)  # a run saved before a setting existed resumes as it was trained
    if extend:
        for name, value in extension(old, cfg.steps, found[-1][0] if found else 0).items():
            setattr(cfg, name, value)
    elif old.get("run", {}).get("extensions") and cfg.warmup_steps is None:
        cfg.warmup_steps = old.get("warmup_steps")  # an extended run keeps the warmup it had done
    diff = config_differences({k: v for k, v in old.items() if k != "run"}, cfg.to_dict())
    if extend:
        diff = [d for d in diff if d not in ("steps", "warmup_steps")]
    if old.get("run", {}).get("world_size") != runtime.world_size:
        diff.append("world_size")
    if diff:
        hint = "; pass --extend to continue it to more steps" if diff == ["steps"] else ""
        raise RunError(f"{run}: the config differs from the saved run in {', '.join(diff)}; resume with the same "
                       f"settings or start a new folder{hint}")
    return found[-1] if found else (0, None)


def _record_extension(path: Path, cfg: TrainConfig, info: dict[str, Any], start: int) -> None:
    """Rewrite ``config.json`` for the extended schedule, keeping the history in ``run.extensions``."""
    old = json.loads(path.read_text("utf-8"))
    history = old.get("run", {}).get("extensions", []) + [{"at_step": start, "from_steps": old["steps"],
                                                           "to_steps": cfg.steps}]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({**cfg.to_dict(), "run": {**info, "extensions": history}}, indent=2) + "\n", "utf-8")
    os.replace(tmp, path)


def _trim_metrics(path: Path, step: int) -> None:
    """Keep only the metrics lines of steps <= ``step`` (those after the resumed checkpoint are redone)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text("utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines), "utf-8")
    os.replace(tmp, path)


def make_method(cfg: TrainConfig) -> nn.Module:
    """The method module of ``cfg.method``: its family's ``Model(cfg)`` (imports only that family's code)."""
    return method_spec(cfg.method).module("model").Model(cfg)


def optimizer_groups(model: nn.Module, spec: MethodSpec, weight_decay: float) -> list[dict]:
    """LARS groups of the online network: ``lars`` excludes biases and norms from weight decay and the trust
    ratio (BYOL, DetCon, SoCo); ``sgd`` decays every parameter and uses no trust ratio (MoCo v2's SGD)."""
    if spec.optimizer == "sgd":
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay, "lars": False}]
    return param_groups(model, weight_decay)


def uses_sync_bn(cfg: TrainConfig, runtime: Runtime) -> bool:
    """Whether BatchNorm becomes SyncBatchNorm: several CUDA processes, ``cfg.sync_bn``, and a method whose
    table row allows it (DetCo keeps per-GPU BN, which MoCo's key-encoder batch shuffle relies on)."""
    return (runtime.distributed and runtime.device.type == "cuda" and cfg.sync_bn
            and method_spec(cfg.method).sync_bn)


def apply_norm_regime(method: nn.Module, cfg: TrainConfig, runtime: Runtime) -> nn.Module:
    """The method module with the runtime's BatchNorm regime (SyncBatchNorm where ``uses_sync_bn``; otherwise
    its BatchNorm layers unchanged, so each GPU normalises with its own batch)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(method) if uses_sync_bn(cfg, runtime) else method


def prepare_model(method: nn.Module, cfg: TrainConfig, runtime: Runtime) -> nn.Module:
    """The method module with the runtime's BatchNorm regime, on its device and memory format."""
    method = apply_norm_regime(method, cfg, runtime).to(runtime.device)
    if runtime.channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method


def build(cfg: TrainConfig, runtime: Runtime) -> tuple[nn.Module, LARS]:
    """The method module on the runtime's device and its LARS optimiser (same init for a given seed)."""
    torch.manual_seed(cfg.seed)
    method = prepare_model(make_method(cfg), cfg, runtime)
    groups = optimizer_groups(method.online, method_spec(cfg.method), cfg.weight_decay)
    optimizer = LARS(groups, lr=0.0, momentum=cfg.lars_momentum, eta=cfg.lars_eta)
    return method, optimizer


def check_dataset(cfg: TrainConfig) -> None:
    """Refuse, naming the dataset, a method whose inputs the build did not store (the table's ``needs``:
    ``masks`` — the ``mask_source`` partition — or ``proposals`` with the method's filter); images always."""
    from ..shards import ManifestError, read_manifest

    try:
        built = read_manifest(manifest_source(cfg.data))["config"]
    except (FileNotFoundError, ManifestError) as exc:
        raise RunError(f"{cfg.data}: not a finished regionshards dataset ({exc})") from exc
    spec = method_spec(cfg.method)
    if "masks" in spec.needs:
        if cfg.mask_source == "segments" and (built.get("segments") or {}).get("method") in (None, "none"):
            raise RunError(f"{cfg.data} was built with --segments none: {cfg.method} needs segments")
    if "proposals" in spec.needs:
        if (built.get("proposals") or {}).get("method") in (None, "none"):
            raise RunError(f"{cfg.data} was built with --proposals none: {cfg.method} needs proposals")
        wanted = getattr(cfg, spec.settings or "").proposal_filter
        if wanted not in built.get("filters", []):
            raise RunError(f"{cfg.data} records the filters {built.get('filters')}, not {wanted!r} "
                           "(rebuild with --filter, or pass --proposal-filter)")


def resolve_steps(cfg: TrainConfig, runtime: Runtime) -> None:
    """``epochs`` → ``steps`` (ceil(epochs x batches per epoch) for this dataset, world size and batch size)."""
    if cfg.epochs is None or cfg.steps:
        return
    per_epoch = ShardStream(cfg.data, cfg, rank=runtime.rank, world_size=runtime.world_size).batches_per_epoch
    cfg.steps = max(1, math.ceil(cfg.epochs * per_epoch))
    cfg.validate()


def train(cfg: TrainConfig, resume: bool = False, echo: Callable[[str], None] | None = None,
          extend: bool = False) -> dict[str, Any]:
    """Run (or resume) training as configured; returns ``{"step", "loss", "checkpoint"}`` of the last step.

    Launch under ``torchrun --nproc-per-node N`` for N processes (NCCL on CUDA, gloo on CPU).

    Raises:
        RunError: the run folder holds another run, or differs from the one being resumed.
        preflight.PreflightError: a batch the dataset cannot fill on every rank; ``extend`` to fewer steps.
        shards.ShardError: a damaged shard (from the stream, loader workers included).
        PeerStopped: under torchrun, another rank ended (and reports why).
    """
    cfg.validate()
    check_dataset(cfg)
    check_batch(cfg.data, cfg.batch_size, env_ranks()[2])
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    runtime = select_runtime(torch.cuda.is_available(), cfg.device)
    resolve_steps(cfg, runtime)
    init_distributed(runtime)
    try:
        result = _train(cfg, runtime, resume, echo, extend)
    except ShardError:
        # keep the process group until this rank has reported the shard and exits: torn down now, the peers'
        # collectives would fail first and torchrun could end this rank before it prints
        raise
    except BaseException as exc:
        shutdown_distributed(wait=False)  # the other ranks may never reach a barrier
        if runtime.distributed and isinstance(exc, RuntimeError) and any(s in str(exc) for s in _PEER_GONE):
            raise PeerStopped(f"rank {runtime.rank}: another rank stopped the run") from exc
        raise
    shutdown_distributed()
    return result


def _train(cfg: TrainConfig, runtime: Runtime, resume: bool, echo: Callable[[str], None],
           extend: bool = False) -> dict[str, Any]:
    configure_cuda(runtime)
    run = Path(cfg.out)
    start, checkpoint = _check_run_folder(cfg, runtime, resume, extend)
    barrier(runtime)
    if cfg.workers:
        start_loader_server(method_spec(cfg.method).family)  # its imports overlap the model's build
    method, optimizer = build(cfg, runtime)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, map_location=runtime.device)
        if state["step"] != start:
            raise RunError(f"{checkpoint}: holds step {state['step']}, its name says {start}")
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    probe = make_probe(method, dataset_classes(cfg.data), cfg, runtime.device)
    if probe is not None and checkpoint is not None and "probe" in state:
        probe.load_state_dict(state["probe"])  # (a checkpoint from before the probe: it starts afresh)
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
        elif extend:
            _record_extension(run / CONFIG_NAME, cfg, info, start)
        _trim_metrics(run / METRICS_NAME, start)
        echo(f"{cfg.method} {cfg.backbone} on {runtime.world_size} x {runtime.device.type}: global batch "
             f"{info['global_batch']}, peak lr {info['peak_lr']:.4g}, {info['batches_per_epoch']} steps/epoch, "
             f"{'resuming at step ' + str(start) if start else 'starting'} → {cfg.steps}")
    barrier(runtime)
    loader = make_loader(stream, cfg.workers, pin_memory=runtime.device.type == "cuda")
    writer = tensorboard_writer(run) if runtime.is_main else None
    end = cfg.steps if cfg.stop_at is None else max(start, min(cfg.steps, cfg.stop_at))
    peak, warmup = info["peak_lr"], info["warmup_steps"]
    window: list[tuple[int, int, torch.Tensor, float, float]] = []
    t0 = t_window = time.perf_counter()
    last: dict[str, Any] = {"step": start, "loss": None, "checkpoint": None}
    method.train()
    batches = loader_batches(loader)
    try:
        for step in range(start, end):
            batch = next(batches)
            if batch["step"] != step:
                raise RuntimeError(f"data stream out of step: got batch {batch['step']} for step {step}")
            lr = learning_rate(step, cfg.steps, peak, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = method.loss(to_device(batch, runtime, cfg.mean, cfg.std), online=online,
                               autocast=runtime.autocast)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if probe is not None:
                probe.step(batch["label"], lr, runtime.world_size)
            ema = method.update_target(step, cfg.steps)
            window.append((step + 1, int(batch["epoch"]), loss.detach(), lr, ema))
            done = step + 1
            checkpoint_due = done % cfg.checkpoint_every == 0 or done == end
            if done % cfg.log_every == 0 or checkpoint_due:
                now = time.perf_counter()
                last["loss"] = _flush(window, now - t_window, now - t0, cfg, runtime, run, echo, probe, writer)
                window, t_window = [], now
            if checkpoint_due:
                if runtime.is_main:
                    state = {"model": method.state_dict(), "optimizer": optimizer.state_dict(),
                             "config": cfg.to_dict(), "world_size": runtime.world_size}
                    if probe is not None:
                        state["probe"] = probe.state_dict()
                    last["checkpoint"] = str(save_checkpoint(run, done, state, cfg.keep_checkpoints))
                barrier(runtime)
                t_window = time.perf_counter()  # saving is not training time
            last["step"] = done
    finally:
        del batches
        if writer is not None:
            writer.close()
    return last


def _flush(window: list, seconds: float, elapsed: float, cfg: TrainConfig, runtime: Runtime, run: Path,
           echo: Callable[[str], None], probe: Any = None, writer: Any = None) -> float:
    """Write the window's metrics lines (rank 0) and the progress line; returns the last step's mean loss."""
    losses = torch.stack([w[2].float() for w in window])
    if runtime.distributed:
        dist.all_reduce(losses)
        losses /= runtime.world_size
    values = losses.cpu().tolist()
    rate = len(window) * cfg.batch_size * runtime.world_size / max(seconds, 1e-9)
    extras = probe.flush(runtime.world_size) if probe is not None else [{}] * len(window)
    if runtime.is_main:
        rows = []
        with open(run / METRICS_NAME, "a", encoding="utf-8") as f:
            for (step, epoch, _, lr, ema), loss, extra in zip(window, values, extras, strict=True):
                row = {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "img_per_s": rate, "time": elapsed}
                if method_spec(cfg.method).momentum_target:
                    row["ema"] = ema
                row.update(extra)
                rows.append(row)
                f.write(json.dumps(row) + "\n")
        if writer is not None:
            write_scalars(writer, rows)
        if cfg.progress:
            step, epoch, _, lr, _ = window[-1]
            remaining = (cfg.steps - step) * cfg.batch_size * runtime.world_size / max(rate, 1e-9)
            echo(f"step {step}/{cfg.steps}  epoch {epoch}  loss {values[-1]:.4f}  lr {lr:.3e}  img/s {rate:.1f}  "
                 f"eta {time.strftime('%H:%M:%S', time.gmtime(remaining))}")
    return values[-1]
