"""numba kernels of the exact Felzenszwalb–Huttenlocher segmentation (see fh.py for the contract).

Smoothing and edge weights; the exact sort is in ``_fh_sort.py``, the merging in ``_fh_merge.py``. Every floating-point
operation mirrors skimage's ``_felzenszwalb_cy.pyx`` operation for operation, so that the label maps are
identical: scipy's Gaussian, float64 edge weights summed over channels in numpy's order, an exact sort.

Edges are identified as ``4 * pixel + direction`` (0 right, 1 down, 2 down-right, 3 up-right from the pixel
below), so that the pixel pair follows from shifts instead of divisions on the hot loop. Ties between exactly
equal weights are sorted in that id order; ``_fh_merge.segment_graph`` reports whether a tie could have
changed the result, in which case fh.py replays skimage's own order (see there).
"""

from __future__ import annotations

import numba
import numpy as np

from ._fh_sort import DIGIT_BITS, key

MAX_PIXELS = 1 << 30  # edge ids must fit in 32 bits


def n_edges(h: int, w: int) -> int:
    """Number of edges of the 8-neighbour graph (4 forward edges per pixel, fewer on the border)."""
    return h * (w - 1) + (h - 1) * w + 2 * (h - 1) * (w - 1)


def id_bits_for(n_pixels: int) -> int:
    """Bits needed for edge ids ``4 * pixel + direction`` of an image of ``n_pixels``."""
    return max(1, int(4 * n_pixels - 1).bit_length())


@numba.njit(cache=True, nogil=True, inline="always")
def _reflect(i: int, n: int) -> int:
    # scipy's "reflect" (d c b a | a b c d | d c b a), repeated for kernels longer than the line.
    if 0 <= i < n:
        return i
    period = 2 * n
    m = i % period
    if m < 0:
        m += period
    return m if m < n else period - 1 - m


@numba.njit(cache=True, nogil=True)
def smooth_row(src: np.ndarray, y: int, c: int, scale: float, kernel: np.ndarray, line: np.ndarray,
               out: np.ndarray) -> None:
    """Row ``y`` of scipy's Gaussian (reflect mode) of ``src * scale``: (H, W*C) uint8 or float64 ``src``
    → (W*C,) float64 ``out``; ``line`` is a ((W + 2r) * C,) scratch row.

    Both separable passes for one output row, so no smoothed image is stored: the axis-0 pass computes
    ``x[y] * w0`` and then adds ``(x[y - k] + x[y + k]) * w[k]`` for k from the radius down to 1, as scipy's
    symmetric correlation does, into the middle of ``line``; the axis-1 pass does the same along the row,
    channels interleaved. skimage's ``img_as_float64`` of uint8 is ``x * (1 / 255)``: converting inside
    the taps vectorises, and for float input ``scale`` is 1.0, which changes no value.
    """
    h, wc = src.shape
    w = wc // c
    r = kernel.size - 1
    # Loops index row slices with the loop counter alone, so that LLVM can drop numba's negative-index
    # wraparound and vectorise.
    m = line[r * c : r * c + wc]
    row = src[y]
    for i in range(wc):
        m[i] = (row[i] * scale) * kernel[0]
    for k in range(r, 0, -1):
        sa = src[_reflect(y - k, h)]
        sb = src[_reflect(y + k, h)]
        wk = kernel[k]
        for i in range(wc):
            m[i] += (sa[i] * scale + sb[i] * scale) * wk
    for x in range(-r, 0):
        xs = _reflect(x, w)
        for ch in range(c):
            line[(x + r) * c + ch] = m[xs * c + ch]
    for x in range(w, w + r):
        xs = _reflect(x, w)
        for ch in range(c):
            line[(x + r) * c + ch] = m[xs * c + ch]
    for i in range(wc):
        out[i] = m[i] * kernel[0]
    for k in range(r, 0, -1):
        wk = kernel[k]
        la = line[(r - k) * c : (r - k) * c + wc]
        lb = line[(r + k) * c : (r + k) * c + wc]
        for i in range(wc):
            out[i] += (la[i] + lb[i]) * wk


