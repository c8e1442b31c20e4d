"""numba kernels of the exact sort of the Felzenszwalb–Huttenlocher edges by weight (see fh.py).

Each edge is one 64-bit word ``key << id_bits | id`` (``id = 4 * pixel + direction``, see _fh_kernels.py)
with its float64 weight beside it in a second array, both in edge order. The sort is one most-significant-
digit pass over the whole graph (keys, ids and weights move together, so every pass streams and no weight is
ever gathered from a random place), then least-significant-digit passes inside each top-digit bucket, which
is small enough to stay in cache. The words are distinct (the ids are), so the result is the stable sort by
key with ties in id order; equal keys with different weights are then put in weight order.
"""

from __future__ import annotations

import numba
import numpy as np

DIGIT_BITS = 10  # radix 1024: counts and write positions stay in L1
# Sort keys: float64 bits >> 29 (sign, exponent, 23 mantissa bits), minus the key of 2**-126, so weights in
# [0, 2) -- every 3-channel image in [0, 1] -- need 30 bits: three 10-bit digits. Truncation is monotone,
# so ties in the key are finished by the full weight.
_KEY_SHIFT = np.uint64(29)
_KEY_BASE = np.uint64(0x381 << 23)
_SMALL_BUCKET = 48  # below this an insertion sort beats two radix passes and their 2 x 1024 counters


@numba.njit(cache=True, nogil=True, inline="always")
def key(bits: np.uint64) -> np.uint64:
    """Sort key of a non-negative float64 weight given as its bits."""
    k = bits >> _KEY_SHIFT
    return k - _KEY_BASE if k > _KEY_BASE else np.uint64(0)


def key_of(weight: float) -> int:
    """The sort key of a non-negative weight (see ``_KEY_SHIFT``)."""
    k = int(np.float64(weight).view(np.uint64)) >> 29
    return max(0, k - (0x381 << 23))


@numba.njit(cache=True, nogil=True, inline="always")
def _pack_one(bits: np.uint64, ident: int, drop: np.uint64, shift: np.uint64, top_shift: np.uint64,
              top: np.ndarray) -> np.uint64:
    k = key(bits) >> drop
    top[(k >> top_shift) & np.uint64((1 << DIGIT_BITS) - 1)] += 1
    return (k << shift) | np.uint64(ident)


@numba.njit(cache=True, nogil=True)
def pack_keys(wts: np.ndarray, h: int, w: int, packed: np.ndarray, top: np.ndarray, id_bits: int, drop: int,
              n_digits: int) -> None:
    """``packed[e] = (key(wts[e]) >> drop) << id_bits | id`` for every edge ``e`` in edge order, and the
    histogram of the top of ``n_digits`` 10-bit digits in ``top`` (1024,), zeroed here. For keys longer than
    the 30 bits ``_fh_kernels.smooth_edges`` packs (weights of 2 or more)."""
    top[:] = 0
    bits = wts.view(np.uint64)
    shift = np.uint64(id_bits)
    dshift = np.uint64(drop)
    tshift = np.uint64(DIGIT_BITS * (n_digits - 1))
    e = 0
    for y in range(h - 1):
        for x in range(w - 1):
            p = 4 * (y * w + x)
            for d in range(4):
                packed[e] = _pack_one(bits[e], p + d, dshift, shift, tshift, top)
                e += 1
        packed[e] = _pack_one(bits[e], 4 * (y * w + w - 1) + 1, dshift, shift, tshift, top)
        e += 1
    for x in range(w - 1):
        packed[e] = _pack_one(bits[e], 4 * ((h - 1) * w + x), dshift, shift, tshift, top)
        e += 1


