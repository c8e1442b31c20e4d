"""Felzenszwalb–Huttenlocher graph segmentation: exact (ours), skimage (the reference) and OpenCV backends."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from . import _fh_kernels as k
from ._image import as_rgb_uint8

Backend = Literal["exact", "skimage", "opencv"]
BACKENDS: tuple[str, ...] = ("exact", "skimage", "opencv")

# skimage's img_as_float64 multiplies by 1/255 (not a division): a lookup table reproduces it bit for bit.
_UINT8_TO_FLOAT = np.arange(256, dtype=np.float64) * (1.0 / 255.0)


def felzenszwalb(
    image: np.ndarray,
    scale: float = 1000,
    sigma: float = 0.8,
    min_size: int = 1000,
    backend: Backend = "exact",
) -> np.ndarray:
    """Segment an image into regions with Felzenszwalb & Huttenlocher's graph method.

    Args:
        image: (H, W, 3) uint8 RGB; (H, W) grey, RGBA, uint16 and float in [0, 1] are converted first as
            documented in ``as_rgb_uint8`` (grey is replicated to three channels, alpha dropped).
        scale: observation level ``k`` on the 0..255 colour scale (skimage's ``scale``); higher → larger segments.
            Defaults are DetCon's (1000, 0.8, 1000); SoCo's selective search uses (300, 0.9, 100).
        sigma: standard deviation of the Gaussian pre-smoothing (reflect mode, truncated at 4 sigma).
        min_size: segments smaller than this many pixels are merged into a neighbour afterwards.
        backend: ``"exact"`` (default; numba, label maps identical to ``skimage.segmentation.felzenszwalb``),
            ``"skimage"`` (the reference itself) or ``"opencv"`` (``cv2.ximgproc`` graph segmentation: faster
            than skimage but a different graph, so not identical — see docs/proposals.md for the agreement).

    Returns:
        (H, W) int32 label map with dense ids 0..n-1 numbered in raster order of first appearance (the order
        skimage's labels already have), so equal segmentations give equal arrays.
    """
    rgb = as_rgb_uint8(image)
    if rgb.shape[0] * rgb.shape[1] > k.MAX_PIXELS:
        raise ValueError(f"image of {rgb.shape[0]}x{rgb.shape[1]} pixels exceeds the {k.MAX_PIXELS} pixel limit")
    if scale <= 0 or sigma < 0 or min_size < 0:
        raise ValueError(f"need scale > 0, sigma >= 0, min_size >= 0; got {scale=}, {sigma=}, {min_size=}")
    if backend == "exact":
        return _felzenszwalb_exact(rgb, float(scale), float(sigma), int(min_size))
    if backend == "skimage":
        from skimage.segmentation import felzenszwalb as sk_felzenszwalb

        labels = sk_felzenszwalb(rgb, scale=scale, sigma=sigma, min_size=min_size)
        return relabel_raster_order(labels)
    if backend == "opencv":
        return _felzenszwalb_opencv(rgb, float(scale), float(sigma), int(min_size))
    raise ValueError(f"unknown felzenszwalb backend {backend!r}; choose one of {BACKENDS}")


def smooth_image(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W, 3) float64 in [0, 1], Gaussian-smoothed per channel exactly as skimage does."""
    img = _UINT8_TO_FLOAT[rgb]
    if sigma == 0:
        return img
    return ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0.0), mode="reflect", truncate=4.0)


def _felzenszwalb_exact(rgb: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    smooth = smooth_image(rgb, sigma)
    packed, weights = k.edge_weights(smooth)
    order = k.sort_edges(packed, weights)
    # skimage rescales scale to its [0, 1] float image: scale / 255.
    return k.segment_graph(order, weights, h, w, scale / 255.0, min_size)


def _felzenszwalb_opencv(rgb: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    import cv2

    seg = cv2.ximgproc.segmentation.createGraphSegmentation(sigma=sigma, k=scale, min_size=min_size)
    labels = seg.processImage(np.ascontiguousarray(rgb[:, :, ::-1]))
    return relabel_raster_order(labels)


def relabel_raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber any (H, W) integer label map to dense int32 ids in raster order of first appearance."""
    flat = np.asarray(labels).ravel()
    uniq, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    rank = np.empty(uniq.size, dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(uniq.size, dtype=np.int32)
    return rank[inverse].reshape(np.shape(labels))
