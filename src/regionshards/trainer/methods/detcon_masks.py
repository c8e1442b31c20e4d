"""Segment maps → DetCon's feature-grid masks (Hénaff et al. 2021, Sec. 3.2), in numpy for the loader workers.

* ``majority_grid``: a (S, S) view mask becomes the (S/stride, S/stride) grid of the C5 features, each cell
  holding its majority segment id — the average pool of the one-hot masks followed by an argmax, ties going
  to the smallest id (``torch.argmax`` returns the first maximum, and one-hot channels are in id order).
* ``runs_grid``: the same grid straight from the label map's column-major runs and a view's nearest-sample
  positions, building neither the label map nor the (S, S) view mask (one numba pass over the runs the view
  meets; equal to ``majority_grid`` of ``transforms.resize_mask``).
* ``sample_ids``: K ids drawn uniformly, with replacement, among the ids present on a view's grid; the same ids
  serve the online and the target branch.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from ...proposals.rle import paint_runs

_COMPACT_ABOVE = 1024  # ids beyond this are renumbered densely first, so the histogram stays small


@functools.cache
def _cell_index(size: int, stride: int) -> np.ndarray:
    cell = np.arange(size) // stride
    g = size // stride
    return (cell[:, None] * g + cell[None, :]).reshape(-1)


def majority_grid(mask: np.ndarray, stride: int) -> np.ndarray:
    """(G, G) int64 majority segment id per ``stride`` x ``stride`` cell of an (S, S) mask of ids >= 0, G = S/stride."""
    size = mask.shape[0]
    if mask.ndim != 2 or mask.shape[1] != size or size % stride:
        raise ValueError(f"mask must be square with a side divisible by {stride}, got {mask.shape}")
    g = size // stride
    flat = mask.reshape(-1).astype(np.int64, copy=False)
    n = int(flat.max()) + 1
    ids = None
    if n > _COMPACT_ABOVE:
        ids = np.flatnonzero(np.bincount(flat, minlength=n))
        remap = np.zeros(n, np.int64)
        remap[ids] = np.arange(ids.size)
        flat, n = remap[flat], ids.size
    counts = np.bincount(_cell_index(size, stride) * n + flat, minlength=g * g * n).reshape(g * g, n)
    best = counts.argmax(axis=1)  # first maximum: ties go to the smallest id
    return (best if ids is None else ids[best]).reshape(g, g)


@numba.njit(cache=True, nogil=True)
def _runs_votes(starts: np.ndarray, segs: np.ndarray, height: int, rows: np.ndarray, cols: np.ndarray,
                stride: int, n: int) -> np.ndarray:
    # Votes counted per run, not per pixel: in a stored column c the view's output rows sampling a run's
    # rows [a, b) are the i with a <= rows[i] < b, i.e. i in [below[a], below[b]) (rows never decrease), so a
    # run adds its length in output rows to each cell row it meets. Output columns sampling the same stored
    # column within one cell column vote identically: counted once with their weight.
    size = rows.size
    g = size // stride
    r0 = rows[0]
    r1 = rows[size - 1] + 1
    below = np.empty(r1 - r0 + 1, np.int64)  # below[t] = #{i : rows[i] < r0 + t}
    i = 0
    for t in range(r1 - r0 + 1):
        while i < size and rows[i] < r0 + t:
            i += 1
        below[t] = i
    counts = np.zeros((g * g, n), np.int64)
    n_runs = starts.size
    j = 0
    while j < size:
        c = cols[j]
        cj = j // stride
        weight = 1
        while j + weight < size and cols[j + weight] == c and (j + weight) // stride == cj:
            weight += 1
        top = c * height
        r = np.searchsorted(starts, top + r0, side="right") - 1  # the run holding (r0, c)
        a = r0
        while a < r1:
            b = min(starts[r + 1] - top, r1) if r + 1 < n_runs else r1
            lo = below[a - r0]
            hi = below[b - r0]
            label = segs[r]
            while lo < hi:
                take = min(hi, (lo // stride + 1) * stride)
                counts[(lo // stride) * g + cj, label] += (take - lo) * weight
                lo = take
            a = b
            r += 1
        j += weight
    out = np.empty(g * g, np.int64)
    for cell in range(g * g):
        best = 0
        for k in range(1, n):
            if counts[cell, k] > counts[cell, best]:
                best = k
        out[cell] = best
    return out


def runs_grid(starts: np.ndarray, segs: np.ndarray, height: int, width: int, rows: np.ndarray, cols: np.ndarray,
              stride: int, n_ids: int) -> np.ndarray:
    """(G, G) int64 majority ids of the view whose mask is ``labels[rows][:, cols]``, from the label map's runs.

    ``starts``, ``segs``: (R,) int64 column-major runs tiling the (``height``, ``width``) map with ids
    0..``n_ids``-1 (``proposals.rle.segment_runs``); ``rows`` (non-decreasing) and ``cols``: (S,) int64 stored-
    pixel positions (``transforms.mask_positions``). Equal to ``majority_grid(labels[rows][:, cols], stride)``
    without building the label map: O(runs met) per sampled column instead of O(S) per sampled pixel. Maps
    with more than 1024 ids (the per-cell histogram would be too wide) are painted and reduced with numpy.
    """
    size = rows.size
    if (n_ids > _COMPACT_ABOVE or size % stride or size != cols.size or not size
            or (size > 1 and np.any(rows[1:] < rows[:-1]))):
        return majority_grid(paint_runs(starts, segs, height, width)[rows][:, cols], stride)
    return _runs_votes(starts, segs, height, rows, cols, stride, n_ids).reshape(size // stride, size // stride)


def sample_ids(grid: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(k,) int64 ids drawn uniformly with replacement among the distinct ids of ``grid`` (ids >= 0)."""
    # the ids present in increasing order, as np.unique gives them: from a histogram (faster for G x G cells)
    # unless the ids are large (a map of many segments), when the histogram would be
    flat = grid.reshape(-1)
    present = np.flatnonzero(np.bincount(flat)) if flat.max() < _COMPACT_ABOVE else np.unique(flat)
    return present[rng.integers(0, present.size, size=k)].astype(np.int64, copy=False)


def grid_masks(grid: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(K, G*G) float32 binary masks of the cells holding each sampled id (reference for the torch pooling)."""
    return (grid.reshape(1, -1) == ids.reshape(-1, 1)).astype(np.float32)
