"""numba kernels of the faithful selective search (AlpacaDB ``selectivesearch`` 0.4 and SoCo's copy).

The reference's arithmetic is reproduced operation for operation (see ss.py for the list of
quirks), so that the same regions come out in the same order: per-region histograms divide integer counts by
the region size, merges average histograms as ``(h1 * s1 + h2 * s2) / (s1 + s2)``, similarities are summed in
the reference's order, and the most similar pair is the *last inserted* among equal maxima.
"""

from __future__ import annotations

import numba
import numpy as np

N_V_BINS = 25
N_T_BINS = 30  # 10 texture bins per colour channel
N_BINS = N_V_BINS + N_T_BINS


@numba.njit(cache=True, nogil=True)
def pixel_bins(rgb: np.ndarray, rp: np.ndarray, cp: np.ndarray, v_lut: np.ndarray, t_lut: np.ndarray):
    """Colour (V) bin (H, W) int8 and texture bins (3, H, W) int8 of every pixel (-1: outside the range).

    Texture codes are skimage's ``local_binary_pattern(channel, 8, 1.0)`` on the 0..255 float channel: the
    8 samples at (r + rp[i], c + cp[i]) are bilinear with off-image samples reading 0, and bit i is set when
    ``sample - centre >= 0`` (skimage up to 0.26, the reference's; later skimage adds a 1e-12 tolerance).
    The formula and its operation order are skimage's, so codes agree bit for bit.
    """
    h, w, _ = rgb.shape
    v_bin = np.empty((h, w), dtype=np.int8)
    t_bins = np.empty((3, h, w), dtype=np.int8)
    for y in range(h):
        for x in range(w):
            v = max(rgb[y, x, 0], rgb[y, x, 1], rgb[y, x, 2])
            v_bin[y, x] = v_lut[v]
    # floor(y + rp[i]) is y plus a constant (|rp| <= 1), but the fraction's last bits depend on y (and on x
    # for columns), so fractions are tabulated per row and per column.
    row_off = np.empty(8, dtype=np.int64)
    col_off = np.empty(8, dtype=np.int64)
    row_fr = np.empty((8, h), dtype=np.float64)
    col_fr = np.empty((8, w), dtype=np.float64)
    for i in range(8):
        row_off[i] = np.int64(np.floor(rp[i]))
        col_off[i] = np.int64(np.floor(cp[i]))
        for y in range(h):
            rr = y + rp[i]
            row_fr[i, y] = rr - np.floor(rr)
        for x in range(w):
            cc = x + cp[i]
            col_fr[i, x] = cc - np.floor(cc)
    # One-pixel zero border (skimage's constant mode) and one more row and column, so that the "+ 1"
    # neighbour always exists: when a fraction is 0 skimage reads the same pixel twice, and here the extra
    # term is multiplied by 0.0, which gives the same value.
    plane = np.zeros((h + 3, w + 3), dtype=np.float64)
    code = np.zeros(w, dtype=np.int32)
    for ch in range(3):
        for y in range(h):
            for x in range(w):
                plane[y + 1, x + 1] = rgb[y, x, ch]
        for y in range(h):
            for x in range(w):
                code[x] = 0
            # Sample by sample along the row, over row slices: indexing a slice with the loop counter alone
            # lets LLVM drop numba's negative-index wraparound and vectorise (18x faster than plane[r, c + x]).
            centre = plane[y + 1, 1 : w + 1]
            for i in range(8):
                dr = row_fr[i, y]
                r0 = y + 1 + row_off[i]
                c_base = 1 + col_off[i]
                bit = np.int32(1 << i)
                p0 = plane[r0, c_base : c_base + w + 1]
                if dr == 0.0 and col_fr[i, 0] == 0.0:
                    # Integer offsets: the bilinear formula returns the pixel itself.
                    for x in range(w):
                        code[x] |= bit * np.int32(p0[x] - centre[x] >= 0)
                else:
                    p1 = plane[r0 + 1, c_base : c_base + w + 1]
                    fr = col_fr[i, :w]
                    for x in range(w):
                        dc = fr[x]
                        top = (1 - dc) * p0[x] + dc * p0[x + 1]
                        bottom = (1 - dc) * p1[x] + dc * p1[x + 1]
                        value = (1 - dr) * top + dr * bottom
                        code[x] |= bit * np.int32(value - centre[x] >= 0)
            for x in range(w):
                t_bins[ch, y, x] = t_lut[code[x]]
    return v_bin, t_bins


