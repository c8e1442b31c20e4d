"""Felzenszwalb–Huttenlocher graph segmentation: exact (ours), skimage (the reference) and OpenCV backends."""

from __future__ import annotations

import functools
import threading
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


@functools.lru_cache(maxsize=64)
def gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy's 1-D Gaussian weights for ``sigma`` (truncate 4.0), centre first: (radius + 1,) float64.

    Read off scipy's own filter as its impulse response (exact: every other term adds 0), so they are the
    weights scipy uses whatever its version.
    """
    radius = int(4.0 * sigma + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    response = ndimage.gaussian_filter1d(impulse, sigma, mode="constant", truncate=4.0)
    return np.ascontiguousarray(response[radius:])


def smooth_image(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W, 3) float64 in [0, 1], Gaussian-smoothed per channel exactly as skimage does."""
    out = np.empty(rgb.shape, dtype=np.float64)
    if sigma == 0:
        out[...] = _UINT8_TO_FLOAT[rgb]
        return out
    k.gaussian_smooth(rgb, _UINT8_TO_FLOAT, gaussian_kernel(float(sigma)), np.empty_like(out), out)
    return out


class _Scratch(threading.local):
    """Per-thread buffers reused across calls: fresh multi-MB arrays would cost more in page faults than
    the segmentation itself. Images above ``KEEP_PIXELS`` get private buffers so memory stays bounded."""

    KEEP_PIXELS = 4_000_000

    def __init__(self) -> None:
        self.pixels = 0
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, h: int, w: int) -> dict[str, np.ndarray]:
        n = h * w
        if n > self.KEEP_PIXELS:
            return _allocate(n)
        if n > self.pixels:
            self.buffers = _allocate(max(n, 2 * self.pixels))
            self.pixels = n if n > 2 * self.pixels else 2 * self.pixels
        return self.buffers


def _allocate(n: int) -> dict[str, np.ndarray]:
    e = 4 * n
    return {
        "smooth": np.empty(3 * n, np.float64),
        "tmp": np.empty(3 * n, np.float64),
        "packed": np.empty(e, np.uint64),
        "packed_tmp": np.empty(e, np.uint64),
        "weights": np.empty(e, np.float64),
        "order": np.empty(e, np.uint32),
        "rejected": np.empty(e, np.uint32),
        "parent": np.empty(n, np.int32),
        "size": np.empty(n, np.int32),
        "cint": np.empty(n, np.float64),
        "root_label": np.empty(n, np.int32),
    }


_SCRATCH = _Scratch()


def _felzenszwalb_exact(rgb: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    n, e = h * w, k.n_edges(h, w)
    b = _SCRATCH.get(h, w)
    smooth = b["smooth"][: 3 * n].reshape(h, w, 3)
    if sigma == 0:
        smooth[...] = _UINT8_TO_FLOAT[rgb]
    else:
        tmp = b["tmp"][: 3 * n].reshape(h, w, 3)
        k.gaussian_smooth(rgb, _UINT8_TO_FLOAT, gaussian_kernel(sigma), tmp, smooth)
    packed, weights = b["packed"][:e], b["weights"][: 4 * n]
    id_bits = k.id_bits_for(n)
    k.edge_weights(smooth, packed, weights, id_bits)
    order = b["order"][:e]
    k.sort_edges(packed, b["packed_tmp"][:e], weights, order, id_bits)
    # skimage rescales scale to its [0, 1] float image: scale / 255.
    return k.segment_graph(
        order, weights, h, w, scale / 255.0, min_size,
        b["parent"][:n], b["size"][:n], b["cint"][:n], b["rejected"][:e], b["root_label"][:n],
    )


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
