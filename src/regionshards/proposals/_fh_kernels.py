"""numba kernels of the exact Felzenszwalb–Huttenlocher segmentation (see fh.py for the contract).

Smoothing, edge weights and the exact sort; the merging is in ``_fh_merge.py``. Every floating-point
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

MAX_PIXELS = 1 << 30  # edge ids must fit in 32 bits
DIGIT_BITS = 10  # radix 1024: counts and write positions stay in L1
# Sort keys: float64 bits >> 29 (sign, exponent, 23 mantissa bits), minus the key of 2**-126, so weights in
# [0, 2) -- every 3-channel image in [0, 1] -- need 30 bits: three 10-bit radix passes. Truncation is
# monotone, so ties in the key are finished by the full weight.
_KEY_SHIFT = np.uint64(29)
_KEY_BASE = np.uint64(0x381 << 23)


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
def smooth_rows_u8(src: np.ndarray, scale: float, kernel: np.ndarray, t: np.ndarray) -> None:
    """``smooth_rows`` of ``src * scale`` for an (H, W*C) uint8 image: skimage's ``img_as_float64`` is
    ``x * (1 / 255)``, and converting inside the taps vectorises (a table lookup would not)."""
    h, wc = src.shape
    r = kernel.size - 1
    for y in range(h):
        for i in range(wc):
            t[y, i] = (src[y, i] * scale) * kernel[0]
        for k in range(r, 0, -1):
            above = _reflect(y - k, h)
            below = _reflect(y + k, h)
            wk = kernel[k]
            for i in range(wc):
                t[y, i] += (src[above, i] * scale + src[below, i] * scale) * wk


@numba.njit(cache=True, nogil=True)
def smooth_rows(src: np.ndarray, kernel: np.ndarray, t: np.ndarray) -> None:
    """First (axis 0) pass of scipy's Gaussian: (H, W*C) float64 ``src`` → (H, W*C) float64 ``t``.

    scipy's symmetric 1-D correlation computes ``x[i] * w0`` and then adds ``(x[i - k] + x[i + k]) * w[k]``
    for k from the radius down to 1; "reflect" mirrors about the half pixel. The loops run along contiguous
    rows so they vectorise; the per-element order of operations stays scipy's.
    """
    h, wc = src.shape
    r = kernel.size - 1
    for y in range(h):
        for i in range(wc):
            t[y, i] = src[y, i] * kernel[0]
        for k in range(r, 0, -1):
            above = _reflect(y - k, h)
            below = _reflect(y + k, h)
            wk = kernel[k]
            for i in range(wc):
                t[y, i] += (src[above, i] + src[below, i]) * wk


@numba.njit(cache=True, nogil=True)
def smooth_columns(t: np.ndarray, c: int, kernel: np.ndarray, out: np.ndarray) -> None:
    """Second (axis 1) pass of scipy's Gaussian: (H, W*C) float64 ``t`` → ``out``, channels interleaved."""
    h, wc = t.shape
    w = wc // c
    r = kernel.size - 1
    line = np.empty((w + 2 * r) * c, dtype=np.float64)
    for y in range(h):
        for i in range(wc):
            line[r * c + i] = t[y, i]
        for x in range(-r, 0):
            xs = _reflect(x, w)
            for ch in range(c):
                line[(x + r) * c + ch] = t[y, xs * c + ch]
        for x in range(w, w + r):
            xs = _reflect(x, w)
            for ch in range(c):
                line[(x + r) * c + ch] = t[y, xs * c + ch]
        for i in range(wc):
            out[y, i] = line[i + r * c] * kernel[0]
        for k in range(r, 0, -1):
            wk = kernel[k]
            lo = (r - k) * c
            hi = (r + k) * c
            for i in range(wc):
                out[y, i] += (line[lo + i] + line[hi + i]) * wk


