"""Checks and defaults decided before a run starts (no torch): loader workers per rank, the largest batch a
dataset allows, and the schedule rule of an extended run.

Every check raises ``PreflightError`` with a one-line message that names the input and says what would work;
the command line prints it once (rank 0) as ``Error: …`` and exits with status 2 on every rank.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: most loader workers a rank gets by default (more rarely pays: the batch is ready before the step ends)
MAX_DEFAULT_WORKERS = 8


class PreflightError(ValueError):
    """A run that cannot start as asked (the message names the input and what would work)."""


def cores_available() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(env: Mapping[str, str] | None = None, cores: int | None = None) -> int:
    """Loader workers per rank the cores allow: the cores of this machine shared by the ranks on it
    (``LOCAL_WORLD_SIZE``, set by torchrun), less one for the training process itself, at most
    ``MAX_DEFAULT_WORKERS``; 0 (load in the training process) when a rank has a single core."""
    env = os.environ if env is None else env
    ranks_here = max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    per_rank = (cores or cores_available()) // ranks_here
    return max(0, min(MAX_DEFAULT_WORKERS, per_rank - 1))


def manifest_source(data: str | Path) -> str | Path:
    """The manifest of a dataset given as a folder, its ``manifest.json``, or an object-store URL of either."""
    from ..shards import MANIFEST_NAME

    text = str(data)
    if "://" in text and not text.startswith("file:"):  # an object-store dataset (s3://bucket/out)
        return text if text.endswith(".json") else f"{text.rstrip('/')}/{MANIFEST_NAME}"
    path = Path(data)
    return path / MANIFEST_NAME if path.is_dir() else path


def dataset_samples(data: str | Path) -> int:
    """Samples a built dataset holds, from its manifest's per-shard counts.

    Raises:
        PreflightError: not a finished regionshards dataset.
    """
    from ..shards import ManifestError, read_manifest

    try:
        manifest = read_manifest(manifest_source(data))
    except (FileNotFoundError, ManifestError) as exc:
        raise PreflightError(f"{data}: not a finished regionshards dataset ({exc})") from exc
    return sum(int(s["samples"]) for s in manifest["shards"])


def largest_batch(samples: int, world_size: int) -> int:
    """The largest per-rank batch that gives every rank at least one batch per epoch: ``samples // world_size``
    (each rank takes ``samples // world_size`` positions and makes whole batches of them)."""
    return samples // max(1, world_size)


def check_batch(data: str | Path, batch_size: int, world_size: int) -> None:
    """Refuse a per-rank batch the dataset cannot fill on every rank, naming the largest that works."""
    n = dataset_samples(data)
    most = largest_batch(n, world_size)
    if batch_size > most:
        ranks = f"{world_size} ranks" if world_size > 1 else "1 rank"
        fix = f"--batch-size {most} or less" if most >= 1 else "a dataset with more samples"
        raise PreflightError(f"{data} holds {n} samples: a batch of {batch_size} per rank on {ranks} needs "
                             f"{batch_size * world_size}; use {fix}")


def extension(saved: Mapping[str, Any], steps: int, done: int) -> dict[str, Any]:
    """The schedule of a finished (or stopped) run extended to ``steps`` (``--resume --extend``).

    Rule: from the resumed step on, the run follows the schedules of a run of ``steps`` steps — the learning
    rate's cosine and the EMA momentum's are recomputed for the new total, so the learning rate rises from
    where the old schedule ended to the new schedule's value at that step and then decays to 0 at ``steps`` —
    and the warmup stays the one already done (``warmup_steps`` of the saved run). Returns the config fields
    to override (``steps``, ``warmup_steps``).

    Raises:
        PreflightError: ``steps`` is not beyond the steps already done.
    """
    old = int(saved.get("steps", 0))
    if steps <= done:
        raise PreflightError(f"--extend: --steps {steps} is not beyond the {done} steps this run has done "
                             f"(its schedule ends at {old}); give a larger --steps")
    warmup = saved.get("run", {}).get("warmup_steps")
    return {"steps": steps, "warmup_steps": int(warmup) if warmup is not None else saved.get("warmup_steps")}