@numba.njit(cache=True, nogil=True)
def sort_edges(packed: np.ndarray, wts: np.ndarray, tmp_p: np.ndarray, tmp_w: np.ndarray, top: np.ndarray,
               n_digits: int, id_bits: int, drop: int, order: np.ndarray, sorted_w: np.ndarray) -> None:
    """Exact stable sort of edges by float64 weight (ties by edge id): ``order`` (E,) uint32 edge ids and
    ``sorted_w`` (E,) float64 their weights, in processing order.

    ``packed`` (E,) uint64 words and ``wts`` (E,) float64 weights in edge order, ``top`` the histogram of
    their top digit (of ``n_digits``); ``packed``, ``wts``, ``tmp_p`` and ``tmp_w`` are overwritten.
    """
    n = packed.size
    radix = 1 << DIGIT_BITS
    mask = np.uint64(radix - 1)
    id_mask = np.uint64((1 << id_bits) - 1)
    top_shift = np.uint64(id_bits + DIGIT_BITS * (max(n_digits, 1) - 1))
    lo_of = np.empty(radix, dtype=np.int64)
    end_of = np.empty(radix, dtype=np.int64)
    total = 0
    for b in range(radix):
        lo_of[b] = total
        end_of[b] = total
        total += top[b]
    for i in range(n):
        v = packed[i]
        b = (v >> top_shift) & mask
        j = end_of[b]
        tmp_p[j] = v
        tmp_w[j] = wts[i]
        end_of[b] = j + 1
    counts = np.empty((max(n_digits - 1, 1), radix), dtype=np.int64)
    pos = np.empty(radix, dtype=np.int64)
    for b in range(radix):
        lo, hi = lo_of[b], end_of[b]
        src_p, src_w = tmp_p, tmp_w
        # With one digit the bucket is one key, already in id order (the pass above is stable).
        if n_digits > 1 and hi - lo >= _SMALL_BUCKET:
            src_p, src_w = _sort_bucket(tmp_p, tmp_w, packed, wts, lo, hi, n_digits - 1, id_bits, counts, pos)
        elif n_digits > 1:
            _insertion_sort(tmp_p, tmp_w, lo, hi)
        for i in range(lo, hi):
            order[i] = np.uint32(src_p[i] & id_mask)
            sorted_w[i] = src_w[i]
    _order_equal_keys(order, sorted_w, drop)


@numba.njit(cache=True, nogil=True)
def _sort_bucket(a_p: np.ndarray, a_w: np.ndarray, b_p: np.ndarray, b_w: np.ndarray, lo: int, hi: int,
                 n_passes: int, id_bits: int, counts: np.ndarray, pos: np.ndarray) -> tuple:
    """LSD radix passes over ``[lo, hi)`` (the low ``n_passes`` digits), ping-ponging between the (a) and
    (b) arrays; returns the pair that holds the sorted bucket."""
    radix = 1 << DIGIT_BITS
    mask = np.uint64(radix - 1)
    counts[:n_passes] = 0
    for i in range(lo, hi):
        v = a_p[i]
        for q in range(n_passes):
            counts[q, (v >> np.uint64(id_bits + DIGIT_BITS * q)) & mask] += 1
    for q in range(n_passes):
        shift = np.uint64(id_bits + DIGIT_BITS * q)
        if counts[q, (a_p[lo] >> shift) & mask] == hi - lo:
            continue  # one value of this digit in the whole bucket
        total = lo
        for c in range(radix):
            pos[c] = total
            total += counts[q, c]
        for i in range(lo, hi):
            v = a_p[i]
            c = (v >> shift) & mask
            j = pos[c]
            b_p[j] = v
            b_w[j] = a_w[i]
            pos[c] = j + 1
        a_p, a_w, b_p, b_w = b_p, b_w, a_p, a_w
    return a_p, a_w


@numba.njit(cache=True, nogil=True)
def _insertion_sort(p: np.ndarray, w: np.ndarray, lo: int, hi: int) -> None:
    for a in range(lo + 1, hi):
        v = p[a]
        x = w[a]
        b = a - 1
        while b >= lo and p[b] > v:
            p[b + 1] = p[b]
            w[b + 1] = w[b]
            b -= 1
        p[b + 1] = v
        w[b + 1] = x


@numba.njit(cache=True, nogil=True)
def _order_equal_keys(order: np.ndarray, sorted_w: np.ndarray, drop: int) -> None:
    # Out-of-order neighbours can only sit inside a run of equal keys: sort such runs stably by weight.
    n = order.size
    bits = sorted_w.view(np.uint64)
    dshift = np.uint64(drop)
    i = 1
    while i < n:
        if sorted_w[i] >= sorted_w[i - 1]:
            i += 1
            continue
        k = key(bits[i]) >> dshift
        lo = i - 1
        while lo > 0 and (key(bits[lo - 1]) >> dshift) == k:
            lo -= 1
        end = i + 1
        while end < n and (key(bits[end]) >> dshift) == k:
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
        k = sorted_w[a]
        b = a - 1
        while b >= lo and sorted_w[b] > k:
            order[b + 1] = order[b]
            sorted_w[b + 1] = sorted_w[b]
            b -= 1
        order[b + 1] = e
        sorted_w[b + 1] = k
