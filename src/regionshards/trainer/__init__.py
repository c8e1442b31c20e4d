"""Training on regionshards datasets: DetCon-B / DetCon-S, SoCo / SoCo*, DetCo with DDP (spec: ``docs/trainer.md``).

What every method shares lives here, one role per module: ``config`` (the run's settings; no torch), ``data``
(sharded streaming with equal batches per rank, resumable), ``decode`` / ``transforms`` (reading a sample,
numpy/cv2 view kernels), ``networks`` (ResNet trunk, MLP head, EMA), ``collectives`` (cross-rank gathers),
``lars`` (optimiser and schedule), ``runtime`` (device/backend/autocast, batches onto the device),
``checkpoint`` (atomic checkpoints, backbone export), ``exports`` (detector and detectron2 key names), ``loop`` (the
training loop) and ``preview`` (DetCon's views for ``regionshards show``). ``methods`` is the method table plus,
per method family, its networks + loss + target (``<family>_model``) and its views → batch
(``<family>_views``). torch is imported only under this package (the ``train`` extra), and only when a name
below that needs it is first used, so ``regionshards.trainer.config`` works without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "ViewConfig": "config",
    "METHODS": "methods", "MethodSpec": "methods", "method_spec": "methods",
    "EpochPlan": "data", "ShardStream": "data", "make_loader": "data",
    "cosine_momentum": "networks", "gather_with_grad": "collectives",
    "LARS": "lars", "learning_rate": "lars",
    "RunError": "loop", "train": "loop",
    "Runtime": "runtime", "select_runtime": "runtime",
    "export_backbone": "checkpoint", "export_weights": "exports",
    "DetCon": "methods.detcon_model", "detcon_b_loss": "methods.detcon_loss", "detcon_s_loss": "methods.detcon_loss",
    "SoCoConfig": "methods.soco_config", "SoCo": "methods.soco_model", "box_byol_loss": "methods.soco_model",
    "DetCoConfig": "methods.detco_config", "DetCo": "methods.detco_model", "detco_loss": "methods.detco_model",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