@numba.njit(cache=True, nogil=True)
def region_stats(labels: np.ndarray, v_bin: np.ndarray, t_bins: np.ndarray, n: int):
    """Per-region bbox (min_x, min_y, max_x, max_y), size and the 55-bin V + texture histogram.

    ``v_bin`` (H, W) int8 is the V-channel colour bin; ``t_bins`` (3, H, W) int8 the texture bins (-1: none).
    """
    h, w = labels.shape
    bbox = np.empty((n, 4), dtype=np.int64)
    bbox[:, 0] = 0xFFFF
    bbox[:, 1] = 0xFFFF
    bbox[:, 2] = 0
    bbox[:, 3] = 0
    size = np.zeros(n, dtype=np.int64)
    counts = np.zeros((n, N_BINS), dtype=np.int64)
    for y in range(h):
        for x in range(w):
            k = labels[y, x]
            if x < bbox[k, 0]:
                bbox[k, 0] = x
            if y < bbox[k, 1]:
                bbox[k, 1] = y
            if x > bbox[k, 2]:
                bbox[k, 2] = x
            if y > bbox[k, 3]:
                bbox[k, 3] = y
            size[k] += 1
            counts[k, v_bin[y, x]] += 1
            for ch in range(3):
                b = t_bins[ch, y, x]
                if b >= 0:
                    counts[k, N_V_BINS + 10 * ch + b] += 1
    hist = np.empty((n, N_BINS), dtype=np.float64)
    for k in range(n):
        for b in range(N_BINS):
            hist[k, b] = np.float64(counts[k, b]) / np.float64(size[k])
    return bbox, size, hist


@numba.njit(cache=True, nogil=True, inline="always")
def _corner_inside(a: np.ndarray, b: np.ndarray) -> bool:
    # The reference's "intersect": one of b's four corners lies strictly inside a's box.
    x0 = a[0] < b[0] < a[2]
    x1 = a[0] < b[2] < a[2]
    y0 = a[1] < b[1] < a[3]
    y1 = a[1] < b[3] < a[3]
    return (x0 and y0) or (x1 and y1) or (x0 and y1) or (x1 and y0)


@numba.njit(cache=True, nogil=True, inline="always")
def _similarity(i: int, j: int, bbox: np.ndarray, size: np.ndarray, hist: np.ndarray, imsize: float) -> float:
    # Colour: H and S always fill bin 0 (1.0 each, see the quirks), so the sum starts at 2.0 and adding the
    # 48 zero bins is exact; V bins then add left to right like the reference's Python sum().
    colour = 2.0
    for b in range(N_V_BINS):
        colour += min(hist[i, b], hist[j, b])
    texture = 0.0
    for b in range(N_V_BINS, N_BINS):
        texture += min(hist[i, b], hist[j, b])
    s = size[i] + size[j]
    size_sim = 1.0 - np.float64(s) / imsize
    bw = max(bbox[i, 2], bbox[j, 2]) - min(bbox[i, 0], bbox[j, 0])
    bh = max(bbox[i, 3], bbox[j, 3]) - min(bbox[i, 1], bbox[j, 1])
    fill = 1.0 - np.float64(bw * bh - size[i] - size[j]) / imsize
    return ((colour + texture) + size_sim) + fill


@numba.njit(cache=True, nogil=True, inline="always")
def _before(sim: np.ndarray, x: int, y: int) -> bool:
    # Heap order: larger similarity first; among equal ones the later insertion (the reference's
    # ``sorted(S.items(), key=sim)[-1]`` is stable, so the last inserted maximum wins).
    return sim[x] > sim[y] or (sim[x] == sim[y] and x > y)


@numba.njit(cache=True, nogil=True)
def _push(heap: np.ndarray, n_heap: int, sim: np.ndarray, e: int) -> int:
    i = n_heap
    heap[i] = e
    while i > 0:
        parent = (i - 1) >> 1
        if _before(sim, heap[i], heap[parent]):
            heap[i], heap[parent] = heap[parent], heap[i]
            i = parent
        else:
            break
    return n_heap + 1


@numba.njit(cache=True, nogil=True)
def _pop(heap: np.ndarray, n_heap: int, sim: np.ndarray) -> int:
    n_heap -= 1
    heap[0] = heap[n_heap]
    i = 0
    while True:
        left = 2 * i + 1
        best = i
        if left < n_heap and _before(sim, heap[left], heap[best]):
            best = left
        if left + 1 < n_heap and _before(sim, heap[left + 1], heap[best]):
            best = left + 1
        if best == i:
            break
        heap[i], heap[best] = heap[best], heap[i]
        i = best
    return n_heap


@numba.njit(cache=True, nogil=True)
def _grow(a: np.ndarray, need: int) -> np.ndarray:
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


@numba.njit(cache=True, nogil=True)
def _append_pair(e_a, e_b, e_sim, e_alive, next_a, next_b, head, n_e, a, b, sim):  # noqa: ANN001, ANN202
    """Insert similarity entry ``n_e`` for the pair (a, b) and link it into both regions' lists; returns the
    entry arrays (grown when full)."""
    if n_e == e_a.shape[0]:
        e_a, e_b, e_sim = _grow(e_a, n_e + 1), _grow(e_b, n_e + 1), _grow(e_sim, n_e + 1)
        e_alive, next_a, next_b = _grow(e_alive, n_e + 1), _grow(next_a, n_e + 1), _grow(next_b, n_e + 1)
    e_a[n_e] = a
    e_b[n_e] = b
    e_sim[n_e] = sim
    e_alive[n_e] = True
    next_a[n_e] = head[a]
    head[a] = n_e
    next_b[n_e] = head[b]
    head[b] = n_e
    return e_a, e_b, e_sim, e_alive, next_a, next_b


