"""SoCo's pretrained detector parts under torchvision's detector key names.

A SoCo run trains backbone + FPN + box head (``methods.soco_model.SoCoNet``: ``backbone``, ``fpn``, ``head``).
The export is
a plain state_dict keyed like torchvision's ``maskrcnn_resnet50_fpn`` (also ``fasterrcnn_resnet50_fpn``):

* ``backbone.<name>`` → ``backbone.body.<name>`` (the ResNet body: ``conv1``, ``bn1``, ``layer1`` … ``layer4``);
* ``fpn.<name>`` → ``backbone.fpn.<name>`` (``inner_blocks.i.0``, ``layer_blocks.i.0`` and, with SoCo's
  BatchNorm FPN (``soco.fpn_norm``, the default), ``inner_blocks.i.1``, ``layer_blocks.i.1`` — the keys of
  ``maskrcnn_resnet50_fpn_v2``, whose FPN has BatchNorm; a run without it matches ``maskrcnn_resnet50_fpn``; the
  detector's extra max-pool level has no weights);
* with ``head=True``, ``head.<name>`` → ``roi_heads.box_head.<name>``: SoCo's 4conv1fc head is torchvision's
  ``FastRCNNConvFCHead`` (the box head of ``maskrcnn_resnet50_fpn_v2`` / ``fasterrcnn_resnet50_fpn_v2``), so
  these keys and shapes are those of the v2 detectors.

Load with ``detector.load_state_dict(torch.load(path, weights_only=True), strict=False)``: the RPN, the box
predictor and the mask branch stay at their initialisation. Detectors built with pretrained-backbone defaults
use ``FrozenBatchNorm2d``, which has no ``num_batches_tracked``; those entries are then reported as unexpected
and can be ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import atomic_save, latest_checkpoint, load_checkpoint
from .methods import METHODS

_RENAME = {"backbone": "backbone.body.", "fpn": "backbone.fpn.", "head": "roi_heads.box_head."}


def detector_state(model: Mapping[str, torch.Tensor], which: str = "online", head: bool = False
                   ) -> dict[str, torch.Tensor]:
    """The detector-named state_dict of one network (``online``/``target``) of a SoCo model state_dict.

    Raises:
        ValueError: the state holds no such SoCo network.
    """
    prefix = f"{which}."
    out = {}
    for key, value in model.items():
        if not key.startswith(prefix):
            continue
        part, _, rest = key[len(prefix):].partition(".")
        if part in ("backbone", "fpn") or (head and part == "head"):
            out[_RENAME[part] + rest] = value
    if not any(k.startswith("backbone.fpn.") for k in out):
        raise ValueError(f"the checkpoint has no SoCo {which} network (backbone + FPN)")
    return out


def export_detector(run: Path, out: Path, which: str = "online", checkpoint: Path | None = None,
                    head: bool = False) -> dict[str, Any]:
    """Write a SoCo run's backbone + FPN (+ box head) under ``maskrcnn_resnet50_fpn`` key names.

    Returns ``{"path", "backbone", "step", "which", "tensors", "head"}``.

    Raises:
        FileNotFoundError: the run folder has no checkpoint.
        ValueError: the run is not a SoCo run.
    """
    path = checkpoint or latest_checkpoint(run)
    if path is None:
        raise FileNotFoundError(f"{run}: no checkpoint-*.pt to export")
    data = load_checkpoint(path)
    method = data["config"].get("method")
    if method not in METHODS or "maskrcnn" not in METHODS[method].exports:
        able = [m.name for m in METHODS.values() if "maskrcnn" in m.exports]
        raise ValueError(f"--format maskrcnn needs a run with an FPN ({', '.join(able)}), this is a {method} run")
    state = detector_state(data["model"], which, head)
    atomic_save(state, Path(out))
    return {"path": str(out), "backbone": data["config"]["backbone"], "step": int(data["step"]), "which": which,
            "tensors": len(state), "head": head}
