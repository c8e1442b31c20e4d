"""Training on regionshards datasets: DetCon-B / DetCon-S, SoCo / SoCo*, DetCo with DDP (spec: ``docs/trainer.md``).

Modules, one role each: ``config`` (every default of the method notes; no torch), ``data`` (sharded streaming
with equal batches per rank, resumable), ``samples`` / ``transforms`` / ``masks`` (the joint views,
numpy/cv2), ``models`` (ResNet trunk, heads, mask pooling), ``losses`` (DetCon-B/S, cross-rank gather),
``detcon`` (the method: networks, EMA target, loss of a batch), ``lars`` (optimiser and schedule),
``checkpoint`` (atomic checkpoints, export), ``runtime`` (device/backend/autocast selection), ``loop`` (the
training loop); SoCo / DetCo add ``method_config`` (their settings; no torch), ``boxes`` / ``views`` /
``soco_views`` / ``detco_views`` (their views and boxes, numpy/cv2), ``pyramid`` (C2–C5, FPN + RoI network),
``soco`` / ``detco`` (the methods and losses), ``methods`` (the loop's dispatch) and ``detector_export``
(Mask R-CNN key names). torch is imported only under this package (the ``train`` extra), and only when a name below
that needs it is first used, so ``regionshards.trainer.config`` works without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "ViewConfig": "config",
    "EpochPlan": "data", "ShardStream": "data", "make_loader": "data",
    "DetCon": "detcon", "cosine_momentum": "detcon",
    "LARS": "lars", "learning_rate": "lars",
    "RunError": "loop", "train": "loop",
    "detcon_b_loss": "losses", "detcon_s_loss": "losses", "gather_with_grad": "losses",
    "Runtime": "runtime", "select_runtime": "runtime",
    "export_backbone": "checkpoint",
    "SoCoConfig": "method_config", "DetCoConfig": "method_config",
    "SoCo": "soco", "box_byol_loss": "soco", "DetCo": "detco", "detco_loss": "detco",
    "export_detector": "detector_export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
