"""The export formats (``regionshards export --format``), as one table: what each file loads into and what the
target has (no torch here; the mappings live in ``exports``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    """One ``export --format`` value.

    Attributes:
        name: the format (named after what it loads into).
        loads_into: how to build the target, for messages and ``--help``.
        backbone: the ResNet the target has (None: the run's own depth).
        fpn_norm: whether the target's FPN has norm layers (None: detectron2 builds either, ``MODEL.FPN.NORM``).
        head: whether the target has SoCo's 4conv1fc box head (``--head`` allowed).
        detector: False for the classification backbone.
    """

    name: str
    loads_into: str
    backbone: str | None = None
    fpn_norm: bool | None = None
    head: bool = False
    detector: bool = True


FORMATS: Mapping[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("torchvision", "torchvision.models.<backbone>(weights=None), strict=True", detector=False),
    ExportFormat("maskrcnn_resnet50_fpn", "torchvision maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)",
                 backbone="resnet50", fpn_norm=False),
    ExportFormat("maskrcnn_resnet50_fpn_v2",
                 "torchvision maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)",
                 backbone="resnet50", fpn_norm=True, head=True),
    ExportFormat("detectron2", "detectron2 GeneralizedRCNN, ResNet-FPN, FastRCNNConvFCHead 4conv1fc (.pth)",
                 head=True),
)}
EXPORT_FORMATS = FORMATS
