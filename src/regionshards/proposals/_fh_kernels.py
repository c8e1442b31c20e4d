"""numba kernels of the exact Felzenszwalb–Huttenlocher segmentation (see fh.py for the contract).

Every floating-point operation mirrors skimage's ``_felzenszwalb_cy.pyx`` operation for operation, so that the
label maps are identical: float64 edge weights summed channel by channel, an exact sort, float32 inner costs
(skimage keeps them in C floats), a strict ``<`` test, and size and internal difference carried by each root.

Edges are identified as ``4 * pixel + direction`` (0 right, 1 down, 2 down-right, 3 up-right from the pixel
below), so that the pixel pair follows from shifts instead of divisions on the hot loop. Ties between equal
weights are processed in that id order; skimage's own order among ties is whatever its unstable quicksort
gives, and ties only change the result in rare float32-rounding corner cases (none seen on real photos).
"""

from __future__ import annotations

import numba
import numpy as np

MAX_PIXELS = 1 << 30  # edge ids must fit in 32 bits


@numba.njit(cache=True, nogil=True, inline="always")
def _dist(img: np.ndarray, y0: int, x0: int, y1: int, x1: int) -> float:
    # numpy sums a short last axis left to right starting from the first element.
    d = img[y0, x0, 0] - img[y1, x1, 0]
    s = d * d
    for k in range(1, img.shape[2]):
        d = img[y0, x0, k] - img[y1, x1, k]
        s = s + d * d
    return np.sqrt(s)


def n_edges(h: int, w: int) -> int:
    """Number of edges of the 8-neighbour graph (4 forward edges per pixel, fewer on the border)."""
    return h * (w - 1) + (h - 1) * w + 2 * (h - 1) * (w - 1)


@numba.njit(cache=True, nogil=True)
def gaussian_smooth(rgb: np.ndarray, lut: np.ndarray, kernel: np.ndarray, tmp: np.ndarray, out: np.ndarray) -> None:
    """``scipy.ndimage.gaussian_filter(lut[rgb], (s, s, 0), mode="reflect")`` bit for bit, into ``out``.

    ``kernel`` holds scipy's weights (centre first, then radius 1, 2, ...). scipy's symmetric 1-D correlation
    computes ``x[i] * w0`` and then adds ``(x[i - k] + x[i + k]) * w[k]`` for k from the radius down to 1;
    axis 0 is filtered first, into float64, then axis 1. "reflect" mirrors about the half pixel.
    Both passes run along contiguous rows so the inner loops vectorise; the per-element order of operations
    stays scipy's.
    """
    h, w, c = rgb.shape
    r = kernel.size - 1
    wc = w * c
    src = rgb.reshape(h, wc)
    t = tmp.reshape(h, wc)
    for y in range(h):
        for i in range(wc):
            t[y, i] = lut[src[y, i]] * kernel[0]
        for k in range(r, 0, -1):
            above = _reflect(y - k, h)
            below = _reflect(y + k, h)
            wk = kernel[k]
            for i in range(wc):
                t[y, i] += (lut[src[above, i]] + lut[src[below, i]]) * wk
    line = np.empty((w + 2 * r) * c, dtype=np.float64)
    o = out.reshape(h, wc)
    for y in range(h):
        for x in range(-r, w + r):
            xs = _reflect(x, w)
            for ch in range(c):
                line[(x + r) * c + ch] = t[y, xs * c + ch]
        for i in range(wc):
            o[y, i] = line[i + r * c] * kernel[0]
        for k in range(r, 0, -1):
            wk = kernel[k]
            lo = (r - k) * c
            hi = (r + k) * c
            for i in range(wc):
                o[y, i] += (line[lo + i] + line[hi + i]) * wk


@numba.njit(cache=True, nogil=True, inline="always")
def _reflect(i: int, n: int) -> int:
    if 0 <= i < n:
        return i
    period = 2 * n
    m = i % period
    if m < 0:
        m += period
    return m if m < n else period - 1 - m


@numba.njit(cache=True, nogil=True)
def edge_weights(smooth: np.ndarray, packed: np.ndarray, weights: np.ndarray, id_bits: int) -> None:
    """Weights of the 8-neighbour graph of an (H, W, C) float64 image, into the given buffers.

    ``packed`` (E,) uint64 receives each weight's IEEE-754 pattern with its low ``id_bits`` bits replaced by
    the edge id (the sort key); ``weights`` (4*H*W,) float64 the weight at each edge id (other entries unused).
    """
    h, w = smooth.shape[0], smooth.shape[1]
    bits = weights.view(np.uint64)
    shift = np.uint64(id_bits)
    e = 0
    for y in range(h):
        for x in range(w):
            p = y * w + x
            if x + 1 < w:
                weights[4 * p] = _dist(smooth, y, x + 1, y, x)
            if y + 1 < h:
                weights[4 * p + 1] = _dist(smooth, y + 1, x, y, x)
                if x + 1 < w:
                    weights[4 * p + 2] = _dist(smooth, y + 1, x + 1, y, x)
                    weights[4 * p + 3] = _dist(smooth, y + 1, x, y, x + 1)
            for d in range(4):
                exists = (d == 0 and x + 1 < w) or (d == 1 and y + 1 < h) or (d >= 2 and x + 1 < w and y + 1 < h)
                if exists:
                    i = 4 * p + d
                    packed[e] = ((bits[i] >> shift) << shift) | np.uint64(i)
                    e += 1


def id_bits_for(n_pixels: int) -> int:
    """Bits needed for edge ids ``4 * pixel + direction`` of an image of ``n_pixels``."""
    return max(1, int(4 * n_pixels - 1).bit_length())


