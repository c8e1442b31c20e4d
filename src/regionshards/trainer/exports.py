"""Pretrained weights named for what they load into: one table of export formats and their key mappings.

A run's online (or target) network holds up to three detector parts, under torchvision's module names:
the ResNet ``backbone`` (``conv1``, ``bn1``, ``layer1`` … ``layer4``; every method), the ``fpn``
(``torchvision.ops.FeaturePyramidNetwork``: ``inner_blocks.i`` lateral and ``layer_blocks.i`` output convs,
``.0`` the conv and, with SoCo's BatchNorm FPN, ``.1`` its BatchNorm) and the box ``head`` (torchvision's
``FastRCNNConvFCHead``: ``i.0`` conv + ``i.1`` BatchNorm for i = 0..3, ``5`` the fc). The formats:

* ``torchvision``: ``torchvision.models.<backbone>(weights=None)``, ``strict=True`` (``checkpoint.export_backbone``).
* ``maskrcnn_resnet50_fpn`` (torchvision's v1 Mask R-CNN): ``backbone.body.*`` and, for a run whose FPN has no
  norm layers, ``backbone.fpn.*``. v1's box head is a two-fc ``TwoMLPHead``, so ``--head`` is refused.
* ``maskrcnn_resnet50_fpn_v2``: ``backbone.body.*``, ``backbone.fpn.*`` for a run whose FPN has BatchNorm (v2's
  FPN convs have no bias and a BatchNorm each) and, with ``head``, ``roi_heads.box_head.*`` (v2's 4conv1fc head).
* ``detectron2``: a ``GeneralizedRCNN`` with ``build_resnet_fpn_backbone`` and ``FastRCNNConvFCHead``, the key
  names SoCo's converter (hologerry/SoCo ``converter_detectron2/convert_detectron2_Head.py``) produces, written
  out in full: ``backbone.bottom_up.stem.conv1`` (+ ``.norm``), ``backbone.bottom_up.res{2..5}.{j}.conv{k}``
  (+ ``.norm``), ``….shortcut`` (+ ``.norm``); ``backbone.fpn_lateral{2..5}`` / ``backbone.fpn_output{2..5}``
  (+ ``.norm`` with SoCo's BatchNorm FPN, else the conv's ``.bias``); ``roi_heads.box_head.conv{1..4}`` (+ ``.norm``)
  and ``roi_heads.box_head.fc1``. The file is ``torch.save`` of ``{"model": {name: tensor}, "__author__":
  "regionshards", "matching_heuristics": True, "config": {...}}``: detectron2's ``DetectionCheckpointer`` reads
  a non-``.pkl`` file with ``torch.load`` and keeps its ``model`` (so it needs no pickle), and
  ``torch.load(path, weights_only=True)`` reads it too. ``config`` lists the detectron2 settings the weights
  assume (SoCo's ``detectron2_configs/SoCo_FPN_100ep.yaml``: torchvision's stride in the 3x3 conv, RGB input,
  torchvision's pixel mean/std, SyncBN in backbone, FPN and head).

The detector formats named after a ResNet-50 detector need a ResNet-50 run; detectron2's ResNet takes any depth
(``MODEL.RESNETS.DEPTH``; 18/34 with ``RES2_OUT_CHANNELS`` 64). A run without an FPN (DetCon, DetCo) exports
its backbone alone to the detector formats (the FPN and heads keep the detector's initialisation). Every
mismatch between the run and the target is a ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import atomic_save, export_backbone, latest_checkpoint, load_checkpoint
from .export_formats import FORMATS, ExportFormat

# SoCo's detectron2 configs (detectron2_configs/R_50_FPN_1x.yaml + SoCo_FPN_100ep.yaml): the settings under
# which torchvision-layout weights mean what they meant in pretraining
_D2_CONFIG = {"MODEL.RESNETS.STRIDE_IN_1X1": False, "INPUT.FORMAT": "RGB",
              "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53], "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
              "MODEL.BACKBONE.FREEZE_AT": 0, "MODEL.RESNETS.NORM": "SyncBN"}
_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}


def run_parts(model: Mapping[str, torch.Tensor], which: str = "online") -> dict[str, dict[str, torch.Tensor]]:
    """``{"backbone": …, "fpn": …, "head": …}`` state_dicts (torchvision module names) of one network of a
    checkpoint's model state; parts the method lacks are empty.

    Raises:
        ValueError: the state holds no ``which`` network.
    """
    prefix = f"{which}."
    parts: dict[str, dict[str, torch.Tensor]] = {"backbone": {}, "fpn": {}, "head": {}}
    for key, value in model.items():
        if key.startswith(prefix):
            part, _, rest = key[len(prefix):].partition(".")
            if part in parts:
                parts[part][rest] = value
    if not parts["backbone"]:
        raise ValueError(f"the checkpoint has no {which} network")
    return parts


def fpn_has_norm(fpn: Mapping[str, torch.Tensor]) -> bool:
    """Whether a torchvision FPN state_dict has norm layers (``inner_blocks.i.1.*``)."""
    return any(re.fullmatch(r"(inner|layer)_blocks\.\d+\.1\..+", k) for k in fpn)


def torchvision_detector_state(parts: Mapping[str, Mapping[str, torch.Tensor]], head: bool
                               ) -> dict[str, torch.Tensor]:
    """torchvision Mask R-CNN / Faster R-CNN keys: ``backbone.body.*``, ``backbone.fpn.*``, ``roi_heads.box_head.*``."""
    out = {f"backbone.body.{k}": v for k, v in parts["backbone"].items()}
    out.update({f"backbone.fpn.{k}": v for k, v in parts["fpn"].items()})
    if head:
        out.update({f"roi_heads.box_head.{k}": v for k, v in parts["head"].items()})
    return out


_D2_BACKBONE = (
    (re.compile(r"conv1\.(.+)"), r"stem.conv1.\1"),
    (re.compile(r"bn1\.(.+)"), r"stem.conv1.norm.\1"),
    (re.compile(r"layer(\d)\.(\d+)\.conv(\d)\.(.+)"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.{m[4]}"),
    (re.compile(r"layer(\d)\.(\d+)\.bn(\d)\.(.+)"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (re.compile(r"layer(\d)\.(\d+)\.downsample\.0\.(.+)"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.{m[3]}"),
    (re.compile(r"layer(\d)\.(\d+)\.downsample\.1\.(.+)"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
)
_D2_FPN = re.compile(r"(inner|layer)_blocks\.(\d+)\.([01])\.(.+)")
_D2_HEAD = re.compile(r"(\d+)\.(?:([01])\.)?(.+)")


def _rename(key: str, rules: tuple) -> str:
    for pattern, repl in rules:
        m = pattern.fullmatch(key)
        if m:
            return m.expand(repl) if isinstance(repl, str) else repl(m)
    raise ValueError(f"no detectron2 name for {key!r}")


def d2_fpn_name(key: str) -> str:
    """torchvision FPN key → detectron2's: ``inner_blocks.i.0`` → ``fpn_lateral{i+2}``, ``.1`` → ``….norm``;
    ``layer_blocks`` → ``fpn_output``."""
    m = _D2_FPN.fullmatch(key)
    if not m:
        raise ValueError(f"no detectron2 name for FPN key {key!r}")
    kind = "lateral" if m[1] == "inner" else "output"
    return f"fpn_{kind}{int(m[2]) + 2}{'.norm' if m[3] == '1' else ''}.{m[4]}"


def d2_head_name(key: str) -> str:
    """torchvision ``FastRCNNConvFCHead`` key → detectron2's: ``i.0`` → ``conv{i+1}``, ``i.1`` → ``conv{i+1}.norm``
    (i < 4), ``5`` (the fc after the flatten) → ``fc1``."""
    m = _D2_HEAD.fullmatch(key)
    if not m:
        raise ValueError(f"no detectron2 name for head key {key!r}")
    index = int(m[1])
    if m[2] is None:  # a Linear: 5, 7, … after the Flatten at 4
        return f"fc{(index - 3) // 2}.{m[3]}"
    return f"conv{index + 1}{'.norm' if m[2] == '1' else ''}.{m[3]}"


def detectron2_state(parts: Mapping[str, Mapping[str, torch.Tensor]], head: bool) -> dict[str, torch.Tensor]:
    """detectron2 ``GeneralizedRCNN`` keys of the run's parts (module docstring)."""
    out = {f"backbone.bottom_up.{_rename(k, _D2_BACKBONE)}": v for k, v in parts["backbone"].items()}
    out.update({f"backbone.{d2_fpn_name(k)}": v for k, v in parts["fpn"].items()})
    if head:
        out.update({f"roi_heads.box_head.{d2_head_name(k)}": v for k, v in parts["head"].items()})
    return out


