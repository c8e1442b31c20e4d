"""Selective search proposals: SoCo's single-strategy hierarchical grouping, faithful and fast, plus OpenCV's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _ss_kernels as k
from ._image import as_rgb_uint8
from .fh import felzenszwalb, felzenszwalb_many

Variant = Literal["soco", "alpacadb", "opencv-fast", "opencv-quality"]
VARIANTS: tuple[str, ...] = ("soco", "alpacadb", "opencv-fast", "opencv-quality")

# Sampling offsets of skimage's local_binary_pattern(P=8, R=1), computed exactly as skimage computes them.
_ANGLES = 2 * np.pi * np.arange(8, dtype=np.float64) / 8
_LBP_RP = np.round(-1.0 * np.sin(_ANGLES), 5)
_LBP_CP = np.round(1.0 * np.cos(_ANGLES), 5)


def _histogram_bins(n_bins: int, lo: float, hi: float) -> np.ndarray:
    """Bin that ``numpy.histogram(v, n_bins, (lo, hi))`` gives each integer v in 0..255 (-1: outside)."""
    out = np.full(256, -1, dtype=np.int8)
    for v in range(256):
        counts = np.histogram(np.array([float(v)]), n_bins, (lo, hi))[0]
        if counts.any():
            out[v] = int(np.argmax(counts))
    return out


_V_BIN = _histogram_bins(25, 0.0, 255.0)
_TEXTURE_BIN = {"alpacadb": _histogram_bins(10, 0.0, 1.0), "soco": _histogram_bins(10, 0.0, 255.0)}


@dataclass(frozen=True)
class Proposals:
    """Boxes from one selective-search run, in hierarchy order.

    Attributes:
        boxes: (N, 4) float32 ``[x, y, w, h]`` covering the region's pixels, COCO convention
            (``w = max_x - min_x + 1``; the reference's ``rect`` is one pixel shorter in w and h).
        sizes: (N,) int64 region size in pixels (-1 where unknown: OpenCV variants).
        levels: (N,) int32 hierarchy level: 0 for an initial FH region, 1 + the deeper child's level for a
            merge (-1 for OpenCV variants, which do not expose it).
        children: (N, 2) int32 indices of the two merged regions (-1, -1 for initial regions and OpenCV).
        segments: (H, W) int32 initial FH label map (ids 0..n-1 are the first n proposals), or None (OpenCV).
        image_size: (H, W) of the image.
    """

    boxes: np.ndarray
    sizes: np.ndarray
    levels: np.ndarray
    children: np.ndarray
    segments: np.ndarray | None
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def reference_rects(self) -> np.ndarray:
        """(N, 4) int64 boxes in the reference packages' convention ``(x, y, max_x - min_x, max_y - min_y)``."""
        rects = self.boxes.astype(np.int64)
        rects[:, 2:] -= 1
        return rects


def selective_search(
    image: np.ndarray,
    scale: float | None = None,
    sigma: float | None = None,
    min_size: int | None = None,
    variant: Variant = "soco",
) -> Proposals:
    """Selective-search proposals of an RGB image.

    Args:
        image: (H, W, 3) uint8 RGB; uint8 grey (H, W) / (H, W, 1) is replicated to RGB and RGBA loses its alpha
            (inputs the reference refuses: it asserts three channels). Other dtypes raise ``ValueError``: the
            reference accepts them but computes its colour histograms on the raw values over a 0..255 range
            (16-bit values fall outside it, [0, 1] floats all land in one bin), which is not reproduced;
            convert to uint8 RGB first (``regionshards.images`` does for files).
        scale, sigma, min_size: FH parameters of the initial segmentation; ``None`` → SoCo's (300, 0.9, 100).
            For the OpenCV variants ``scale`` sets ``base_k`` and ``inc_k`` and ``sigma`` the FH sigma of each
            strategy (``None`` → OpenCV's 150 and 0.8); ``min_size`` does not apply there.
        variant:
            * ``"soco"`` (default): SoCo's vendored copy of AlpacaDB's package. Its one change that matters is
              the texture histogram range (0, 255).
            * ``"alpacadb"``: the PyPI package ``selectivesearch`` 0.4 (texture range (0, 1)).
            * ``"opencv-fast"`` / ``"opencv-quality"``: ``cv2.ximgproc`` multi-strategy selective search.
              OpenCV ranks boxes randomly (unseeded); they are returned in a canonical order instead (area
              descending, then x, y, w, h), so take a random subset rather than the first N.

    The two faithful variants give the same regions in the same order as the reference, which means keeping
    its quirks:

    1. FH runs on the image with the given parameters (``img_as_float`` does not change the segmentation).
    2. HSV is computed on the 0..255 float image, so H and S always fall in colour bin 0: only V matters.
    3. Texture is LBP(8, 1) per RGB channel on 0..255 floats; with range (0, 1) only codes 0 and 1 count.
    4. "Neighbours" are not adjacent regions: a later region is a neighbour of an earlier one when one of
       its bounding-box corners lies strictly inside the earlier box (one-way test, in region order); merging
       stops when no such pair is left, so the hierarchy need not end in one region.
    5. Fill uses the one-pixel-short box extent ``(max - min)``; the merged pair is the most similar one,
       the last inserted among equal maxima; the new region's pairs are inserted in the order the old pairs
       had, once per neighbour.
    6. Boxes here are ``w = max_x - min_x + 1`` (the reference's ``rect`` has ``max_x - min_x``).

    Returns:
        ``Proposals`` with every initial region then every merge, in the reference's order.
    """
    rgb = _uint8_rgb(image)
    if variant in ("soco", "alpacadb"):
        return _selective_search_faithful(
            rgb,
            300.0 if scale is None else float(scale),
            0.9 if sigma is None else float(sigma),
            100 if min_size is None else int(min_size),
            _TEXTURE_BIN[variant],
        )
    if variant in ("opencv-fast", "opencv-quality"):
        if min_size is not None:
            raise ValueError(f"min_size does not apply to the {variant!r} variant (OpenCV sets its own)")
        return _selective_search_opencv(rgb, variant, scale, sigma)
    raise ValueError(f"unknown selective search variant {variant!r}; choose one of {VARIANTS}")


def segments_and_proposals(
    image: np.ndarray,
    segments: tuple[float, float, int] = (1000, 0.8, 1000),
    proposals: tuple[float, float, int] = (300, 0.9, 100),
    variant: Literal["soco", "alpacadb"] = "soco",
) -> tuple[np.ndarray, Proposals]:
    """DetCon's FH segments and SoCo's selective-search proposals of one image in one call.

    Equal to ``(felzenszwalb(image, *segments), selective_search(image, *proposals, variant=variant))``
    for a uint8 RGB image (same checks and conversions as ``selective_search``), computed with the input
    checked and converted once and, when both parameter sets share a sigma, one smoothed and sorted edge
    graph merged twice (``felzenszwalb_many``).

    Returns:
        (H, W) int32 FH label map for ``segments`` and the ``Proposals`` for ``proposals``.
    """
    if variant not in ("soco", "alpacadb"):
        raise ValueError(f"segments_and_proposals runs the faithful variants 'soco' or 'alpacadb'; got {variant!r}")
    rgb = _uint8_rgb(image)
    labels, ss_labels = felzenszwalb_many(rgb, [segments, proposals])
    return labels, _selective_search_faithful(rgb, *proposals, _TEXTURE_BIN[variant], ss_labels)


def _uint8_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(
            f"selective_search needs a uint8 RGB image, got dtype {a.dtype} (shape {a.shape}): "
            "convert it to uint8 RGB first"
        )
    return as_rgb_uint8(a)


def _selective_search_faithful(
    rgb: np.ndarray,
    scale: float,
    sigma: float,
    min_size: int,
    bin_of_code: np.ndarray,
    segments: np.ndarray | None = None,
) -> Proposals:
    h, w = rgb.shape[:2]
    if segments is None:
        segments = felzenszwalb(rgb, scale=scale, sigma=sigma, min_size=min_size, backend="exact")
    n = int(segments.max()) + 1
    v_bin, t_bins = k.pixel_bins(rgb, _LBP_RP, _LBP_CP, _V_BIN, bin_of_code)
    bbox0, size0, hist0 = k.region_stats(segments, v_bin, t_bins, n)
    bbox, sizes, levels, children = k.hierarchical_grouping(bbox0, size0, hist0, float(h * w))
    boxes = np.empty((bbox.shape[0], 4), dtype=np.float32)
    boxes[:, 0] = bbox[:, 0]
    boxes[:, 1] = bbox[:, 1]
    boxes[:, 2] = bbox[:, 2] - bbox[:, 0] + 1
    boxes[:, 3] = bbox[:, 3] - bbox[:, 1] + 1
    return Proposals(boxes, sizes, levels, children, segments, (h, w))


def _selective_search_opencv(
    rgb: np.ndarray, variant: str, scale: float | None, sigma: float | None
) -> Proposals:
    import cv2

    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(rgb[:, :, ::-1]))
    base_k = 150 if scale is None else int(round(scale))
    fh_sigma = 0.8 if sigma is None else float(sigma)
    if variant == "opencv-fast":
        ss.switchToSelectiveSearchFast(base_k, base_k, fh_sigma)
    else:
        ss.switchToSelectiveSearchQuality(base_k, base_k, fh_sigma)
    rects = np.asarray(ss.process(), dtype=np.float32).reshape(-1, 4)
    # OpenCV ranks its boxes by level times an unseeded random draw, so its order changes from run to run.
    # A canonical order (area descending, then x, y, w, h) keeps builds deterministic.
    order = np.lexsort((rects[:, 3], rects[:, 2], rects[:, 1], rects[:, 0], -(rects[:, 2] * rects[:, 3])))
    rects = rects[order]
    n = rects.shape[0]
    return Proposals(
        rects,
        np.full(n, -1, dtype=np.int64),
        np.full(n, -1, dtype=np.int32),
        np.full((n, 2), -1, dtype=np.int32),
        None,
        rgb.shape[:2],
    )