@numba.njit(cache=True, nogil=True)
def sort_edges(packed: np.ndarray, tmp: np.ndarray, weights: np.ndarray, order: np.ndarray, id_bits: int) -> None:
    """Exact stable sort of edges by float64 weight (ties by edge id) into ``order`` (E,) uint32.

    Non-negative floats order like their bit patterns. ``packed`` holds each weight's upper ``64 - id_bits``
    bits above its edge id; an LSD radix sort on those bits (11-bit digits; keys and ids travel together so
    that every pass streams) orders the edges by weight up to the dropped low bits. Edges whose kept bits tie
    but whose weights differ in the dropped bits (rare: a relative difference below 2**(id_bits - 52)) are
    then put in order by full weight. Nothing is quantised. ``packed`` and ``tmp`` are overwritten.
    """
    n = packed.size
    radix = 2048
    mask = np.uint64(radix - 1)
    n_passes = (64 - id_bits + 10) // 11
    counts = np.zeros((n_passes, radix), dtype=np.int64)
    for i in range(n):
        v = packed[i]
        for p in range(n_passes):
            counts[p, (v >> np.uint64(id_bits + 11 * p)) & mask] += 1
    src = packed
    start = np.empty(radix, dtype=np.int64)
    for p in range(n_passes):
        shift = np.uint64(id_bits + 11 * p)
        if n == 0 or counts[p, (src[0] >> shift) & mask] == n:
            continue
        total = 0
        for b in range(radix):
            start[b] = total
            total += counts[p, b]
        for i in range(n):
            v = src[i]
            b = (v >> shift) & mask
            j = start[b]
            tmp[j] = v
            start[b] = j + 1
        src, tmp = tmp, src
    id_mask = np.uint64((1 << id_bits) - 1)
    key_shift = np.uint64(id_bits)
    for i in range(n):
        order[i] = np.uint32(src[i] & id_mask)
    # Runs of equal kept bits are finished by full weight, stably: insertion sort for short runs (a run of
    # equal weights, like the zero-weight edges of flat areas, costs one test per edge), merge sort for long
    # ones (smooth gradients give long runs of distinct weights).
    i = 0
    while i < n:
        hi = src[i] >> key_shift
        j = i + 1
        while j < n and (src[j] >> key_shift) == hi:
            j += 1
        if j - i > 32:
            run = order[i:j].copy()
            keys = np.empty(j - i, dtype=np.float64)
            for a in range(j - i):
                keys[a] = weights[run[a]]
            perm = np.argsort(keys, kind="mergesort")
            for a in range(j - i):
                order[i + a] = run[perm[a]]
        else:
            for a in range(i + 1, j):
                e = order[a]
                key = weights[e]
                b = a - 1
                while b >= i and weights[order[b]] > key:
                    order[b + 1] = order[b]
                    b -= 1
                order[b + 1] = e
        i = j


@numba.njit(cache=True, nogil=True, inline="always")
def _pixels(e: int, first: np.ndarray, second: np.ndarray) -> tuple[int, int]:
    # Table lookups instead of a branch on the direction, which the sorted order makes unpredictable.
    p = e >> 2
    d = e & 3
    return p + first[d], p + second[d]


@numba.njit(cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@numba.njit(cache=True, nogil=True)
def segment_graph(
    order: np.ndarray,
    weights: np.ndarray,
    h: int,
    w: int,
    scale: float,
    min_size: int,
    parent: np.ndarray,
    size: np.ndarray,
    cint: np.ndarray,
    rejected: np.ndarray,
    root_label: np.ndarray,
) -> np.ndarray:
    """Greedy FH merging over edges in ``order``, then the min-size pass; returns raster-order dense labels.

    ``parent``, ``size``, ``root_label`` (N,) int32, ``cint`` (N,) float64 (here: each root's threshold) and
    ``rejected`` (E,) uint32 are scratch buffers (contents ignored).
    """
    n = h * w
    first = np.array([1, w, w + 1, w], dtype=np.int64)
    second = np.array([0, 0, 0, 1], dtype=np.int64)
    # Each root's merge threshold float32(cint + scale / size) changes only when the root absorbs another
    # component, so it is kept per root instead of being recomputed (two divisions) for every edge; the
    # values are the ones skimage computes.
    threshold = np.float32(scale / 1.0)
    for i in range(n):
        parent[i] = i
        size[i] = 1
        cint[i] = threshold
        root_label[i] = -1
    # Only edges the main pass rejected can join two components in the min-size pass: accepted edges and
    # edges already inside a component stay inside one, since components only grow.
    n_rejected = 0
    for i in range(order.size):
        e = np.int64(order[i])
        p, q = _pixels(e, first, second)
        a = _find(parent, p)
        b = _find(parent, q)
        if a == b:
            continue
        cost = weights[e]
        if cost < np.float64(min(np.float32(cint[a]), np.float32(cint[b]))):
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            cint[a] = np.float32(cost + scale / size[a])
        else:
            rejected[n_rejected] = e
            n_rejected += 1
    for i in range(n_rejected):
        p, q = _pixels(np.int64(rejected[i]), first, second)
        a = _find(parent, p)
        b = _find(parent, q)
        if a == b:
            continue
        if size[a] < min_size or size[b] < min_size:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
    labels = np.empty(n, dtype=np.int32)
    next_label = 0
    for i in range(n):
        r = _find(parent, i)
        if root_label[r] < 0:
            root_label[r] = next_label
            next_label += 1
        labels[i] = root_label[r]
    return labels.reshape(h, w)