def check_target(fmt: ExportFormat, backbone: str, parts: Mapping[str, Mapping[str, Any]], head: bool,
                 method: str) -> None:
    """Refuse (ValueError, one line) a run that does not fit the format's target."""
    if fmt.backbone and backbone != fmt.backbone:
        raise ValueError(f"{fmt.name} has a {fmt.backbone} backbone, this run trained a {backbone} "
                         f"(use --format torchvision or detectron2 for a {backbone})")
    if head and not fmt.head:
        raise ValueError(f"{fmt.name} has no 4conv1fc box head for --head "
                         f"({', '.join(f.name for f in FORMATS.values() if f.head)} have one)")
    if head and not parts["head"]:
        raise ValueError(f"--head: this {method} run has no box head (SoCo runs have one)")
    if parts["fpn"] and fmt.fpn_norm is not None and fpn_has_norm(parts["fpn"]) != fmt.fpn_norm:
        other = [f.name for f in FORMATS.values()
                 if f.detector and f.fpn_norm in (None, fpn_has_norm(parts["fpn"]))]
        raise ValueError(f"{fmt.name}'s FPN has {'BatchNorm' if fmt.fpn_norm else 'no norm layers'}, this run's "
                         f"FPN {'has none' if fmt.fpn_norm else 'has BatchNorm'} (use {' or '.join(other)})")