@numba.njit(cache=True, nogil=True)
def smooth_into(src: np.ndarray, c: int, scale: float, kernel: np.ndarray, out: np.ndarray) -> None:
    """The whole smoothed image: ``smooth_row`` for every row of ``src`` into ``out`` (H, W*C) float64."""
    line = np.empty(src.shape[1] + 2 * (kernel.size - 1) * c, dtype=np.float64)
    for y in range(src.shape[0]):
        smooth_row(src, y, c, scale, kernel, line, out[y])


@numba.njit(cache=True, nogil=True, inline="always")
def _dist3(p: np.ndarray, a: int, q: np.ndarray, b: int) -> float:
    d0 = p[a] - q[b]
    d1 = p[a + 1] - q[b + 1]
    d2 = p[a + 2] - q[b + 2]
    return np.sqrt((d0 * d0 + d1 * d1) + d2 * d2)


@numba.njit(cache=True, nogil=True, inline="always")
def _dist_short(p: np.ndarray, a: int, q: np.ndarray, b: int, c: int) -> float:
    d = p[a] - q[b]
    s = d * d
    for k in range(1, c):
        d = p[a + k] - q[b + k]
        s = s + d * d
    return np.sqrt(s)


@numba.njit(cache=True, nogil=True)
def _dist_pairwise(p: np.ndarray, a: int, q: np.ndarray, b: int, c: int, r: np.ndarray) -> float:
    # numpy's pairwise summation of a row of 8 to 128 elements: 8 accumulators, combined as a tree.
    for j in range(8):
        d = p[a + j] - q[b + j]
        r[j] = d * d
    i = 8
    while i < c - (c % 8):
        for j in range(8):
            d = p[a + i + j] - q[b + i + j]
            r[j] = r[j] + d * d
        i += 8
    s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < c:
        d = p[a + i] - q[b + i]
        s = s + d * d
        i += 1
    return np.sqrt(s)


@numba.njit(cache=True, nogil=True)
def _row_distances(cur: np.ndarray, nxt: np.ndarray, w: int, c: int, below: bool, dist: np.ndarray,
                   r: np.ndarray) -> None:
    """``dist[d, x]``: weights of row ``cur``'s edges to the right (d 0) and, with ``below``, down (1),
    down-right (2) and up-right from the pixel below (3), as ``sqrt(np.sum((x_a - x_b) ** 2, axis=-1))``:
    a plain left-to-right sum below 8 channels, numpy's 8-accumulator pairwise sum from 8 to 128. One
    direction per loop, so the 3-channel loops vectorise (the square roots dominate)."""
    if c == 3:
        cur1 = cur[3:]  # the pixel to the right, as a slice (see smooth_row)
        nxt1 = nxt[3:]
        d0, d1, d2, d3 = dist[0], dist[1], dist[2], dist[3]
        for x in range(w - 1):
            d0[x] = _dist3(cur1, 3 * x, cur, 3 * x)
        if below:
            for x in range(w):
                d1[x] = _dist3(nxt, 3 * x, cur, 3 * x)
            for x in range(w - 1):
                d2[x] = _dist3(nxt1, 3 * x, cur, 3 * x)
            for x in range(w - 1):
                d3[x] = _dist3(nxt, 3 * x, cur1, 3 * x)
        return
    for x in range(w - 1):
        dist[0, x] = _dist(cur, c * x + c, cur, c * x, c, r)
    if below:
        for x in range(w):
            dist[1, x] = _dist(nxt, c * x, cur, c * x, c, r)
        for x in range(w - 1):
            dist[2, x] = _dist(nxt, c * x + c, cur, c * x, c, r)
            dist[3, x] = _dist(nxt, c * x, cur, c * x + c, c, r)


@numba.njit(cache=True, nogil=True, inline="always")
def _dist(p: np.ndarray, a: int, q: np.ndarray, b: int, c: int, r: np.ndarray) -> float:
    if c < 8:
        return _dist_short(p, a, q, b, c)
    return _dist_pairwise(p, a, q, b, c, r)


@numba.njit(cache=True, nogil=True)
def _all_finite(v: np.ndarray) -> bool:
    for x in v:
        if not np.isfinite(x):
            return False
    return True


OK, LONG_KEYS, OVERFLOW = 0, 1, 2  # smooth_edges' results


