"""DetCo's settings (a ``TrainConfig`` field, ``detco``): every number the method needs beyond the shared
fields. No torch. Sources: Xie et al., "DetCo: Unsupervised Contrastive Learning for Object Detection" (ICCV
2021) eq. 1-5 and Sec. 3; MoCo v2 (Chen et al. 2020) and OpenSelfSup's ``configs/selfsup/moco/r50_v2.py`` for
the augmentations, queue, momentum and temperature DetCo inherits.

DetCo's jigsaw crop (255 = 255S/224) and patch (64 = 2S/7) scale with ``image_size`` unless set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _view_defaults() -> dict[str, Any]:
    """MoCo v2's augmentations (DetCo's global views and patches), in ``config.ViewConfig`` field names."""
    return {"blur_p": 0.5, "solarize_p": 0.0, "crop_scale": (0.2, 1.0), "saturation": 0.4}


@dataclass
class DetCoConfig:
    """DetCo: MoCo v2 with four levels (Res2..Res5), global and jigsaw-local views.

    ``view``: MoCo v2 augmentations as ``config.ViewConfig`` fields (crop area [0.2, 1], jitter p 0.8 (0.4, 0.4,
    0.4, 0.1), grayscale p 0.2, blur p 0.5, flip), used for the two global views, for the two jigsaw crops
    (resized to ``jigsaw_size``, cut into ``grid`` x ``grid`` cells, a random ``patch_size`` crop per cell) and
    for each patch's colour, drawn on its own. Heads per level: global MLP (C → C → ``dim``) and local MLP over
    the 9 concatenated patch features (9C → C → ``dim``). Loss: ``Σ level_weights[i] (L_gg + L_ll + L_gl)``,
    InfoNCE at ``temperature`` against per-level global and local queues of ``queue_size`` keys; key encoder
    momentum ``momentum``; ``shuffle_bn``: MoCo's batch shuffle for the key encoder across ranks.
    """

    level_weights: tuple[float, float, float, float] = (0.1, 0.4, 0.7, 1.0)
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    dim: int = 128
    grid: int = 3
    jigsaw_size: int | None = None
    patch_size: int | None = None
    shuffle_bn: bool = True
    view: dict[str, Any] = field(default_factory=_view_defaults)

    def sizes(self, image_size: int) -> tuple[int, int]:
        """(jigsaw crop side, patch side): (255, 64) at 224 px."""
        jigsaw = self.jigsaw_size or round(image_size * 255 / 224)
        return jigsaw, self.patch_size or round(image_size * 2 / 7)

    def validate(self, image_size: int) -> None:
        if len(self.level_weights) != 4:
            raise ValueError(f"detco.level_weights must hold 4 weights (Res2..Res5), got {self.level_weights}")
        if self.queue_size < 1 or self.dim < 1 or self.grid < 1:
            raise ValueError("detco: queue_size, dim and grid must be >= 1")
        if self.temperature <= 0 or not 0 <= self.momentum <= 1:
            raise ValueError("detco: temperature must be > 0 and momentum in [0, 1]")
        jigsaw, patch = self.sizes(image_size)
        if not 1 <= patch <= jigsaw // self.grid:
            raise ValueError(f"detco: patch_size {patch} must fit a cell of the {jigsaw} px jigsaw ({self.grid}²)")