def verify_torchvision(fmt: str, state: Mapping[str, torch.Tensor]) -> None:
    """Check every exported tensor against the torchvision detector ``fmt`` itself (name and shape).

    Raises:
        ValueError: a tensor the detector does not have, or has with another shape.
    """
    from torchvision.models import detection

    target = getattr(detection, fmt)(weights=None, weights_backbone=None).state_dict()
    wrong = [k for k, v in state.items() if k not in target or target[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{len(wrong)} tensors do not fit torchvision {fmt}, e.g. {wrong[0]}")


def detectron2_config(backbone: str, parts: Mapping[str, Mapping[str, Any]], head: bool) -> dict[str, Any]:
    """The detectron2 config keys the exported weights assume (a plain dict, stored beside the weights)."""
    config: dict[str, Any] = {**_D2_CONFIG, "MODEL.RESNETS.DEPTH": _DEPTHS[backbone]}
    if _DEPTHS[backbone] < 50:
        config["MODEL.RESNETS.RES2_OUT_CHANNELS"] = 64
    if parts["fpn"]:
        config["MODEL.FPN.NORM"] = "SyncBN" if fpn_has_norm(parts["fpn"]) else ""
    if head:
        config.update({"MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead", "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
                       "MODEL.ROI_BOX_HEAD.NUM_FC": 1, "MODEL.ROI_BOX_HEAD.NORM": "SyncBN"})
    return config


def export_weights(run: Path, out: Path, fmt: str = "torchvision", which: str = "online",
                   checkpoint: Path | None = None, head: bool = False) -> dict[str, Any]:
    """Write a run's weights in format ``fmt`` (``FORMATS``).

    Returns ``{"path", "format", "loads_into", "backbone", "step", "which", "tensors", "parts"}``; ``parts``
    lists what was written (``backbone``, ``fpn``, ``head``).

    Raises:
        FileNotFoundError: the run folder has no checkpoint.
        ValueError: an unknown format, or a run that does not fit the format's target (one-line message).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {tuple(FORMATS)}, got {fmt!r}")
    spec = FORMATS[fmt]
    if head and not spec.detector:
        raise ValueError(f"--head needs a detector format ({', '.join(f.name for f in FORMATS.values() if f.head)})")
    if fmt == "detectron2" and Path(out).suffix == ".pkl":
        raise ValueError(f"{out}: detectron2 unpickles .pkl files; name the file .pth (read with torch.load)")
    if not spec.detector:
        info = export_backbone(run, out, which=which, checkpoint=checkpoint)
        return {**info, "format": fmt, "loads_into": f"torchvision {info['backbone']}", "parts": ["backbone"],
                "tensors": None}
    path = checkpoint or latest_checkpoint(run)
    if path is None:
        raise FileNotFoundError(f"{run}: no checkpoint-*.pt to export")
    data = load_checkpoint(path)
    backbone, method = data["config"]["backbone"], data["config"].get("method", "?")
    parts = run_parts(data["model"], which)
    check_target(spec, backbone, parts, head, method)
    written = ["backbone"] + (["fpn"] if parts["fpn"] else []) + (["head"] if head else [])
    if fmt == "detectron2":
        state = detectron2_state(parts, head)
        payload: Any = {"model": {k: v.contiguous() for k, v in state.items()}, "__author__": "regionshards",
                        "matching_heuristics": True, "config": detectron2_config(backbone, parts, head)}
        loads_into = f"detectron2 R-{_DEPTHS[backbone]}-FPN"
    else:
        payload = state = torchvision_detector_state(parts, head)
        verify_torchvision(fmt, state)
        loads_into = fmt
    atomic_save(payload, Path(out))
    return {"path": str(out), "format": fmt, "loads_into": loads_into, "backbone": backbone,
            "step": int(data["step"]), "which": which, "tensors": len(state), "parts": written}
