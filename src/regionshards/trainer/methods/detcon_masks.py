"""Segment maps → DetCon's feature-grid masks (Hénaff et al. 2021, Sec. 3.2), in numpy for the loader workers.

* ``majority_grid``: a (S, S) view mask becomes the (S/stride, S/stride) grid of the C5 features, each cell
  holding its majority segment id — the average pool of the one-hot masks followed by an argmax, ties going
  to the smallest id (``torch.argmax`` returns the first maximum, and one-hot channels are in id order).
* ``view_grid``: the same grid straight from the full label map and a view's nearest-sample positions, without
  building the (S, S) view mask (one numba pass; equal to ``majority_grid`` of ``transforms.resize_mask``).
* ``sample_ids``: K ids drawn uniformly, with replacement, among the ids present on a view's grid; the same ids
  serve the online and the target branch.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

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
def _grid_votes(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, stride: int, n: int) -> np.ndarray:
    size = rows.size
    g = size // stride
    counts = np.zeros((g * g, n), np.int32)
    i = 0
    while i < size:
        # output rows sampling the same stored row within one cell row vote identically: count them once
        weight = 1
        while i + weight < size and rows[i + weight] == rows[i] and (i + weight) // stride == i // stride:
            weight += 1
        line = labels[rows[i]]
        base = (i // stride) * g
        for cj in range(g):
            j0 = cj * stride
            current = line[cols[j0]]
            run = 0
            for j in range(j0, j0 + stride):
                label = line[cols[j]]
                if label == current:
                    run += 1
                else:
                    counts[base + cj, current] += run * weight
                    current = label
                    run = 1
            counts[base + cj, current] += run * weight
        i += weight
    out = np.empty(g * g, np.int64)
    for c in range(g * g):
        best = 0
        for k in range(1, n):
            if counts[c, k] > counts[c, best]:
                best = k
        out[c] = best
    return out


def view_grid(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, stride: int, n_ids: int) -> np.ndarray:
    """(G, G) int64 majority ids of the view whose mask is ``labels[rows][:, cols]`` ((S,) int64 positions).

    ``labels`` is the full (H, W) int32 label map with ids 0..``n_ids``-1. Maps with more than 1024 ids take the
    numpy path (the per-cell histogram would be too wide).
    """
    g = rows.size // stride
    if n_ids > _COMPACT_ABOVE or rows.size % stride or rows.size != cols.size:
        return majority_grid(labels[rows][:, cols], stride)
    return _grid_votes(labels, rows, cols, stride, n_ids).reshape(g, g)


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
