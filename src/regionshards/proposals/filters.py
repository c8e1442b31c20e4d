"""Proposal filters: SoCo's named filters with their fallbacks, a parameterised filter, and box dedupe.

Filters return boolean keep-masks (N,) over boxes, so that one stored proposal list serves every filter.

Box convention: ``boxes`` are (N, 4) ``[x, y, w, h]`` covering the region's pixels (COCO; what
``selective_search`` returns). SoCo measured its filters on the reference ``rect``, which is one pixel
shorter in w and h; ``extent="soco"`` (the default of the named SoCo filters) reproduces SoCo's selections
exactly by subtracting that pixel before testing, ``extent="pixels"`` tests the true extent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Extent = Literal["soco", "pixels"]


@dataclass(frozen=True)
class BoxFilter:
    """Keep boxes with ``w, h >= min_side``, ``1/max_aspect <= w/h <= max_aspect`` and
    ``min_rel_size <= sqrt(w*h / (W*H)) <= max_rel_size`` (each test skipped when its bound is None)."""

    min_side: float = 32
    max_aspect: float | None = None
    min_rel_size: float | None = None
    max_rel_size: float | None = None
    extent: Extent = "soco"

    def __call__(self, boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        return filter_boxes(
            boxes,
            image_size,
            min_side=self.min_side,
            max_aspect=self.max_aspect,
            min_rel_size=self.min_rel_size,
            max_rel_size=self.max_rel_size,
            extent=self.extent,
        )


def filter_boxes(
    boxes: np.ndarray,
    image_size: tuple[int, int],
    *,
    min_side: float = 32,
    max_aspect: float | None = None,
    min_rel_size: float | None = None,
    max_rel_size: float | None = None,
    extent: Extent = "soco",
) -> np.ndarray:
    """Keep-mask (N,) bool of the parameterised filter described in ``BoxFilter``.

    Args:
        boxes: (N, 4) ``[x, y, w, h]`` pixel-covering boxes (any real dtype).
        image_size: (H, W) of the image the boxes belong to.
        extent: ``"soco"`` tests ``w - 1, h - 1`` (SoCo's rects), ``"pixels"`` the boxes as given.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if extent not in ("soco", "pixels"):
        raise ValueError(f"extent must be 'soco' or 'pixels', got {extent!r}")
    height, width = image_size
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive (H, W), got {image_size}")
    w = b[:, 2] - 1 if extent == "soco" else b[:, 2]
    h = b[:, 3] - 1 if extent == "soco" else b[:, 3]
    keep = (w >= min_side) & (h >= min_side)
    if max_aspect is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = np.where(h > 0, w / np.where(h > 0, h, 1), np.inf)
        keep &= (1.0 / max_aspect <= aspect) & (aspect <= max_aspect)
    if min_rel_size is not None or max_rel_size is not None:
        # SoCo compares sqrt(w*h) / sqrt(W*H); computed the same way so boundary cases agree.
        rel = np.sqrt(np.maximum(w * h, 0)) / math.sqrt(width * height)
        if min_rel_size is not None:
            keep &= rel >= min_rel_size
        if max_rel_size is not None:
            keep &= rel <= max_rel_size
    return keep


# SoCo's filter names: "ratio{r}size{min:02d}{max:02d}" etc. (selective_search/filter_ss_proposals_json.py).
NAMED_FILTERS: dict[str, BoxFilter] = {
    "none": BoxFilter(),
    "ratio2": BoxFilter(max_aspect=2),
    "ratio3": BoxFilter(max_aspect=3),
    "ratio4": BoxFilter(max_aspect=4),
    "size01": BoxFilter(min_rel_size=0.1, max_rel_size=1.0),
    "ratio3size0308": BoxFilter(max_aspect=3, min_rel_size=0.3, max_rel_size=0.8),
}

# SoCo's "post" step (filter_ss_proposals_json_post_no_prop.py): images the filter leaves empty fall back
# to the aspect-only filter, then to the side-only filter; still empty → the loader uses the whole image.
FALLBACKS: dict[str, tuple[str, ...]] = {"ratio3size0308": ("ratio3", "none")}


def named_filter(name: str) -> BoxFilter:
    """The ``BoxFilter`` of a SoCo filter name (``ratio3size0308``, ``ratio3``, ``none``, ...)."""
    try:
        return NAMED_FILTERS[name]
    except KeyError:
        raise ValueError(f"unknown filter {name!r}; choose one of {sorted(NAMED_FILTERS)}") from None


def apply_filter(
    boxes: np.ndarray, image_size: tuple[int, int], name: str = "ratio3size0308", post: bool = True
) -> tuple[np.ndarray, str]:
    """Keep-mask of a named filter and, with ``post``, SoCo's fallbacks for images it leaves empty.

    Returns ``(keep, used)`` where ``used`` names the filter that produced ``keep``: ``name``, a fallback,
    or ``"whole-image"`` when every fallback is empty too (``keep`` is then all False and the caller uses
    ``whole_image_box``).
    """
    keep = named_filter(name)(boxes, image_size)
    if keep.any() or not post:
        return keep, name
    for fallback in FALLBACKS.get(name, ()):
        keep = named_filter(fallback)(boxes, image_size)
        if keep.any():
            return keep, fallback
    return keep, "whole-image"


def whole_image_box(image_size: tuple[int, int]) -> np.ndarray:
    """(1, 4) float32 ``[0, 0, W, H]``: the box SoCo's loader uses when no proposal survives."""
    height, width = image_size
    return np.array([[0, 0, width, height]], dtype=np.float32)


def dedupe_boxes(boxes: np.ndarray) -> np.ndarray:
    """Indices (K,) int64 of the first occurrence of each distinct box, in their original order."""
    b = np.ascontiguousarray(np.asarray(boxes).reshape(-1, 4))
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(b, axis=0, return_index=True)
    return np.sort(first).astype(np.int64)
