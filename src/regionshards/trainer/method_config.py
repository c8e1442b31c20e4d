"""SoCo's and DetCo's settings (``../shared/docs/methods.md`` §3): every number there is a field here. No torch.

``TrainConfig`` holds one ``SoCoConfig`` (used by ``soco`` and ``soco-star``) and one ``DetCoConfig`` (used by
``detco``); the optimiser numbers the methods differ in (LARS base lr, weight decay, warmup) are resolved per
method from ``METHOD_DEFAULTS`` when the config leaves them unset.

View sizes that the notes give at 224 px scale with ``image_size`` unless set: SoCo's V3 (112 = S/2), SoCo*'s
extra crop (192 = 6S/7) and V2 copy (112 = S/2), DetCo's jigsaw crop (255 ≈ 255S/224) and patch (64 = 2S/7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# Optimiser defaults per method: LARS base lr per 256 images, weight decay, warmup in epochs (None: DetCon's
# warmup_fraction of the steps). DetCo trains like MoCo v2: SGD momentum 0.9 (LARS without trust ratio),
# lr 0.03 x B/256, wd 1e-4 on every parameter, cosine without warmup.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "detcon-b": {"base_lr": 0.2, "weight_decay": 1.5e-6, "warmup_epochs": None},
    "detcon-s": {"base_lr": 0.2, "weight_decay": 1.5e-6, "warmup_epochs": None},
    "soco": {"base_lr": 1.0, "weight_decay": 1e-5, "warmup_epochs": 10.0},
    "soco-star": {"base_lr": 1.0, "weight_decay": 1e-5, "warmup_epochs": 10.0},
    "detco": {"base_lr": 0.03, "weight_decay": 1e-4, "warmup_epochs": 0.0},
}


def _view_defaults() -> dict[str, Any]:
    """MoCo v2's augmentations (DetCo's global views and patches), in ``config.ViewConfig`` field names."""
    return {"blur_p": 0.5, "solarize_p": 0.0, "crop_scale": (0.2, 1.0), "saturation": 0.4}


@dataclass
class SoCoConfig:
    """SoCo / SoCo* (methods §3).

    Views: V1 = the whole image resized to ``image_size`` (flip p 0.5, colour of ``views[0]``); V2 = a random
    resized crop (area in ``crop_scale``, aspect in ``crop_ratio``) → ``image_size``; V3 = an independent crop →
    ``small_size`` (S/2). SoCo*: V3 → ``star_crop_size`` (6S/7) and V4 = V2's crop → ``star_small_size`` (S/2)
    with its own flip. V2.. take ``views[1]``'s colour. Proposals: the stored ``keep`` of filter
    ``proposal_filter`` (with the fallback the build recorded in ``used``; ``"whole-image"`` → one whole-image
    box); per pair (V1, Vj) ``num_boxes`` drawn without replacement among those overlapping V1 ∩ Vj, padded
    with duplicates; V1's boxes jittered with ``jitter_p`` (``jitter_ratio`` of w, h). Levels: P2..P5 for
    sqrt(w h) <= ``level_thresholds`` (view pixels). Network: FPN of ``fpn_channels``, RoIAlign
    ``roi_size`` x ``roi_size`` (aligned, ``roi_sampling_ratio``), 4 conv + FC ``head_fc``; EMA ``ema_base`` → 1.
    """

    proposal_filter: str = "ratio3size0308"
    num_boxes: int = 4
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    small_size: int | None = None
    star_crop_size: int | None = None
    star_small_size: int | None = None
    jitter_p: float = 0.5
    jitter_ratio: float = 0.1
    level_thresholds: tuple[float, ...] = (48.0, 96.0, 192.0, 224.0)
    fpn_channels: int = 256
    roi_size: int = 7
    roi_sampling_ratio: int = -1
    head_fc: int = 1024
    ema_base: float = 0.99

    def view_sizes(self, image_size: int, star: bool) -> tuple[int, ...]:
        """Output side of each view: (S, S, S/2) for SoCo, (S, S, 6S/7, S/2) for SoCo* (224 → 112, 192)."""
        small = self.small_size or image_size // 2
        if not star:
            return (image_size, image_size, small)
        crop = self.star_crop_size or round(image_size * 6 / 7)
        return (image_size, image_size, crop, self.star_small_size or image_size // 2)

    def validate(self) -> None:
        if self.num_boxes < 1 or self.roi_size < 1 or self.fpn_channels < 1 or self.head_fc < 1:
            raise ValueError("soco: num_boxes, roi_size, fpn_channels and head_fc must be >= 1")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"soco.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"soco.crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        if len(self.level_thresholds) != 4 or list(self.level_thresholds) != sorted(self.level_thresholds):
            raise ValueError(f"soco.level_thresholds must be 4 ascending sizes (P2..P5), got {self.level_thresholds}")
        if not (0 <= self.jitter_p <= 1 and 0 <= self.jitter_ratio < 1 and 0 <= self.ema_base <= 1):
            raise ValueError("soco: jitter_p and ema_base must lie in [0, 1], jitter_ratio in [0, 1)")
        for name in ("small_size", "star_crop_size", "star_small_size"):
            if getattr(self, name) is not None and getattr(self, name) < 8:
                raise ValueError(f"soco.{name} must be >= 8 or null")


@dataclass
class DetCoConfig:
    """DetCo (methods §3): MoCo v2 with four levels (Res2..Res5), global and jigsaw-local views.

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


def sub_config(cls: type, value: Any) -> Any:
    """A ``SoCoConfig``/``DetCoConfig`` from itself or from its ``to_dict`` mapping (lists → tuples)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{cls.__name__} must be an object, got {type(value).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if "view" in values:
        values["view"] = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(values["view"]).items()}
    return cls(**values)
