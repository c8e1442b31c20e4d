"""What DetCon's augmentation makes of one stored sample, for ``regionshards show --views``: the trainer's own
``make_pair`` plus a replay of its crop draws (boxes and label maps), as plain arrays the report draws.

torch is imported only inside the functions, so ``require_torch`` tells whether the ``train`` extra is there.
``views_augmenter`` is the callable ``report.views`` draws with (the report never imports the trainer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .config import TrainConfig


def require_torch() -> None:
    """Raise ImportError when torch (the ``train`` extra) is missing."""
    import torch  # noqa: F401


@dataclass(frozen=True)
class AugmentedPair:
    """DetCon's two views of one sample, as the trainer makes them.

    Attributes:
        boxes: (2, 4) int64 crops ``[x, y, w, h]`` in stored-image pixels (snapped to the decode grid).
        flips: whether each view is mirrored; scale: the JPEG DCT scale the image was decoded at (1: full size).
        images: (2, S, S, 3) uint8 views after colour augmentation, normalised and de-normalised as in training.
        labels: (2, S, S) int32 label maps of the views; grids: (2, G, G) int64 majority ids; ids: (2, K) int64.
    """

    boxes: np.ndarray
    flips: tuple[bool, bool]
    scale: int
    images: np.ndarray
    labels: np.ndarray
    grids: np.ndarray
    ids: np.ndarray


def augment_pair(key: str, meta: dict[str, Any], image: bytes, cfg: TrainConfig, seed: int) -> AugmentedPair:
    """Run ``make_pair`` with ``default_rng(seed)``, and replay its crop draws for the boxes and label maps.

    Raises:
        ImportError: no torch; ValueError: the sample has no ``cfg.mask_source`` partition.
    """
    import torch

    from ..proposals import decode_segments
    from .decode import decode_for_crops
    from .methods.detcon_masks import majority_grid
    from .methods.detcon_views import PairBuffers, make_pair
    from .transforms import dct_scale, resize_mask, sample_crop, snap
    from .transforms import normalize as train_normalize

    s, g, k = cfg.image_size, cfg.grid_size, cfg.num_masks
    out = PairBuffers(np.zeros((2, 1, s, s, 3), np.uint8), np.zeros((2, 1, g, g), np.int64),
                      np.zeros((2, 1, k), np.int64))
    raw = {"__key__": key, "json": meta, meta["image"]["field"]: image}
    make_pair(raw, cfg, np.random.default_rng(seed), out, 0)
    # replay: make_pair draws the two crops first, then decodes at the scale both allow
    part = meta[cfg.mask_source]
    height, width = (int(v) for v in part["rles"][0]["size"])
    replay = np.random.default_rng(seed)
    crops = [sample_crop(replay, height, width, cfg.views[v]) for v in range(2)]
    field = meta["image"]["field"]
    image, scale = decode_for_crops(image, field, height, width, dct_scale(crops, s))
    full = decode_segments(part["rles"])
    snapped = [snap(c, scale, image.shape[0], image.shape[1]) for c in crops]
    labels = np.stack([resize_mask(full, c, scale, s) for c in snapped])
    for v in range(2):  # the replay must land where make_pair did
        if not np.array_equal(majority_grid(labels[v], cfg.feature_stride), out.grids[v, 0]):
            raise RuntimeError(f"sample {key!r}: replayed view {v + 1} differs from make_pair's")
    boxes = np.array([[c.x * scale, c.y * scale, min(c.w * scale, width - c.x * scale),
                       min(c.h * scale, height - c.y * scale)] for c in snapped], np.int64)
    # training normalises the uint8 (B, 3, S, S) batch; show that tensor de-normalised
    batch = torch.from_numpy(out.images[:, 0]).permute(0, 3, 1, 2)
    x = train_normalize(batch, cfg.mean, cfg.std)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    shown = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return AugmentedPair(boxes, (snapped[0].flip, snapped[1].flip), scale, shown, labels, out.grids[:, 0].copy(),
                         out.ids[:, 0].copy())


def views_augmenter(cfg: TrainConfig | None = None) -> Callable[[str, dict[str, Any], bytes, int], AugmentedPair]:
    """``augment(key, meta, image, seed)`` → ``augment_pair(key, meta, image, cfg, seed)``, for
    ``report.views.show_views`` (``cfg``: the default ``TrainConfig`` when None).

    Raises:
        ImportError: no torch (checked here, before any sample is read).
    """
    require_torch()
    from .config import TrainConfig

    config = cfg or TrainConfig()

    def augment(key: str, meta: dict[str, Any], image: bytes, seed: int) -> AugmentedPair:
        return augment_pair(key, meta, image, config, seed)

    return augment
