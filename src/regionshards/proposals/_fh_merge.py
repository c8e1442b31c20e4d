"""numba kernel of the merging step of the exact Felzenszwalb–Huttenlocher segmentation (see fh.py).

skimage's arithmetic: float32 inner costs ``cint + scale / size`` (skimage keeps them in C floats), a strict
``cost < min(threshold_a, threshold_b)`` test in float64, then the min-size pass over the edges in the same
order. Components are numbered in raster order of first appearance, which is skimage's order (its root is
always a component's smallest pixel index).
"""

from __future__ import annotations

import numba
import numpy as np

from ._fh_sort import BASE, MAX_SHIFT
from ._prefetch import prefetch

# Union-find forest in one int64 per pixel: a non-root holds its parent's index (>= 0); a root holds
# ROOT | size << 32 | float32 bits of its merge threshold (negative as an int64), so the find that reaches
# a root has also loaded its size and threshold (one cache line instead of three arrays).
_ROOT = np.int64(-(1 << 63))
_LOW = np.int64(0xFFFFFFFF)
_AHEAD = 8  # edges: 4 to 8 ahead measured best (-7 % merge time), 32 a little worse


@numba.njit(cache=True, nogil=True, inline="always")
def _find(forest: np.ndarray, i: int) -> int:
    # Four finds in five end at the pixel or its parent; deeper ones halve the path from the parent and then
    # point the pixel at the root (measured ≈ 3 % faster than halving alone).
    r = forest[i]
    c = i if r < 0 else r
    if forest[c] < 0:
        return c
    root = _find_deep(forest, c)
    forest[i] = root
    return root


@numba.njit(cache=True, nogil=True)
def _find_deep(forest: np.ndarray, i: int) -> int:
    while True:
        r = forest[i]
        if r < 0:
            return i
        g = forest[r]
        if g < 0:
            return r
        forest[i] = g  # path halving
        i = g


@numba.njit(cache=True, nogil=True, inline="always")
def _edge_roots(forest: np.ndarray, word: np.uint64, id_mask: np.uint64, first: np.ndarray,
                second: np.ndarray) -> tuple:
    # The roots of the two pixels of an edge word (edge id 4 * p + d joins p + first[d] and p + second[d]).
    e = np.int64(word & id_mask)
    return _find(forest, (e >> 2) + first[e & 3]), _find(forest, (e >> 2) + second[e & 3])


@numba.njit(cache=True, nogil=True, inline="always")
def _size(forest: np.ndarray, root: int) -> int:
    return (forest[root] >> 32) & 0x7FFFFFFF


@numba.njit(cache=True, nogil=True, inline="always")
def _same_weight(p: np.uint64, q: np.uint64, id_shift: np.uint64, id_mask: np.uint64, weights: np.ndarray) -> bool:
    return (p >> id_shift) == (q >> id_shift) and weights[p & id_mask] == weights[q & id_mask]


@numba.njit(cache=True, nogil=True)
def segment_graph(
    packed: np.ndarray,
    weights: np.ndarray,
    id_bits: int,
    shift: int,
    h: int,
    w: int,
    scale: float,
    min_size: int,
    check_ties: bool,
    forest: np.ndarray,
    rejected: np.ndarray,
    mark: np.ndarray,
    labels: np.ndarray,
) -> bool:
    """Greedy FH merging over the edge words ``packed`` (E,) uint64 in processing order (``_fh_sort``: key
    truncated by ``shift``, ``id_bits``-bit edge id), then the min-size pass; raster-order dense labels into
    ``labels`` (H*W,) int32. ``weights`` (4 * H * W,) float64 holds the full weights by edge id. Returns
    False, without finishing, when ``check_ties`` is set and a run of equal weights could have given another
    result in another order (see fh.py).

    The key decides every comparison with a float32 threshold (see _fh_sort); the full weight is read for
    key 0, when ``shift`` drops more than float32's precision, and for a merge whose new float32 threshold
    differs between the lowest and highest weights the key stands for (about one merge in 16,000 at 500 px).

    ``forest`` (N,) int64, ``mark`` (N,) int32 and ``rejected`` (E,) uint64 are scratch buffers (contents
    ignored).
    """
    first = np.array([1, w, w + 1, w], dtype=np.int64)
    second = np.array([0, 0, 0, 1], dtype=np.int64)
    _init(forest, mark, scale)
    threshold = forest.view(np.float32)
    id_shift = np.uint64(id_bits)
    id_mask = np.uint64((1 << id_bits) - 1)
    sh = np.uint64(shift)
    below = np.uint64((1 << shift) - 1)  # the dropped bits, all set: the key's highest weight
    always_exact = shift > MAX_SHIFT
    # Only rejected edges can join two components in the min-size pass: accepted edges and edges already
    # inside a component stay inside one, since components only grow.
    n_rejected = 0
    n_edges = packed.size
    for i in range(n_edges):
        if i + _AHEAD < n_edges:
            q = np.int64(packed[i + _AHEAD] & id_mask)
            prefetch(forest, (q >> 2) + first[q & 3])
            prefetch(forest, (q >> 2) + second[q & 3])
        p = packed[i]
        e = np.int64(p & id_mask)
        a = _find(forest, (e >> 2) + first[e & 3])
        b = _find(forest, (e >> 2) + second[e & 3])
        if a != b:
            k = p >> id_shift
            exact = k == 0 or always_exact
            cost = weights[e] if exact else np.uint64((k << sh) + BASE).view(np.float64)
            if cost < np.float64(min(threshold[2 * a], threshold[2 * b])):
                sa = _size(forest, a)
                sb = _size(forest, b)
                if sa < sb:
                    a, b = b, a
                s = sa + sb
                forest[b] = a
                x = scale / s
                t = np.float32(cost + x)
                if not exact and np.float32(np.uint64((k << sh) + BASE + below).view(np.float64) + x) != t:
                    t = np.float32(weights[e] + x)  # the dropped bits decide the rounding
                forest[a] = _ROOT | (np.int64(s) << 32)
                threshold[2 * a] = t
                # A merged component whose threshold rounds down to the weight itself closes early, and
                # then the order within a run of equal weights matters.
                if check_ties and np.float64(t) <= cost and _in_tie(packed, i, id_shift, id_mask, weights):
                    return False
            else:
                rejected[n_rejected] = p
                n_rejected += 1
    return _finish(n_rejected, first, second, min_size, check_ties, forest, rejected, id_bits, weights, mark,
                   labels)


