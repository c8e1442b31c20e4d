"""numba kernels of the COCO RLE codec (see rle.py for the format and the public functions)."""

from __future__ import annotations

import numba
import numpy as np

# A delta of two uint32 counts needs at most 34 bits including the sign: seven 5-bit chunks.
# pycocotools stores counts as C ``uint``.
MAX_COUNT = 2**32 - 1
MAX_CHARS_PER_COUNT = 7


@numba.njit(cache=True)
def _column_major_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Run starts (flat column-major positions, increasing) and the id of each run. A pixel starts a run
    # when it differs from the pixel above it (or, at the top row, from the bottom of the previous column),
    # so the scan can stay row-major and contiguous; walking down C-order columns was ~15x slower.
    height, width = labels.shape
    pos = np.empty(height * width, np.int64)  # only the first R entries are ever touched
    per_column = np.zeros(width + 1, np.int64)
    r = 0
    for x in range(width):
        if x == 0 or labels[0, x] != labels[height - 1, x - 1]:
            pos[r] = x * height
            r += 1
            per_column[x + 1] += 1
    for y in range(1, height):
        for x in range(width):
            if labels[y, x] != labels[y - 1, x]:
                pos[r] = x * height + y
                r += 1
                per_column[x + 1] += 1
    # Stable counting sort by column: within a column the rows were found in increasing order.
    for x in range(width):
        per_column[x + 1] += per_column[x]
    starts = np.empty(r, np.int64)
    for i in range(r):
        x = pos[i] // height
        starts[per_column[x]] = pos[i]
        per_column[x] += 1
    ids = np.empty(r, np.int64)
    for i in range(r):
        ids[i] = labels[starts[i] % height, starts[i] // height]
    return starts, ids


@numba.njit(cache=True)
def _counts_to_chars(counts: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = offsets.size - 1
    buf = np.empty(counts.size * MAX_CHARS_PER_COUNT, np.uint8)
    str_offsets = np.empty(n + 1, np.int64)
    str_offsets[0] = 0
    q = 0
    for k in range(n):
        first = offsets[k]
        for i in range(first, offsets[k + 1]):
            x = counts[i]
            # Deltas against the count two before: same-parity runs of one mask have similar lengths.
            if i - first > 2:
                x -= counts[i - 2]
            more = True
            while more:
                c = x & 0x1F
                x >>= 5
                more = x != (-1 if c & 0x10 else 0)  # stop once the rest is pure sign extension
                if more:
                    c |= 0x20
                buf[q] = c + 48
                q += 1
        str_offsets[k + 1] = q
    return buf[:q], str_offsets


@numba.njit(cache=True)
def _chars_to_counts(buf: np.ndarray, str_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    # Returns (counts, offsets, index of the first malformed string or -1).
    n = str_offsets.size - 1
    counts = np.empty(buf.size, np.int64)
    offsets = np.zeros(n + 1, np.int64)
    m = 0
    for k in range(n):
        first = m
        p = str_offsets[k]
        end = str_offsets[k + 1]
        while p < end:
            x = np.int64(0)
            shift = 0
            more = True
            while more:
                if p >= end or shift > 5 * (MAX_CHARS_PER_COUNT - 1):
                    return counts[:m], offsets, k
                c = np.int64(buf[p]) - 48
                if c < 0 or c > 63:
                    return counts[:m], offsets, k
                x |= (c & 0x1F) << shift
                more = (c & 0x20) != 0
                p += 1
                shift += 5
                if not more and (c & 0x10) != 0:
                    x |= np.int64(-1) << shift
            if m - first > 2:
                x += counts[m - 2]
            if x < 0 or x > MAX_COUNT:
                return counts[:m], offsets, k
            counts[m] = x
            m += 1
        offsets[k + 1] = m
    return counts[:m], offsets, -1


@numba.njit(cache=True)
def _paint_rows(starts: np.ndarray, segs: np.ndarray, height: int, width: int) -> np.ndarray:
    # Fill a C-order label map row by row from column-major runs that tile the image. Each column keeps its
    # current id; a run that starts below a column's top row is an event "column x takes id s from row y on".
    # The events are bucketed by row (a counting sort over the runs), so that each row is the previous one
    # with its few events applied: a vectorised copy per row instead of a test per pixel.
    out = np.empty((height, width), np.int32)
    cur = np.empty(width, np.int32)
    n_runs = starts.size
    r = 0
    for x in range(width):
        top = x * height
        while r + 1 < n_runs and starts[r + 1] <= top:
            r += 1
        cur[x] = segs[r]
    first = np.zeros(height + 1, np.int64)
    for i in range(n_runs):
        y = starts[i] % height
        if y > 0:
            first[y + 1] += 1
    for y in range(height):
        first[y + 1] += first[y]
    fill = first[:height].copy()
    event_x = np.empty(first[height], np.int64)
    event_id = np.empty(first[height], np.int32)
    for i in range(n_runs):
        x, y = divmod(starts[i], height)
        if y > 0:
            j = fill[y]
            event_x[j] = x
            event_id[j] = segs[i]
            fill[y] = j + 1
    for y in range(height):
        for j in range(first[y], first[y + 1]):
            cur[event_x[j]] = event_id[j]
        row = out[y]
        for x in range(width):
            row[x] = cur[x]
    return out


@numba.njit(cache=True)
def _run_boxes(
    starts: np.ndarray, ends: np.ndarray, segs: np.ndarray, heights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # Areas and tight [x, y, w, h] boxes from column-major foreground runs [start, end) of segment segs[i]
    # (image height heights[segs[i]]): O(runs), no pass over the pixels.
    n = heights.size
    areas = np.zeros(n, np.int64)
    lo = np.full((n, 2), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n, 2), -1, np.int64)
    for i in range(segs.size):
        v = segs[i]
        h = heights[v]
        areas[v] += ends[i] - starts[i]
        xa, ya = divmod(starts[i], h)
        xb, yb = divmod(ends[i] - 1, h)
        if xa != xb:  # a run that wraps into a later column touches both the bottom and the top row
            ya = 0
            yb = h - 1
        lo[v, 0] = min(lo[v, 0], xa)
        lo[v, 1] = min(lo[v, 1], ya)
        hi[v, 0] = max(hi[v, 0], xb)
        hi[v, 1] = max(hi[v, 1], yb)
    boxes = np.zeros((n, 4), np.float32)
    for k in range(n):
        if areas[k] > 0:
            boxes[k, :2] = lo[k]
            boxes[k, 2:] = hi[k] - lo[k] + 1
    return areas, boxes


@numba.njit(cache=True, nogil=True)
def _tiling_runs(counts: np.ndarray, offsets: np.ndarray, n_pixels: int):
    # The foreground runs of K segments (COCO counts, flat with (K + 1,) offsets) sorted by start, checked to
    # tile the image. Returns (starts, segs, code, a, b): code 0 ok; 1: segment a's runs sum to b pixels;
    # 2: segment a overlaps segment b; 3: pixel a is covered by no segment.
    k = offsets.size - 1
    n_runs = 0
    for s in range(k):
        total = 0
        for t in range(offsets[s], offsets[s + 1]):
            if (t - offsets[s]) % 2 == 1 and counts[t] > 0:
                n_runs += 1
            total += counts[t]
        if total != n_pixels:
            return np.empty(0, np.int64), np.empty(0, np.int64), 1, s, total
    # Sorted by start with a bucket sort: buckets of 2**shift pixels, about one run each (runs that tile the
    # image are disjoint), each kept sorted by insertion as its runs arrive in segment order — stable, so equal
    # starts (an overlap) keep segment order. Runs crowded into one bucket (only overlapping segments can do
    # that) take a stable argsort instead, so hostile counts cost O(R log R), not O(R**2).
    shift = 0
    while shift < 62 and (n_pixels >> (shift + 1)) >= n_runs:
        shift += 1
    n_buckets = (n_pixels >> shift) + 1
    first = np.zeros(n_buckets + 1, np.int64)
    for s in range(k):
        pos = 0
        for t in range(offsets[s], offsets[s + 1]):
            if (t - offsets[s]) % 2 == 1 and counts[t] > 0:
                first[(pos >> shift) + 1] += 1
            pos += counts[t]
    crowded = False
    for b in range(n_buckets):
        crowded |= first[b + 1] > 64
        first[b + 1] += first[b]
    starts = np.empty(n_runs, np.int64)
    ends = np.empty(n_runs, np.int64)
    segs = np.empty(n_runs, np.int64)
    fill = first.copy()
    for s in range(k):
        pos = 0
        for t in range(offsets[s], offsets[s + 1]):
            c = counts[t]
            if (t - offsets[s]) % 2 == 1 and c > 0:
                b = pos >> shift
                j = fill[b]
                fill[b] = j + 1
                while not crowded and j > first[b] and starts[j - 1] > pos:
                    starts[j] = starts[j - 1]
                    ends[j] = ends[j - 1]
                    segs[j] = segs[j - 1]
                    j -= 1
                starts[j] = pos
                ends[j] = pos + c
                segs[j] = s
            pos += c
    if crowded:
        order = np.argsort(starts, kind="mergesort")
        starts, ends, segs = starts[order], ends[order], segs[order]
    covered = 0
    for r in range(n_runs):
        if starts[r] < covered:
            return starts, segs, 2, segs[r], segs[r - 1]
        if starts[r] > covered:
            return starts, segs, 3, covered, 0
        covered = ends[r]
    if covered < n_pixels:
        return starts, segs, 3, covered, 0
    return starts, segs, 0, 0, 0