@numba.njit(cache=True, nogil=True, inline="always")
def _dist3(img: np.ndarray, a: int, b: int) -> float:
    d0 = img[a] - img[b]
    d1 = img[a + 1] - img[b + 1]
    d2 = img[a + 2] - img[b + 2]
    return np.sqrt((d0 * d0 + d1 * d1) + d2 * d2)


@numba.njit(cache=True, nogil=True, inline="always")
def _dist_short(img: np.ndarray, a: int, b: int, c: int) -> float:
    d = img[a] - img[b]
    s = d * d
    for k in range(1, c):
        d = img[a + k] - img[b + k]
        s = s + d * d
    return np.sqrt(s)


@numba.njit(cache=True, nogil=True)
def _dist_pairwise(img: np.ndarray, a: int, b: int, c: int, r: np.ndarray) -> float:
    # numpy's pairwise summation of a row of 8 to 128 elements: 8 accumulators, combined as a tree.
    for j in range(8):
        d = img[a + j] - img[b + j]
        r[j] = d * d
    i = 8
    while i < c - (c % 8):
        for j in range(8):
            d = img[a + i + j] - img[b + i + j]
            r[j] = r[j] + d * d
        i += 8
    s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < c:
        d = img[a + i] - img[b + i]
        s = s + d * d
        i += 1
    return np.sqrt(s)


@numba.njit(cache=True, nogil=True, inline="always")
def _dist(img: np.ndarray, a: int, b: int, c: int, r: np.ndarray) -> float:
    # sqrt(np.sum((x_a - x_b) ** 2, axis=-1)) as numpy computes it: a plain left-to-right sum below 8
    # channels, its 8-accumulator pairwise sum from 8 to 128.
    if c < 8:
        return _dist_short(img, a, b, c)
    return _dist_pairwise(img, a, b, c, r)


@numba.njit(cache=True, nogil=True)
def _edges3(smooth: np.ndarray, h: int, w: int, c: int, weights: np.ndarray, packed: np.ndarray,
            counts: np.ndarray, id_bits: int) -> bool:
    # The 3-channel case: a row's weights first, direction by direction in loops that vectorise (the
    # square roots dominate), then keys and histograms in edge-id order.
    counts[:] = 0
    shift = np.uint64(id_bits)
    m = np.uint64((1 << DIGIT_BITS) - 1)
    d1 = np.uint64(DIGIT_BITS)
    d2 = np.uint64(2 * DIGIT_BITS)
    row = np.zeros((4, w), dtype=np.float64)
    any_key = np.uint64(0)
    e = 0
    for y in range(h):
        a0 = 3 * y * w
        b0 = a0 + 3 * w
        for x in range(w - 1):
            row[0, x] = _dist3(smooth, a0 + 3 * x + 3, a0 + 3 * x)
        n_dirs = 1
        if y + 1 < h:
            n_dirs = 4
            for x in range(w):
                row[1, x] = _dist3(smooth, b0 + 3 * x, a0 + 3 * x)
            for x in range(w - 1):
                row[2, x] = _dist3(smooth, b0 + 3 * x + 3, a0 + 3 * x)
            for x in range(w - 1):
                row[3, x] = _dist3(smooth, b0 + 3 * x, a0 + 3 * x + 3)
        for x in range(w):
            i = 4 * (y * w + x)
            for d in range(n_dirs if x + 1 < w else min(n_dirs, 2)):
                if x + 1 == w and d == 0:
                    continue
                v = row[d, x]
                weights[i + d] = v
                key = _key(np.float64(v).view(np.uint64))
                any_key |= key
                counts[0, key & m] += 1
                counts[1, (key >> d1) & m] += 1
                counts[2, (key >> d2) & m] += 1
                packed[e] = (key << shift) | np.uint64(i + d)
                e += 1
    return any_key < np.uint64(1 << (3 * DIGIT_BITS))