@numba.njit(cache=True, nogil=True)
def hierarchical_grouping(bbox0: np.ndarray, size0: np.ndarray, hist0: np.ndarray, imsize: float):
    """Greedy merging of the most similar neighbour pair until no pair is left.

    Returns per region (initial ones first, then one per merge, in the reference's order): bbox
    (min_x, min_y, max_x, max_y), size, level (0 for initial regions, 1 + the deeper child's level for a
    merge) and the two children (-1 for initial regions).
    """
    n = size0.shape[0]
    cap = max(2 * n - 1, 1)
    bbox = np.empty((cap, 4), dtype=np.int64)
    size = np.empty(cap, dtype=np.int64)
    hist = np.empty((cap, N_BINS), dtype=np.float64)
    level = np.zeros(cap, dtype=np.int32)
    children = np.full((cap, 2), -1, dtype=np.int32)
    bbox[:n] = bbox0
    size[:n] = size0
    hist[:n] = hist0
    # Similarity entries, in the reference dict's insertion order (the entry index is the order).
    e_a = np.empty(max(4 * n, 16), dtype=np.int64)
    e_b = np.empty_like(e_a)
    e_sim = np.empty(e_a.shape[0], dtype=np.float64)
    e_alive = np.zeros(e_a.shape[0], dtype=np.bool_)
    # Per-region singly linked lists of the entries touching the region.
    head = np.full(cap, -1, dtype=np.int64)
    next_a = np.empty(e_a.shape[0], dtype=np.int64)
    next_b = np.empty(e_a.shape[0], dtype=np.int64)
    n_e = 0
    for a in range(n - 1):
        for b in range(a + 1, n):
            if _corner_inside(bbox[a], bbox[b]):
                e_a, e_b, e_sim, e_alive, next_a, next_b = _append_pair(
                    e_a, e_b, e_sim, e_alive, next_a, next_b, head, n_e, a, b,
                    _similarity(a, b, bbox, size, hist, imsize),
                )
                n_e += 1
    heap = np.empty(max(n_e, 16), dtype=np.int64)
    n_heap = 0
    for e in range(n_e):
        n_heap = _push(heap, n_heap, e_sim, e)
    stamp = np.full(cap, -1, dtype=np.int64)
    touched = np.empty(64, dtype=np.int64)
    t = n
    while n_heap > 0:
        top = heap[0]
        n_heap = _pop(heap, n_heap, e_sim)
        if not e_alive[top]:
            continue
        i = e_a[top]
        j = e_b[top]
        # The merged region.
        bbox[t, 0] = min(bbox[i, 0], bbox[j, 0])
        bbox[t, 1] = min(bbox[i, 1], bbox[j, 1])
        bbox[t, 2] = max(bbox[i, 2], bbox[j, 2])
        bbox[t, 3] = max(bbox[i, 3], bbox[j, 3])
        s = size[i] + size[j]
        size[t] = s
        fi = np.float64(size[i])
        fj = np.float64(size[j])
        fs = np.float64(s)
        for k in range(N_BINS):
            hist[t, k] = (hist[i, k] * fi + hist[j, k] * fj) / fs
        level[t] = max(level[i], level[j]) + 1
        children[t, 0] = i
        children[t, 1] = j
        # Every live entry touching i or j, in insertion order, dies; each (other than (i, j)) is replaced
        # by (t, other), inserted in that order, once per neighbour (a dict keeps the first position).
        n_touched = 0
        for r in (i, j):
            e = head[r]
            while e >= 0:
                if e_alive[e]:
                    if n_touched == touched.shape[0]:
                        touched = _grow(touched, n_touched + 1)
                    touched[n_touched] = e
                    n_touched += 1
                    e_alive[e] = False
                e = next_a[e] if e_a[e] == r else next_b[e]
        ordered = np.sort(touched[:n_touched])
        for idx in range(n_touched):
            e = ordered[idx]
            if e == top:
                continue
            other = e_b[e] if (e_a[e] == i or e_a[e] == j) else e_a[e]
            if stamp[other] == t:
                continue
            stamp[other] = t
            e_a, e_b, e_sim, e_alive, next_a, next_b = _append_pair(
                e_a, e_b, e_sim, e_alive, next_a, next_b, head, n_e, t, other,
                _similarity(t, other, bbox, size, hist, imsize),
            )
            heap = _grow(heap, n_heap + 1)
            n_heap = _push(heap, n_heap, e_sim, n_e)
            n_e += 1
        t += 1
    return bbox[:t].copy(), size[:t].copy(), level[:t].copy(), children[:t].copy()
