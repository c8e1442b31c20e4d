"""Reading a shard sample for any method (numpy/cv2): its metadata, one partition of its JSON parsed with as
little work as possible, and its image decoded once at the largest JPEG DCT scale every view allows; then a
view is cut from it (crop on the decoded grid → resize → flip → RGB) with ``transforms``' kernels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..images import decode_image
from .transforms import DCT_SCALES, Crop, resize_image, snap

# RGB straight from libjpeg (the same pixels as BGR reversed): no channel swap of the views afterwards.
_REDUCED_FLAGS = {s: (flag & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB
                  for s, flag in ((1, cv2.IMREAD_COLOR), (2, cv2.IMREAD_REDUCED_COLOR_2),
                                  (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))}
_DECODER = json.JSONDecoder()
_SOURCE_TAIL = ',"source":'


def parse_partition(raw: bytes | str, which: str = "segments") -> dict[str, Any]:
    """The ``segments`` (or ``ground_truth``) object of a sample JSON member, parsing as little as possible.

    Sample JSON is canonical (format §3: compact, keys sorted), so the top-level ``"segments":`` is the last
    occurrence of that text (``"`` inside strings is escaped, and only ``source`` follows it). The fast path
    parses just that value and checks that the rest of the document is exactly ``,"source":{...}}``; anything
    else (non-canonical JSON, a nested key of the same name) falls back to parsing the whole document.

    Raises:
        ValueError: invalid JSON, or the sample has no such partition (e.g. built with ``--segments none``).
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    needle = f'"{which}":'
    part: Any = None
    found = False
    at = text.rfind(needle) if which == "segments" else -1
    if at >= 0:
        try:
            part, end = _DECODER.raw_decode(text, at + len(needle))
            if text.startswith(_SOURCE_TAIL, end):
                tail = json.loads("{" + text[end + 1 :])
                found = isinstance(tail, dict) and list(tail) == ["source"]
        except json.JSONDecodeError:
            found = False
    if not found:
        meta = json.loads(text)
        part = meta.get(which) if isinstance(meta, dict) else None
    if not isinstance(part, dict) or not part.get("rles"):
        raise ValueError(f"the sample has no {which} (DetCon needs a segment partition)")
    return part


def decode_for_crops(data: bytes, field: str, height: int, width: int, scale: int) -> tuple[np.ndarray, int]:
    """Decode image bytes for crops that allow DCT scale ``scale``.

    Returns ``(rgb, scale_used)``: an (h, w, 3) uint8 RGB array of ``ceil(height / s) x ceil(width / s)``
    pixels. JPEG goes through OpenCV (``IMREAD_REDUCED_COLOR_s`` in RGB order, EXIF orientation ignored as the
    format requires); anything else, or a JPEG OpenCV cannot read at the expected size, through
    ``regionshards.images.decode_image`` at full size.

    Raises:
        ValueError: the decoded size differs from the segments' size.
    """
    if field == "jpg":
        flags = _REDUCED_FLAGS[scale] | cv2.IMREAD_IGNORE_ORIENTATION
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        expected = (math.ceil(height / scale), math.ceil(width / scale))
        if image is not None and image.ndim == 3 and image.shape[:2] == expected and image.shape[2] == 3:
            return image, scale
    rgb = decode_image(data).rgb
    if rgb.shape[:2] != (height, width):
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but its segments are {width}x{height}")
    return rgb, 1


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
    """An image decoded once for a set of crops: ``pixels`` (h, w, 3) uint8 RGB at 1/``scale``."""

    def __init__(self, data: bytes, field: str, height: int, width: int, crops: Sequence[Crop],
                 sizes: Sequence[int]) -> None:
        self.pixels, self.scale = decode_for_crops(data, field, height, width, joint_scale(crops, sizes))

    def grid_crop(self, crop: Crop) -> Crop:
        """A stored-pixel crop snapped to the decoded grid (what the view is cut from; boxes use it too)."""
        return snap(crop, self.scale, self.pixels.shape[0], self.pixels.shape[1])

    def view(self, grid_crop: Crop, size: int) -> np.ndarray:
        """(size, size, 3) uint8 RGB view of a crop on the decoded grid (bicubic, mirrored when flipped)."""
        return resize_image(self.pixels, grid_crop, size)
