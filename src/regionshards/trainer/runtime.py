"""Where a training process runs: device, process group backend, autocast and memory format.

``select_runtime`` is a pure function of whether CUDA is present (so the CUDA choices are tested on CPU):
CUDA → ``cuda:LOCAL_RANK``, NCCL, bf16 autocast, channels_last, SyncBatchNorm when distributed; CPU → gloo,
float32, contiguous. ``init_distributed`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and starts the process group when ``WORLD_SIZE`` > 1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .transforms import normalize


@dataclass(frozen=True)
class Runtime:
    """One process's placement and numeric choices."""

    device: torch.device
    backend: str  # process-group backend: "nccl" or "gloo"
    amp_dtype: torch.dtype | None  # autocast dtype, None for float32
    channels_last: bool
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; a no-op context on CPU."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def env_ranks(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables (0, 0, 1 when absent)."""
    env = os.environ if env is None else env
    return int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1))


def select_runtime(cuda_available: bool, device: str = "auto", env: Mapping[str, str] | None = None) -> Runtime:
    """The runtime for this process: CUDA choices when CUDA is used (``device`` auto/cuda), CPU ones otherwise.

    Raises:
        ValueError: ``device="cuda"`` without CUDA, or an unknown device.
    """
    rank, local_rank, world = env_ranks(env)
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not cuda_available:
        raise ValueError("--device cuda but CUDA is not available")
    if cuda_available and device != "cpu":
        return Runtime(torch.device("cuda", local_rank), "nccl", torch.bfloat16, True, rank, local_rank, world)
    return Runtime(torch.device("cpu"), "gloo", None, False, rank, local_rank, world)


def init_distributed(runtime: Runtime, timeout_s: float = 600.0) -> None:
    """Start the default process group for a multi-process run (torchrun's ``env://`` rendezvous)."""
    if not runtime.distributed or dist.is_initialized():
        return
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
    dist.init_process_group(backend=runtime.backend, init_method="env://", rank=runtime.rank,
                            world_size=runtime.world_size, timeout=timedelta(seconds=timeout_s),
                            device_id=runtime.device if runtime.device.type == "cuda" else None)


def shutdown_distributed(wait: bool = True) -> None:
    """Destroy the default process group, after a barrier when ``wait`` (no rank tears down mid-collective)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.barrier()


def all_mean(value: float, runtime: Runtime) -> float:
    """Mean of a Python float over ranks (the value itself without a process group)."""
    if not (runtime.distributed and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t)
    return float(t.item()) / runtime.world_size


def configure_cuda(runtime: Runtime) -> None:
    """cuDNN autotuning for the fixed-shape training step (CUDA only)."""
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def to_device(batch: Mapping[str, Any], runtime: Runtime, mean: tuple[float, ...],
              std: tuple[float, ...]) -> dict[str, torch.Tensor]:
    """A loader batch on the runtime's device, as every method's ``loss`` takes it.

    uint8 tensors are image batches (..., 3, H, W) and come back normalised float32, each (3, H, W) image in the
    runtime's memory format (channels_last on CUDA, contiguous on CPU); every other tensor (grids, ids, boxes,
    levels) comes back as it is; non-tensors are left out.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        x = value.to(runtime.device, non_blocking=True)
        if value.dtype != torch.uint8:
            out[name] = x
        else:
            # every image batch in the runtime's memory format, stacks of images (DetCo's patches, (B, P, 3, H,
            # W)) too: the loader's permuted (channels_last-strided) layout would otherwise reach the convs, whose
            # weight gradients then take that layout and no longer match DDP's bucket views
            fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
            images = x.reshape(-1, *x.shape[-3:]).contiguous(memory_format=fmt)
            out[name] = normalize(images, mean, std).reshape(x.shape)
    return out