@numba.njit(cache=True, nogil=True)
def _edges_any(smooth: np.ndarray, h: int, w: int, c: int, weights: np.ndarray, packed: np.ndarray,
               counts: np.ndarray, id_bits: int) -> bool:
    counts[:] = 0
    shift = np.uint64(id_bits)
    m = np.uint64((1 << DIGIT_BITS) - 1)
    d1 = np.uint64(DIGIT_BITS)
    d2 = np.uint64(2 * DIGIT_BITS)
    r = np.empty(8, dtype=np.float64)
    any_key = np.uint64(0)
    e = 0
    for y in range(h):
        for x in range(w):
            p = y * w + x
            a = c * p
            below = a + c * w
            i = 4 * p
            for d in range(4):
                if d == 0:
                    if x + 1 == w:
                        continue
                    v = _dist(smooth, a + c, a, c, r)
                elif y + 1 == h:
                    break
                elif d == 1:
                    v = _dist(smooth, below, a, c, r)
                elif x + 1 == w:
                    break
                elif d == 2:
                    v = _dist(smooth, below + c, a, c, r)
                else:
                    v = _dist(smooth, below, a + c, c, r)
                weights[i + d] = v
                key = _key(np.float64(v).view(np.uint64))
                any_key |= key
                counts[0, key & m] += 1
                counts[1, (key >> d1) & m] += 1
                counts[2, (key >> d2) & m] += 1
                packed[e] = (key << shift) | np.uint64(i + d)
                e += 1
    return any_key < np.uint64(1 << (3 * DIGIT_BITS))


def edge_weights(
    smooth: np.ndarray, h: int, w: int, c: int, weights: np.ndarray, packed: np.ndarray, counts: np.ndarray,
    id_bits: int,
) -> bool:
    """Weights of the 8-neighbour graph of an (H*W*C,) float64 image into ``weights[4 * pixel + direction]``
    (entries of edges off the border are left as they were), and in the same pass ``pack_keys``' work for
    ``drop = 0`` and three 10-bit digits (``counts`` (3, 1024)). Returns False when some key needs more than
    30 bits (weights of 2 or more: values outside [0, 1] or more than 3 channels); then call ``pack_keys``.
    """
    return (_edges3 if c == 3 else _edges_any)(smooth, h, w, c, weights, packed, counts, id_bits)


def max_weight(weights: np.ndarray, h: int, w: int) -> float:
    """Largest edge weight (the unused entries of ``weights`` at the image border skipped)."""
    wv = weights.reshape(h, w, 4)
    top = float(wv[:, :-1, 0].max(initial=0.0))
    if h > 1:
        top = max(top, float(wv[:-1, :, 1].max(initial=0.0)), float(wv[:-1, :-1, 2:].max(initial=0.0)))
    return top


@numba.njit(cache=True, nogil=True, inline="always")
def _key(bits: np.uint64) -> np.uint64:
    k = bits >> _KEY_SHIFT
    return k - _KEY_BASE if k > _KEY_BASE else np.uint64(0)


def key_of(weight: float) -> int:
    """The sort key of a non-negative weight (see ``_KEY_SHIFT``)."""
    k = int(np.float64(weight).view(np.uint64)) >> 29
    return max(0, k - (0x381 << 23))


@numba.njit(cache=True, nogil=True, inline="always")
def _pack_one(bits: np.ndarray, i: int, drop: np.uint64, shift: np.uint64, counts: np.ndarray) -> np.uint64:
    key = _key(bits[i]) >> drop
    mask = np.uint64((1 << DIGIT_BITS) - 1)
    for q in range(counts.shape[0]):
        counts[q, (key >> np.uint64(DIGIT_BITS * q)) & mask] += 1
    return (key << shift) | np.uint64(i)


