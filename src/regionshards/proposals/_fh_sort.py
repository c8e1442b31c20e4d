"""numba kernels of the exact sort of the Felzenszwalb–Huttenlocher edges by weight (see fh.py).

Each edge is one 64-bit word ``key << id_bits | id`` (``id = 4 * pixel + direction``, see _fh_kernels.py),
where the key is the edge's float64 weight truncated to the ``64 - id_bits`` bits that fit: its bits above
those of 2**-126 (``BASE``; smaller weights all get key 0), shifted right by ``shift``. Truncation is
monotone, and with at most 29 bits dropped (``shift <= MAX_SHIFT``) every float32 value is exact at the kept
precision, so the merge decides every comparison with a float32 threshold from the key alone and reads the
full weight only for key 0, for the rare merge whose float32 threshold the dropped bits could change, and
inside runs of equal keys (see _fh_merge.py). The words are distinct (the ids are), so sorting them sorts by
key with ties in id order; runs of equal keys are then put in full-weight order, stably.

The sort is one most-significant-digit pass over the whole graph on the key's top 10 bits, then
least-significant-digit passes over the next 20 key bits inside each bucket (small enough to stay in
cache), then the few runs that agree on those 30 bits are finished in place: every pass moves one 8-byte
word per edge, and only the first one works outside the cache.
"""

from __future__ import annotations

import numba
import numpy as np

DIGIT_BITS = 10  # radix 1024: counts and write positions stay in L1
BASE = np.uint64(0x381 << 52)  # float64 bits of 2**-126
MAX_SHIFT = 29  # float64 → float32 drops 29 mantissa bits
_SMALL_BUCKET = 48  # below this an insertion sort beats two radix passes and their 2 x 1024 counters


@numba.njit(cache=True, nogil=True, inline="always")
def key(bits: np.uint64, shift: np.uint64) -> np.uint64:
    """Sort key of a non-negative float64 weight given as its bits."""
    return (bits - BASE) >> shift if bits > BASE else np.uint64(0)


def key_bits_of(weight: float) -> int:
    """Bits of the untruncated (``shift`` 0) key of a non-negative weight."""
    return max(0, int(np.float64(weight).view(np.uint64)) - int(BASE)).bit_length()


@numba.njit(cache=True, nogil=True, inline="always")
def _pack_one(bits: np.ndarray, i: int, shift: np.uint64, id_shift: np.uint64, top_shift: np.uint64,
              top: np.ndarray) -> np.uint64:
    k = key(bits[i], shift)
    top[(k >> top_shift) & np.uint64((1 << DIGIT_BITS) - 1)] += 1
    return (k << id_shift) | np.uint64(i)


@numba.njit(cache=True, nogil=True)
def pack_keys(weights: np.ndarray, h: int, w: int, packed: np.ndarray, top: np.ndarray, id_bits: int, shift: int,
              top_shift: int) -> None:
    """``packed[e]`` for every edge in edge order from ``weights`` (indexed by edge id), and the histogram
    of ``key >> top_shift`` in ``top`` (1024,), zeroed here: what ``_fh_kernels.smooth_edges`` writes, for
    other key lengths (weights of 2 or more, or keys cut shorter for large images)."""
    top[:] = 0
    bits = weights.view(np.uint64)
    sh, ids, ts = np.uint64(shift), np.uint64(id_bits), np.uint64(top_shift)
    e = 0
    for y in range(h - 1):
        for x in range(w - 1):
            p = 4 * (y * w + x)
            for d in range(4):
                packed[e] = _pack_one(bits, p + d, sh, ids, ts, top)
                e += 1
        packed[e] = _pack_one(bits, 4 * (y * w + w - 1) + 1, sh, ids, ts, top)
        e += 1
    for x in range(w - 1):
        packed[e] = _pack_one(bits, 4 * ((h - 1) * w + x), sh, ids, ts, top)
        e += 1


