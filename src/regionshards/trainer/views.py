"""Shared per-sample helpers of the SoCo and DetCo views (numpy/cv2): read a shard sample's metadata, decode the
image once at the largest DCT scale every view allows, and cut a view (crop on the decoded grid → resize →
flip → RGB). DetCon's own pipeline lives in ``samples``; these reuse its decoder and ``transforms``' kernels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .samples import decode_for_crops
from .transforms import DCT_SCALES, Crop, resize_image, snap


def sample_meta(sample: dict[str, Any]) -> tuple[dict[str, Any], str, int, int]:
    """(sample JSON, image field, stored height, stored width) of an ``iter_shard`` sample (JSON raw or parsed).

    Raises:
        ValueError: no image member or no image size in the JSON.
    """
    raw = sample["json"]
    meta = raw if isinstance(raw, dict) else json.loads(raw)
    field = next((f for f in sample if not f.startswith("__") and f != "json"), None)
    image = meta.get("image") or {}
    if field is None or "width" not in image or "height" not in image:
        raise ValueError("the sample has no image member or no image size")
    return meta, field, int(image["height"]), int(image["width"])


def joint_scale(crops: Sequence[Crop], sizes: Sequence[int]) -> int:
    """The largest JPEG DCT scale s at which every crop keeps >= its view's side per side at 1/s (1 if none)."""
    return next((s for s in DCT_SCALES if all(min(c.h, c.w) >= size * s for c, size in zip(crops, sizes,
                                                                                          strict=True))), 1)


class DecodedImage:
    """An image decoded once for a set of crops: ``pixels`` (h, w, 3) uint8 at 1/``scale``, BGR when ``bgr``."""

    def __init__(self, data: bytes, field: str, height: int, width: int, crops: Sequence[Crop],
                 sizes: Sequence[int]) -> None:
        self.pixels, self.scale, self.bgr = decode_for_crops(data, field, height, width, joint_scale(crops, sizes))

    def grid_crop(self, crop: Crop) -> Crop:
        """A stored-pixel crop snapped to the decoded grid (what the view is cut from; boxes use it too)."""
        return snap(crop, self.scale, self.pixels.shape[0], self.pixels.shape[1])

    def view(self, grid_crop: Crop, size: int) -> np.ndarray:
        """(size, size, 3) uint8 RGB view of a crop on the decoded grid (bicubic, mirrored when flipped)."""
        out = resize_image(self.pixels, grid_crop, size)
        return cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if self.bgr else out