@numba.njit(cache=True, nogil=True)
def pack_keys(
    weights: np.ndarray, h: int, w: int, packed: np.ndarray, counts: np.ndarray, id_bits: int, drop: int
) -> None:
    """``packed[e] = (key >> drop) << id_bits | id`` for every edge in id order, and each radix digit's
    histogram in ``counts`` (passes, 1024), zeroed here."""
    counts[:] = 0
    bits = weights.view(np.uint64)
    shift = np.uint64(id_bits)
    dshift = np.uint64(drop)
    e = 0
    for y in range(h - 1):
        for x in range(w - 1):
            p = 4 * (y * w + x)
            for d in range(4):
                packed[e + d] = _pack_one(bits, p + d, dshift, shift, counts)
            e += 4
        packed[e] = _pack_one(bits, 4 * (y * w + w - 1) + 1, dshift, shift, counts)
        e += 1
    for x in range(w - 1):
        packed[e] = _pack_one(bits, 4 * ((h - 1) * w + x), dshift, shift, counts)
        e += 1


@numba.njit(cache=True, nogil=True)
def sort_edges(
    packed: np.ndarray,
    tmp: np.ndarray,
    counts: np.ndarray,
    id_bits: int,
    drop: int,
    weights: np.ndarray,
    order: np.ndarray,
    sorted_w: np.ndarray,
) -> None:
    """Exact stable sort of edges by float64 weight (ties by edge id): ``order`` (E,) uint32 edge ids and
    ``sorted_w`` (E,) float64 their weights, in processing order.

    An LSD radix sort (10-bit digits; keys and ids travel together so that every pass streams) orders the
    packed keys; edges whose keys tie but whose weights
    differ in the truncated bits are then put in order by full weight, stably. Nothing is quantised.
    ``packed`` and ``tmp`` are overwritten.
    """
    n = packed.size
    radix = 1 << DIGIT_BITS
    mask = np.uint64(radix - 1)
    id_mask = np.uint64((1 << id_bits) - 1)
    src = packed
    start = np.empty(radix, dtype=np.int64)
    for q in range(counts.shape[0]):
        shift = np.uint64(id_bits + DIGIT_BITS * q)
        if n == 0 or counts[q, (src[0] >> shift) & mask] == n:
            continue  # one bucket: this digit is the same everywhere
        total = 0
        for b in range(radix):
            start[b] = total
            total += counts[q, b]
        for i in range(n):
            v = src[i]
            b = (v >> shift) & mask
            j = start[b]
            tmp[j] = v
            start[b] = j + 1
        src, tmp = tmp, src
    # The weights are gathered here, in a loop of independent loads, rather than in the merge loop, where
    # they would queue behind its dependent union-find loads.
    for i in range(n):
        ident = src[i] & id_mask
        order[i] = np.uint32(ident)
        sorted_w[i] = weights[ident]
    # Out-of-order neighbours can only sit inside a run of equal keys: sort such runs stably by weight.
    bits = sorted_w.view(np.uint64)
    dshift = np.uint64(drop)
    i = 1
    while i < n:
        if sorted_w[i] >= sorted_w[i - 1]:
            i += 1
            continue
        key = _key(bits[i]) >> dshift
        lo = i - 1
        while lo > 0 and (_key(bits[lo - 1]) >> dshift) == key:
            lo -= 1
        end = i + 1
        while end < n and (_key(bits[end]) >> dshift) == key:
            end += 1
        _sort_run(order, sorted_w, lo, end)
        i = end


@numba.njit(cache=True, nogil=True)
def _sort_run(order: np.ndarray, sorted_w: np.ndarray, lo: int, hi: int) -> None:
    if hi - lo > 32:
        perm = np.argsort(sorted_w[lo:hi], kind="mergesort")
        run_o = order[lo:hi].copy()
        run_w = sorted_w[lo:hi].copy()
        for a in range(hi - lo):
            order[lo + a] = run_o[perm[a]]
            sorted_w[lo + a] = run_w[perm[a]]
        return
    for a in range(lo + 1, hi):
        e = order[a]
        key = sorted_w[a]
        b = a - 1
        while b >= lo and sorted_w[b] > key:
            order[b + 1] = order[b]
            sorted_w[b + 1] = sorted_w[b]
            b -= 1
        order[b + 1] = e
        sorted_w[b + 1] = key