@numba.njit(cache=True, nogil=True)
def sort_edges(packed: np.ndarray, tmp: np.ndarray, top: np.ndarray, top_shift: int, id_bits: int,
               weights: np.ndarray) -> np.ndarray:
    """Sort the (E,) uint64 edge words in ``packed`` by full weight, ties by edge id, into ``tmp`` (of the
    same size; ``packed`` is overwritten): returns ``tmp``.

    ``top`` is the histogram of ``key >> top_shift`` (the top digit), ``weights`` (4 * N,) float64 the
    weights by edge id.
    """
    n = packed.size
    radix = 1 << DIGIT_BITS
    mask = np.uint64(radix - 1)
    shift = np.uint64(id_bits + top_shift)
    lo_of = np.empty(radix, dtype=np.int64)
    end_of = np.empty(radix, dtype=np.int64)
    total = 0
    for b in range(radix):
        lo_of[b] = total
        end_of[b] = total
        total += top[b]
    for i in range(n):
        v = packed[i]
        b = (v >> shift) & mask
        j = end_of[b]
        tmp[j] = v
        end_of[b] = j + 1
    # The next (up to) two digits below the top one, bucket by bucket (branch-free passes in cache beat
    # one pass plus insertion sorts of the sub-buckets, whose mispredicted branches cost more); then, while
    # the bucket is still in cache, words that agree on those 30 key bits and equal keys are finished.
    n_low = min(2, (top_shift + DIGIT_BITS - 1) // DIGIT_BITS)
    low_shift = max(0, top_shift - n_low * DIGIT_BITS)
    counts = np.empty((2, radix), dtype=np.int64)
    for b in range(radix):
        lo, hi = lo_of[b], end_of[b]
        if n_low > 0 and hi - lo >= _SMALL_BUCKET:
            _radix_bucket(tmp, packed, lo, hi, id_bits + low_shift, n_low, counts)
        elif n_low > 0:
            _insertion_sort(tmp, lo, hi)
        if low_shift > 0:
            _finish_runs(tmp, lo, hi, np.uint64(id_bits + low_shift))
        _order_equal_keys(tmp, lo, hi, id_bits, weights)
    return tmp


@numba.njit(cache=True, nogil=True)
def _radix_bucket(src: np.ndarray, dst: np.ndarray, lo: int, hi: int, shift0: int, n_passes: int,
                  counts: np.ndarray) -> None:
    """LSD radix passes over ``src[lo:hi]`` on ``n_passes`` (1 or 2) digits from bit ``shift0`` up, in place
    (``dst[lo:hi]`` is scratch)."""
    radix = 1 << DIGIT_BITS
    mask = np.uint64(radix - 1)
    s0 = np.uint64(shift0)
    s1 = np.uint64(shift0 + DIGIT_BITS)
    counts[:] = 0
    for i in range(lo, hi):
        v = src[i]
        counts[0, (v >> s0) & mask] += 1
        counts[1, (v >> s1) & mask] += 1
    t0 = lo
    t1 = lo
    for c in range(radix):
        x = counts[0, c]
        counts[0, c] = t0
        t0 += x
        y = counts[1, c]
        counts[1, c] = t1
        t1 += y
    _scatter(src, dst, lo, hi, s0, counts[0])
    if n_passes == 1:
        for i in range(lo, hi):
            src[i] = dst[i]
        return
    _scatter(dst, src, lo, hi, s1, counts[1])


@numba.njit(cache=True, nogil=True, inline="always")
def _scatter(src: np.ndarray, dst: np.ndarray, lo: int, hi: int, shift: np.uint64, pos: np.ndarray) -> None:
    # One stable counting-sort pass of src[lo:hi] into dst by the digit at ``shift``; ``pos``: start offsets.
    mask = np.uint64((1 << DIGIT_BITS) - 1)
    for i in range(lo, hi):
        v = src[i]
        c = (v >> shift) & mask
        j = pos[c]
        dst[j] = v
        pos[c] = j + 1


@numba.njit(cache=True, nogil=True)
def _finish_runs(p: np.ndarray, start: int, n: int, prefix_shift: np.uint64) -> None:
    """Sort the runs in ``p[start:n]`` of words that agree above ``prefix_shift`` (the radix-sorted bits)
    but not below."""
    i = start + 1
    while i < n:
        if p[i] > p[i - 1]:
            i += 1
            continue
        prefix = p[i] >> prefix_shift
        lo = i - 1
        while lo > start and (p[lo - 1] >> prefix_shift) == prefix:
            lo -= 1
        end = i + 1
        while end < n and (p[end] >> prefix_shift) == prefix:
            end += 1
        if end - lo > 32:
            p[lo:end] = np.sort(p[lo:end])
        else:
            _insertion_sort(p, lo, end)
        i = end


@numba.njit(cache=True, nogil=True)
def _insertion_sort(p: np.ndarray, lo: int, hi: int) -> None:
    for a in range(lo + 1, hi):
        v = p[a]
        b = a - 1
        while b >= lo and p[b] > v:
            p[b + 1] = p[b]
            b -= 1
        p[b + 1] = v


@numba.njit(cache=True, nogil=True)
def _order_equal_keys(p: np.ndarray, start: int, n: int, id_bits: int, weights: np.ndarray) -> None:
    """Put each run of equal keys (in id order) in ``p[start:n]`` in full-weight order, stably."""
    id_shift = np.uint64(id_bits)
    id_mask = np.uint64((1 << id_bits) - 1)
    i = start + 1
    while i < n:
        k = p[i] >> id_shift
        if k != p[i - 1] >> id_shift:
            i += 1
            continue
        lo = i - 1
        end = i + 1
        while end < n and (p[end] >> id_shift) == k:
            end += 1
        in_order = True
        for j in range(lo + 1, end):
            if weights[p[j] & id_mask] < weights[p[j - 1] & id_mask]:
                in_order = False
                break
        if not in_order:
            run = p[lo:end].copy()
            w = np.empty(end - lo, dtype=np.float64)
            for j in range(end - lo):
                w[j] = weights[run[j] & id_mask]
            perm = np.argsort(w, kind="mergesort")
            for j in range(end - lo):
                p[lo + j] = run[perm[j]]
        i = end
