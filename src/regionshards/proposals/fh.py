"""Felzenszwalb–Huttenlocher graph segmentation: exact (ours), skimage (the reference) and OpenCV backends."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from . import _fh_kernels as k
from . import _fh_sort
from ._fh_merge import segment_graph
from ._image import as_rgb_uint8, skimage_channels, skimage_float64

Backend = Literal["exact", "skimage", "opencv"]
BACKENDS: tuple[str, ...] = ("exact", "skimage", "opencv")



def felzenszwalb(
    image: np.ndarray,
    scale: float = 1000,
    sigma: float = 0.8,
    min_size: int = 1000,
    backend: Backend = "exact",
    *,
    channel_axis: int | None = -1,
) -> np.ndarray:
    """Segment an image into regions with Felzenszwalb & Huttenlocher's graph method.

    Args:
        image: what ``skimage.segmentation.felzenszwalb`` accepts: (H, W) grey (one channel) or (H, W, C)
            with any number of channels up to 128, dtype bool, (u)int8–64 or float16–64, converted like
            skimage (``img_as_float64``: uint8 / 255, floats as given, ...). Photos are (H, W, 3) uint8 RGB.
            NaN, infinity and other dtypes raise ``ValueError``.
        scale: observation level ``k`` on the 0..255 colour scale (skimage's ``scale``); higher → larger segments.
            Defaults are DetCon's (1000, 0.8, 1000); SoCo's selective search uses (300, 0.9, 100). With
            ``scale <= 0`` nothing merges in the main pass and only the min-size pass runs, as in skimage.
        sigma: standard deviation of the Gaussian pre-smoothing (reflect mode, truncated at 4 sigma).
        min_size: segments smaller than this many pixels are merged into a neighbour afterwards.
        backend: ``"exact"`` (default; numba, label maps identical to ``skimage.segmentation.felzenszwalb``),
            ``"skimage"`` (the reference itself) or ``"opencv"`` (``cv2.ximgproc`` graph segmentation on the
            image converted to RGB uint8: a different graph, so not identical — see docs/proposals.md).
        channel_axis: the axis of a 3-D image that holds the channels (skimage's argument); ``None`` for a
            2-D grey image.

    Returns:
        (H, W) int32 label map with dense ids 0..n-1 numbered in raster order of first appearance (the order
        skimage's labels already have), so equal segmentations give equal arrays.
    """
    scale, sigma, min_size = _check_params(scale, sigma, min_size)
    if backend == "opencv":
        return _felzenszwalb_opencv(as_rgb_uint8(_move_channels(image, channel_axis)), scale, sigma, min_size)
    img = skimage_channels(image, channel_axis)
    if img.shape[0] * img.shape[1] > k.MAX_PIXELS:
        raise ValueError(f"image of {img.shape[0]}x{img.shape[1]} pixels exceeds the {k.MAX_PIXELS} pixel limit")
    if backend == "exact":
        return _felzenszwalb_exact(img, scale, sigma, min_size)
    if backend == "skimage":
        from skimage.segmentation import felzenszwalb as sk_felzenszwalb

        return relabel_raster_order(sk_felzenszwalb(img, scale=scale, sigma=sigma, min_size=min_size))
    raise ValueError(f"unknown felzenszwalb backend {backend!r}; choose one of {BACKENDS}")


def _check_params(scale: float, sigma: float, min_size: int) -> tuple[float, float, int]:
    scale, sigma = float(scale), float(sigma)
    if np.isnan(scale):
        raise ValueError("scale is NaN")
    if not sigma >= 0 or np.isinf(sigma):
        raise ValueError(f"sigma must be a finite number >= 0; got {sigma}")
    if isinstance(min_size, (bool, np.bool_)) or not isinstance(min_size, (int, np.integer)):
        raise ValueError(f"min_size must be an integer number of pixels; got {min_size!r}")
    if not -(1 << 63) <= int(min_size) < 1 << 63:
        raise ValueError(f"min_size {min_size} does not fit in 64 bits (skimage refuses it too)")
    return scale, sigma, int(min_size)


def _move_channels(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    a = np.asarray(image)
    return a if a.ndim != 3 or channel_axis in (None, -1, 2) else np.moveaxis(a, channel_axis, -1)


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


# scipy's gaussian_filter leaves an axis alone when its sigma is at most this.
_SCIPY_MIN_SIGMA = 1e-15


def smooth_image(img: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) uint8 or float → (H, W, C) float64: ``img_as_float64`` then skimage's Gaussian, bit for bit."""
    h, w, c = img.shape
    src, scale = _source(img)
    out = np.empty((h, w * c), dtype=np.float64)
    k.smooth_into(src, c, scale, _kernel(sigma), out)
    if img.dtype != np.uint8 and not np.isfinite(out).all():
        raise ValueError(_OVERFLOW)
    return out.reshape(h, w, c)


_OVERFLOW = "image values too large: the Gaussian smoothing overflows"
_IDENTITY = np.ones(1, dtype=np.float64)


def _kernel(sigma: float) -> np.ndarray:
    # scipy leaves an axis alone for sigma <= 1e-15; a one-tap kernel of 1.0 changes no value either.
    return gaussian_kernel(sigma) if sigma > _SCIPY_MIN_SIGMA else _IDENTITY


def _source(img: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W*C) rows to smooth and the factor that makes them skimage's ``img_as_float64``: uint8 as it is
    with 1 / 255 (skimage multiplies by 1/255, not divides), anything else converted once, with 1.0."""
    h, w, c = img.shape
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img).reshape(h, w * c), 1.0 / 255.0
    return skimage_float64(img).reshape(h, w * c), 1.0


class _Scratch(threading.local):
    """Per-thread buffers reused across calls: fresh multi-MB arrays would cost more in page faults than
    the segmentation itself. Images above ``KEEP_PIXELS`` get private buffers so memory stays bounded."""

    KEEP_PIXELS = 4_000_000

    def __init__(self) -> None:
        self.pixels = 0
        self.channels = 0
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, n: int, c: int) -> dict[str, np.ndarray]:
        if n * max(c, 3) > 3 * self.KEEP_PIXELS:
            return _allocate(n, c)
        if n > self.pixels or c > self.channels:
            self.pixels = max(n, min(2 * self.pixels, self.KEEP_PIXELS))
            self.channels = max(c, self.channels)
            self.buffers = _allocate(self.pixels, self.channels)
        return self.buffers


def _allocate(n: int, c: int) -> dict[str, np.ndarray]:
    e = 4 * n
    return {
        "weights": np.empty(e, np.float64),
        "packed": np.empty(e, np.uint64),
        "tmp": np.empty(e, np.uint64),
        "rejected": np.empty(e, np.uint64),
        "forest": np.empty(n, np.int64),
        "mark": np.empty(n, np.int32),
    }


_SCRATCH = _Scratch()


def felzenszwalb_many(
    image: np.ndarray, params: Sequence[tuple[float, float, int]], *, channel_axis: int | None = -1
) -> list[np.ndarray]:
    """Exact FH segmentations of one image for several ``(scale, sigma, min_size)``: ``felzenszwalb(image,
    *p)`` for each ``p``, identical label maps, with the input checked and converted once and, for the
    parameter sets that share a sigma, the smoothed, weighted and sorted edge graph built once (only the
    merging runs per parameter set; it is about half of the time at 500 px).

    Returns one (H, W) int32 label map per parameter set, in order.
    """
    checked = [_check_params(*p) for p in params]
    img = skimage_channels(image, channel_axis)
    if img.shape[0] * img.shape[1] > k.MAX_PIXELS:
        raise ValueError(f"image of {img.shape[0]}x{img.shape[1]} pixels exceeds the {k.MAX_PIXELS} pixel limit")
    out: list[np.ndarray | None] = [None] * len(checked)
    for sigma in dict.fromkeys(p[1] for p in checked):
        graph = _sorted_graph(img, sigma)
        for i, (scale, s, min_size) in enumerate(checked):
            if s == sigma:
                out[i] = _merge(graph, scale, min_size)
    return [labels for labels in out if labels is not None]


def _felzenszwalb_exact(img: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    """Exact FH of an (H, W, C) uint8 or skimage-kind array (see ``skimage_channels``)."""
    return _merge(_sorted_graph(img, sigma), scale, min_size)


def _sorted_graph(img: np.ndarray, sigma: float) -> tuple:
    """The image's 8-neighbour graph in processing order: (h, w, edge words, weights by edge id, id bits,
    key shift, scratch buffers) (see _fh_sort), in this thread's scratch buffers (valid until the next call)."""
    h, w, c = img.shape
    n, e = h * w, k.n_edges(h, w)
    b = _SCRATCH.get(n, c)
    src, scale = _source(img)
    weights, packed = b["weights"][: 4 * n], b["packed"][:e]
    id_bits = k.id_bits_for(n)
    # Keys of weights below 2 (every image in [0, 1] with up to 3 channels) have 59 bits before truncation.
    shift = max(0, 59 - (64 - id_bits))
    top_shift = max(0, 59 - shift - _fh_sort.DIGIT_BITS)
    top = np.empty(1 << _fh_sort.DIGIT_BITS, np.int64)
    status = k.smooth_edges(
        src, c, scale, _kernel(sigma), img.dtype != np.uint8, weights, packed, top, id_bits, shift, top_shift
    )
    if status == k.OVERFLOW:
        # inf - inf would make NaN edge weights, which skimage sorts last and we cannot order exactly.
        raise ValueError(_OVERFLOW)
    if status == k.LONG_KEYS:
        key_bits = _fh_sort.key_bits_of(k.max_weight(weights, h, w))
        shift = max(0, key_bits - (64 - id_bits))
        top_shift = max(0, key_bits - shift - _fh_sort.DIGIT_BITS)
        _fh_sort.pack_keys(weights, h, w, packed, top, id_bits, shift, top_shift)
    packed = _fh_sort.sort_edges(packed, b["tmp"][:e], top, top_shift, id_bits, weights)
    return h, w, packed, weights, id_bits, shift, b


def _merge(graph: tuple, scale: float, min_size: int) -> np.ndarray:
    h, w, packed, weights, id_bits, shift, b = graph
    n, e = h * w, packed.size
    labels = np.empty(n, np.int32)
    # skimage rescales scale to its [0, 1] float image: scale / 255.
    args = (weights, id_bits, shift, h, w, scale / 255.0, min_size)
    scratch = (b["forest"][:n], b["rejected"][:e], b["mark"][:n])
    if not segment_graph(packed, *args, True, *scratch, labels):
        # Equal weights met where their order matters: replay skimage's own order (numpy's argsort of its
        # cost array), so that ties are broken exactly as skimage breaks them.
        segment_graph(_skimage_order(weights, h, w, id_bits, shift), *args, False, *scratch, labels)
    return labels.reshape(h, w)


def _skimage_order(weights: np.ndarray, h: int, w: int, id_bits: int, shift: int) -> np.ndarray:
    """Edge words (see _fh_sort) in the order ``np.argsort`` gives skimage's cost array (right, down,
    down-right, up-right edges, each block in raster order)."""
    p = np.arange(h * w, dtype=np.uint64).reshape(h, w)
    blocks = [4 * p[:, :-1], 4 * p[:-1, :] + 1, 4 * p[:-1, :-1] + 2, 4 * p[:-1, :-1] + 3]
    ids = np.concatenate([block.ravel() for block in blocks])
    ids = ids[np.argsort(weights[ids])]
    bits = weights[ids].view(np.uint64)
    base = _fh_sort.BASE
    keys = np.where(bits > base, (bits - base) >> np.uint64(shift), np.uint64(0))
    return np.ascontiguousarray((keys << np.uint64(id_bits)) | ids)


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
