"""Checkpoints of a run folder and the backbone export.

A checkpoint is ``torch.save`` of a dict of plain data (state_dicts of tensors, numbers, strings); it is written
to a temporary file in the run folder, fsynced, renamed to ``checkpoint-{step:08d}.pt`` and the folder fsynced,
so a checkpoint under its final name is complete. Loading always uses ``torch.load(..., weights_only=True)``:
nothing is unpickled beyond tensors and plain containers. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision

CHECKPOINT_RE = re.compile(r"checkpoint-(\d{8})\.pt")
FORMAT = "regionshards-trainer"
VERSION = 1


def checkpoint_path(run: Path, step: int) -> Path:
    return Path(run) / f"checkpoint-{step:08d}.pt"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, path) of the run folder's checkpoints, oldest first."""
    run = Path(run)
    if not run.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run.iterdir() if (m := CHECKPOINT_RE.fullmatch(p.name))]
    return sorted(found)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary name beside ``path``, fsync, rename, fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def save_checkpoint(run: Path, step: int, state: Mapping[str, Any], keep: int) -> Path:
    """Write ``checkpoint-{step}.pt`` atomically, then delete all but the newest ``keep`` checkpoints."""
    payload = {"format": FORMAT, "version": VERSION, "step": step, **state}
    path = atomic_save(payload, checkpoint_path(run, step))
    for _, old in list_checkpoints(run)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raises ValueError if it is not one of ours."""
    data = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a regionshards trainer checkpoint")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {data.get('version')!r}, this trainer reads {VERSION}")
    return data


def latest_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint of a run folder, or None."""
    found = list_checkpoints(run)
    return found[-1][1] if found else None


def backbone_state(checkpoint: Mapping[str, Any], which: str = "online") -> dict[str, torch.Tensor]:
    """The trunk's state_dict (torchvision names, no ``fc``) of the online or target network of a checkpoint."""
    model = checkpoint["model"]
    prefix = f"{which}.backbone."
    state = {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"the checkpoint has no {which} network")
    return state


def export_backbone(run: Path, out: Path, which: str = "online", checkpoint: Path | None = None) -> dict[str, Any]:
    """Write the backbone as a torchvision ``resnet*`` state_dict that loads with ``strict=True``.

    The trunk's weights replace torchvision's; ``fc`` (the classifier, which pretraining does not train) keeps
    torchvision's default initialisation under seed 0. Returns ``{"path", "backbone", "step", "which"}``.

    Raises:
        FileNotFoundError: the run folder has no checkpoint.
        ValueError: the checkpoint lacks the network or does not fit the named torchvision model.
    """
    path = checkpoint or latest_checkpoint(run)
    if path is None:
        raise FileNotFoundError(f"{run}: no checkpoint-*.pt to export")
    data = load_checkpoint(path)
    name = data["config"]["backbone"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None)
    state = model.state_dict()
    trunk = backbone_state(data, which)
    unknown = sorted(set(trunk) - set(state))
    missing = sorted(k for k in state if not k.startswith("fc.") and k not in trunk)
    if unknown or missing:
        raise ValueError(f"checkpoint trunk does not match torchvision {name}: unknown {unknown[:5]}, "
                         f"missing {missing[:5]}")
    state.update(trunk)
    model.load_state_dict(state, strict=True)
    atomic_save(model.state_dict(), Path(out))
    return {"path": str(out), "backbone": name, "step": int(data["step"]), "which": which}
