"""SoCo's settings (a ``TrainConfig`` field, ``soco``, used by every SoCo variant): every number the method
needs beyond the shared fields. No torch. Sources: Wei et al., "Aligning Pretraining for Detection via
Object-Level Contrastive Learning" (NeurIPS 2021) Sec. 3 and hologerry/SoCo (``contrast/data/transform.py``,
``contrast/models/SoCo_FPN.py``, ``tools/*.sh``).

View sizes given at 224 px scale with ``image_size`` unless set: V3 (112 = S/2), SoCo*'s extra crop
(192 = 6S/7) and V2 copy (112 = S/2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SoCoConfig:
    """SoCo / SoCo*.

    Views: V1 = the whole image resized to ``image_size`` (flip p 0.5, colour of ``views[0]``); V2 = a random
    resized crop (area in ``crop_scale``, aspect in ``crop_ratio``) → ``image_size``; V3 = an independent crop →
    ``small_size`` (S/2). SoCo*: V3 → ``star_crop_size`` (6S/7) and V4 = V2's crop → ``star_small_size`` (S/2)
    with its own flip. V2.. take ``views[1]``'s colour. Proposals: the stored ``keep`` of filter
    ``proposal_filter`` (with the fallback the build recorded in ``used``; ``"whole-image"`` → one whole-image
    box); per pair (V1, Vj) ``num_boxes`` drawn without replacement among those overlapping V1 ∩ Vj, padded
    with duplicates (``pad_independently``: V1's duplicates drawn apart from Vj's, as SoCo pads each view on its
    own); V1's boxes jittered with ``jitter_p`` (``jitter_ratio`` of w, h). The crops are drawn again,
    up to ``max_tries`` times in all, until every pair's intersection overlaps ``least`` proposals (``least``
    starts at max(num_boxes // 2, 1) and halves after each failed try; the last draw is kept), as SoCo's loader
    does. Box cutout (SoCo's 100-epoch recipe): in V2 and V3 (SoCo-C4: V2), per box with ``cutout_p``, a
    square of ``cutout_ratio`` of the box's area filled with the normalisation mean. Levels: P2..P5 for
    sqrt(w h) <= ``level_thresholds`` (view pixels). Network: FPN of ``fpn_channels`` (``fpn_norm``: BatchNorm
    after every lateral and output conv, convs without bias, as SoCo's ``norm_cfg=BN``), RoIAlign
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
    max_tries: int = 5
    pad_independently: bool = True
    cutout_p: float = 0.0
    cutout_ratio: tuple[float, float] = (0.1, 0.3)
    level_thresholds: tuple[float, ...] = (48.0, 96.0, 192.0, 224.0)
    fpn_channels: int = 256
    fpn_norm: bool = True
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

    def validate(self, image_size: int) -> None:
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
        if self.max_tries < 1:
            raise ValueError(f"soco.max_tries must be >= 1, got {self.max_tries}")
        lo, hi = self.cutout_ratio
        if not (0 <= self.cutout_p <= 1 and 0 <= lo <= hi <= 1):
            raise ValueError(f"soco: cutout_p must lie in [0, 1] and cutout_ratio be 0 <= lo <= hi <= 1, got "
                             f"{self.cutout_p}, {self.cutout_ratio}")
        for name in ("small_size", "star_crop_size", "star_small_size"):
            if getattr(self, name) is not None and getattr(self, name) < 8:
                raise ValueError(f"soco.{name} must be >= 8 or null")