@numba.njit(cache=True, nogil=True, inline="always")
def _emit(v: float, ident: int, e: int, sh: np.uint64, id_shift: np.uint64, ts: np.uint64, weights: np.ndarray,
          packed: np.ndarray, top: np.ndarray) -> np.uint64:
    weights[ident] = v
    k = key(np.float64(v).view(np.uint64), sh)
    top[(k >> ts) & np.uint64((1 << DIGIT_BITS) - 1)] += 1
    packed[e] = (k << id_shift) | np.uint64(ident)
    return k


@numba.njit(cache=True, nogil=True)
def smooth_edges(src: np.ndarray, c: int, scale: float, kernel: np.ndarray, check_finite: bool,
                 weights: np.ndarray, packed: np.ndarray, top: np.ndarray, id_bits: int, shift: int,
                 top_shift: int) -> int:
    """Smooth an (H, W*C) image (``smooth_row``) and weigh its 8-neighbour graph in one pass over the rows,
    keeping two smoothed rows instead of the smoothed image.

    Writes ``weights[id]`` (float64, ``id = 4 * pixel + direction``; entries of edges off the border are
    left as they were), and for every edge ``e`` in edge order (pixels in raster order, each pixel's
    directions 0..3 that stay inside the image) its word ``packed[e] = key << id_bits | id`` (``_fh_sort``:
    ``shift`` the key's truncation), and the histogram of ``key >> top_shift`` in ``top`` (1024,). Returns
    ``OK``; ``LONG_KEYS`` when some weight is 2 or more (values outside [0, 1] or more than 3 channels), so
    that the keys need more bits: ``weights`` is complete but ``packed`` and ``top`` must be rebuilt with
    ``_fh_sort.pack_keys``; ``OVERFLOW`` (with ``check_finite``) when the smoothing overflowed to infinity,
    whose edge weights could not be ordered exactly.
    """
    h, wc = src.shape
    w = wc // c
    line = np.empty(wc + 2 * (kernel.size - 1) * c, dtype=np.float64)
    rows = np.empty((2, wc), dtype=np.float64)
    dist = np.zeros((4, w), dtype=np.float64)
    r = np.empty(8, dtype=np.float64)
    id_shift = np.uint64(id_bits)
    sh = np.uint64(shift)
    ts = np.uint64(top_shift)
    # One histogram per direction: a pixel's four edges often fall in the same bin, and four counters
    # updated in turn do not wait for each other's stores.
    tops = np.zeros((4, 1 << DIGIT_BITS), dtype=np.int64)
    any_key = np.uint64(0)
    smooth_row(src, 0, c, scale, kernel, line, rows[0])
    if check_finite and not _all_finite(rows[0]):
        return OVERFLOW
    e = 0
    for y in range(h):
        below = y + 1 < h
        if below:
            smooth_row(src, y + 1, c, scale, kernel, line, rows[(y + 1) & 1])
            if check_finite and not _all_finite(rows[(y + 1) & 1]):
                return OVERFLOW
        _row_distances(rows[y & 1], rows[(y + 1) & 1], w, c, below, dist, r)
        i = 4 * y * w
        if below:
            for x in range(w - 1):
                for d in range(4):
                    any_key |= _emit(dist[d, x], i + d, e + d, sh, id_shift, ts, weights, packed, tops[d])
                i += 4
                e += 4
            any_key |= _emit(dist[1, w - 1], i + 1, e, sh, id_shift, ts, weights, packed, tops[1])
            e += 1
        else:
            for x in range(w - 1):
                any_key |= _emit(dist[0, x], i, e, sh, id_shift, ts, weights, packed, tops[0])
                i += 4
                e += 1
    for b in range(1 << DIGIT_BITS):
        top[b] = (tops[0, b] + tops[1, b]) + (tops[2, b] + tops[3, b])
    # Weights below 2 have keys of at most 59 - shift bits (exponents from 2**-126 to 2**0, 52 mantissa bits).
    return OK if any_key < np.uint64(1 << (59 - shift)) else LONG_KEYS


def max_weight(weights: np.ndarray, h: int, w: int) -> float:
    """Largest edge weight in ``weights`` (indexed by edge id; the unused entries at the border skipped)."""
    wv = weights.reshape(h, w, 4)
    top = float(wv[:, :-1, 0].max(initial=0.0))
    if h > 1:
        top = max(top, float(wv[:-1, :, 1].max(initial=0.0)), float(wv[:-1, :-1, 2:].max(initial=0.0)))
    return top