@numba.njit(cache=True, nogil=True)
def _init(forest: np.ndarray, mark: np.ndarray, scale: float) -> None:
    # Each root's merge threshold float32(cint + scale / size) changes only when the root absorbs another
    # component, so it is kept per root instead of being recomputed (two divisions) for every edge; the
    # values are the ones skimage computes.
    word = np.empty(1, dtype=np.int64)
    word[0] = _ROOT | (np.int64(1) << 32)
    word.view(np.float32)[0] = np.float32(0.0 + scale / 1.0)  # the low half (little-endian): the threshold
    for i in range(forest.size):
        forest[i] = word[0]
        mark[i] = -1


@numba.njit(cache=True, nogil=True)
def _finish(
    n_rejected: int,
    first: np.ndarray,
    second: np.ndarray,
    min_size: int,
    check_ties: bool,
    forest: np.ndarray,
    rejected: np.ndarray,
    id_bits: int,
    weights: np.ndarray,
    mark: np.ndarray,
    labels: np.ndarray,
) -> bool:
    """The min-size pass over the rejected edge words, then raster-order labels; False for an
    order-dependent tie."""
    id_shift = np.uint64(id_bits)
    id_mask = np.uint64((1 << id_bits) - 1)
    i = 0
    while i < n_rejected:
        if check_ties and i + 1 < n_rejected and _same_weight(rejected[i + 1], rejected[i], id_shift, id_mask,
                                                              weights):
            j = i + 1
            while j < n_rejected and _same_weight(rejected[j], rejected[i], id_shift, id_mask, weights):
                j += 1
            if not _tie_run_is_order_free(rejected, i, j, id_mask, first, second, forest, min_size, mark):
                return False
        else:
            j = i + 1
        for r in range(i, j):
            a, b = _edge_roots(forest, rejected[r], id_mask, first, second)
            if a == b:
                continue
            sa = _size(forest, a)
            sb = _size(forest, b)
            if sa < min_size or sb < min_size:
                if sa < sb:
                    a, b = b, a
                forest[b] = a
                forest[a] = (forest[a] & _LOW) | _ROOT | (np.int64(sa + sb) << 32)
        i = j
    next_label = 0
    for i in range(forest.size):
        r = _find(forest, i)
        if mark[r] < 0:
            mark[r] = next_label
            next_label += 1
        labels[i] = mark[r]
    return True


@numba.njit(cache=True, nogil=True)
def _in_tie(packed: np.ndarray, i: int, id_shift: np.uint64, id_mask: np.uint64, weights: np.ndarray) -> bool:
    return (i > 0 and _same_weight(packed[i - 1], packed[i], id_shift, id_mask, weights)) or (
        i + 1 < packed.size and _same_weight(packed[i + 1], packed[i], id_shift, id_mask, weights)
    )


@numba.njit(cache=True, nogil=True)
def _tie_run_is_order_free(
    rejected: np.ndarray,
    lo: int,
    hi: int,
    id_mask: np.uint64,
    first: np.ndarray,
    second: np.ndarray,
    forest: np.ndarray,
    min_size: int,
    mark: np.ndarray,
) -> bool:
    """Whether the min-size pass gives the same partition for every order of the equal-weight edges
    ``rejected[lo:hi]``: it does when no component smaller than ``min_size`` has edges in the run to two
    different components (each small component then joins its only partner whatever the order, and edges
    between two large components never merge). ``mark`` is -1 everywhere on entry and on return."""
    ok = True
    for r in range(lo, hi):
        a, b = _edge_roots(forest, rejected[r], id_mask, first, second)
        if a == b:
            continue
        for s, other in ((a, b), (b, a)):
            if _size(forest, s) < min_size:
                if mark[s] < 0:
                    mark[s] = other
                elif mark[s] != other:
                    ok = False
    for r in range(lo, hi):
        a, b = _edge_roots(forest, rejected[r], id_mask, first, second)
        mark[a] = -1
        mark[b] = -1
    return ok
