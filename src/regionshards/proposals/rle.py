"""COCO run-length encoding for whole label maps, byte-identical to ``pycocotools.mask``.

A label map (H, W) with dense ids 0..n-1 becomes one COCO compressed RLE per id from a single pass over
the pixels, never building per-segment masks or an (H, W, n) one-hot stack; decoding paints the runs back.
As in pycocotools, pixels are ordered down each column (Fortran order), run counts alternate background /
foreground starting with a possibly empty background run, and the counts string is ``rleToString``'s: from
the fourth count on each is stored as the difference to the count two before, in 5-bit chunks offset by 48,
0x20 marking continuation and 0x10 of the last chunk the sign. Boxes are float32 ``[x, y, w, h]`` with
``w = max_x - min_x + 1`` (``pycocotools.mask.toBbox``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._rle_kernels import (
    MAX_COUNT,
    _chars_to_counts,
    _column_major_runs,
    _counts_to_chars,
    _paint_rows,
    _run_boxes,
    _tiling_runs,
)


def _check_label_map(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Validate a dense label map; return it as C-contiguous int32/int64 and the number of ids."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D (H, W) array, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"labels must be non-empty, got shape {labels.shape}")
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(f"labels must be non-negative dense ids 0..n-1, found id {lo}")
    if hi >= labels.size:
        raise ValueError(f"labels must be dense ids 0..n-1: max id {hi} exceeds the {labels.size} pixels")
    if labels.dtype not in (np.int32, np.int64):
        labels = labels.astype(np.int64)
    return np.ascontiguousarray(labels), hi + 1


def _raise_missing_ids(present: np.ndarray) -> None:
    missing = np.flatnonzero(~present)
    if missing.size:
        shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if missing.size > 5 else "")
        raise ValueError(
            f"labels must be dense ids 0..{present.size - 1}: {missing.size} id(s) have no pixels ({shown})"
        )


def _size_of(rle: dict[str, Any], index: int) -> tuple[int, int]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"segment {index}: an RLE must be a dict with 'size' and 'counts'")
    size = rle["size"]
    if len(size) != 2:
        raise ValueError(f"segment {index}: size must be [H, W], got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h < 0 or w < 0:
        raise ValueError(f"segment {index}: size must be non-negative, got {size!r}")
    return h, w


def _list_counts(counts: Any, index: int) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"segment {index}: uncompressed counts must be a flat list of integers")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > MAX_COUNT):
        raise ValueError(f"segment {index}: run counts must lie in 0..2**32-1")
    return arr


def _gather_counts(rles: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """All segments' int64 run counts in one flat array plus (K + 1,) offsets."""
    try:  # the usual case, every counts a str (what JSON holds): one join, no per-segment conversions
        strings = [rle["counts"] for rle in rles]
        text = "".join(strings)
    except (TypeError, KeyError):  # bytes or lists among them, or not an RLE: the general path sorts them out
        text = None
    if text is not None and text.isascii():
        str_offsets = np.zeros(len(strings) + 1, np.int64)
        np.cumsum([len(c) for c in strings], out=str_offsets[1:])
        counts, offsets, bad = _chars_to_counts(np.frombuffer(text.encode("ascii"), np.uint8), str_offsets)
        if bad >= 0:
            raise ValueError(f"segment {bad}: malformed compressed RLE counts string")
        return counts, offsets
    pieces: list[np.ndarray | None] = [None] * len(rles)
    str_index: list[int] = []
    str_bytes: list[bytes] = []
    for i, rle in enumerate(rles):
        counts = rle["counts"] if isinstance(rle, dict) else None
        if isinstance(counts, str):
            try:
                counts = counts.encode("ascii")
            except UnicodeEncodeError:
                raise ValueError(f"segment {i}: compressed counts must be ASCII") from None
        if isinstance(counts, bytes | bytearray):
            str_index.append(i)
            str_bytes.append(bytes(counts))
        else:
            pieces[i] = _list_counts(counts, i)
    if str_bytes:
        # Decoding every string in one kernel call keeps 100k-segment maps cheap.
        buf = np.frombuffer(b"".join(str_bytes), np.uint8)
        str_offsets = np.zeros(len(str_bytes) + 1, np.int64)
        np.cumsum([len(s) for s in str_bytes], out=str_offsets[1:])
        counts, offsets, bad = _chars_to_counts(buf, str_offsets)
        if bad >= 0:
            raise ValueError(f"segment {str_index[bad]}: malformed compressed RLE counts string")
        if len(str_index) == len(rles):
            return counts, offsets
        for j, i in enumerate(str_index):
            pieces[i] = counts[offsets[j] : offsets[j + 1]]
    offsets = np.zeros(len(rles) + 1, np.int64)
    np.cumsum([p.size for p in pieces], out=offsets[1:])
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return flat.astype(np.int64, copy=False), offsets


def _group_runs(starts: np.ndarray, ids: np.ndarray, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-id COCO counts (flat, with (n + 1,) offsets) from the sorted runs of a dense partition."""
    order = np.argsort(ids, kind="stable")  # groups each id's runs, keeping them in pixel order
    begin = starts[order]
    end = np.append(starts[1:], n_pixels)[order]
    first = np.append(True, ids[order][1:] != ids[order][:-1])
    # Each id's counts: (gap, run) per run, then the trailing background unless the id owns the last pixel.
    gaps = begin - np.where(first, 0, np.append(0, end[:-1]))
    pairs = np.stack([gaps, end - begin], axis=1).ravel()
    last_run = np.append(np.flatnonzero(first)[1:], begin.size) - 1
    trailing = n_pixels - end[last_run]
    has_tail = trailing > 0
    counts = np.insert(pairs, 2 * (last_run[has_tail] + 1), trailing[has_tail])
    offsets = np.zeros(last_run.size + 1, np.int64)
    np.cumsum(2 * np.diff(np.append(-1, last_run)) + has_tail, out=offsets[1:])
    return counts, offsets


def _foreground_runs(counts: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Non-empty foreground runs ``[start, end)``, their segment index, and each segment's pixel total."""
    lengths = np.diff(offsets)
    segs = np.repeat(np.arange(lengths.size), lengths)
    running = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=running[1:])
    ends = running[1:] - running[offsets[:-1]][segs]  # counts restart at pixel 0 for every segment
    keep = ((np.arange(counts.size) - offsets[:-1][segs]) % 2 == 1) & (counts > 0)
    totals = running[offsets[1:]] - running[offsets[:-1]]
    return ends[keep] - counts[keep], ends[keep], segs[keep], totals


def encode_segments(labels: np.ndarray) -> list[dict[str, Any]]:
    """Encode every segment of a label map as a COCO compressed RLE.

    Args:
        labels: (H, W) integer (or bool) label map with dense ids 0..n-1, any memory order.

    Returns:
        n dicts ``{"size": [H, W], "counts": str}``, entry k for id k; each equals
        ``pycocotools.mask.encode(np.asfortranarray((labels == k).astype(np.uint8)))`` with the counts
        bytes decoded to str.

    Raises:
        ValueError: labels not 2-D, empty, non-integer, negative or not dense.
    """
    labels, n = _check_label_map(labels)
    starts, ids = _column_major_runs(labels)
    _raise_missing_ids(np.bincount(ids, minlength=n) > 0)
    counts, offsets = _group_runs(starts, ids, labels.size)
    buf, str_offsets = _counts_to_chars(counts, offsets)
    text = buf.tobytes().decode("ascii")
    size = [int(labels.shape[0]), int(labels.shape[1])]
    bounds = str_offsets.tolist()
    return [{"size": list(size), "counts": text[bounds[k] : bounds[k + 1]]} for k in range(n)]


def decode_segments(rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """Rebuild a label map from one RLE per segment (entry k becomes id k).

    Args:
        rles: K >= 1 dicts ``{"size": [H, W], "counts": str | bytes | list[int]}`` (compressed or
            uncompressed COCO RLE) that partition the image.

    Returns:
        (H, W) int32 C-contiguous label map with ids 0..K-1.

    Raises:
        ValueError: naming the segment whose size differs, whose runs do not sum to H*W, which overlaps
            another, or a pixel that no segment covers.
    """
    starts, segs, height, width = segment_runs(rles)
    return _paint_rows(starts, segs, height, width)


def paint_runs(starts: np.ndarray, segs: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) int32 C-contiguous label map of the runs ``segment_runs`` returns (``decode_segments``' map)."""
    return _paint_rows(starts, segs, height, width)


def segment_runs(rles: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The runs of a partition given as one RLE per segment, checked as ``decode_segments`` checks them.

    Returns:
        ``(starts, segs, H, W)``: (R,) int64 column-major start of every foreground run, increasing (the runs
        tile the image, each ending where the next starts), and (R,) the segment index of each run.
    """
    if len(rles) == 0:
        raise ValueError("need at least one segment to know the image size")
    sizes = [_size_of(rle, i) for i, rle in enumerate(rles)]
    height, width = sizes[0]
    for i, size in enumerate(sizes):
        if size != sizes[0]:
            raise ValueError(f"segment {i} has size {list(size)} but segment 0 has {[height, width]}")
    if height * width == 0:
        raise ValueError(f"cannot decode an empty {height}x{width} label map")
    counts, offsets = _gather_counts(rles)
    starts, segs, code, a, b = _tiling_runs(counts.astype(np.int64, copy=False), offsets, height * width)
    if code == 1:
        raise ValueError(f"segment {a}: runs sum to {b} pixels, expected H*W = {height * width}")
    if code == 2:
        raise ValueError(f"segment {a} overlaps segment {b}")
    if code == 3:
        raise ValueError(f"pixel (y={a % height}, x={a // height}) is covered by no segment")
    return starts, segs, height, width


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode one RLE (compressed str/bytes or uncompressed list) to an (H, W) uint8 0/1 mask.

    Same pixels as ``pycocotools.mask.decode(rle)`` (which warns under numpy 2), but C-contiguous.
    Raises ValueError if the runs do not sum to H*W.
    """
    height, width = _size_of(rle, 0)
    counts, _ = _gather_counts([rle])
    if int(counts.sum()) != height * width:
        raise ValueError(f"runs sum to {int(counts.sum())} pixels, expected H*W = {height * width}")
    values = (np.arange(counts.size) % 2).astype(np.uint8)
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape((height, width), order="F"))


def rle_to_counts(rle: dict[str, Any]) -> np.ndarray:
    """Run counts of one RLE (compressed str/bytes or uncompressed list) as a (m,) uint32 array."""
    if not isinstance(rle, dict) or "counts" not in rle:
        raise ValueError("an RLE must be a dict with 'counts'")
    counts, _ = _gather_counts([rle])
    return counts.astype(np.uint32)


def counts_to_string(counts: np.ndarray | Sequence[int]) -> str:
    """Compress (m,) run counts (each 0..2**32-1) to a COCO RLE counts string (pycocotools' rleToString)."""
    arr = _list_counts(counts, 0)
    buf, _ = _counts_to_chars(arr, np.array([0, arr.size], np.int64))
    return buf.tobytes().decode("ascii")


def segment_areas(rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """(K,) int64 foreground pixel counts (sum of the odd-indexed runs), as ``pycocotools.mask.area``."""
    starts, ends, segs, _ = _foreground_runs(*_gather_counts(rles))
    return np.bincount(segs, weights=ends - starts, minlength=len(rles)).astype(np.int64)


def segment_bboxes(rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """(K, 4) float32 ``[x, y, w, h]`` tight boxes, ``w = max_x - min_x + 1``; zeros for an empty mask.

    Equal to ``pycocotools.mask.toBbox`` whenever no run after the first is empty (true of every RLE
    pycocotools produces); toBbox's unsigned arithmetic gives nonsense boxes for hand-made counts with empty
    runs, which get the tight box of their pixels here.
    """
    sizes = np.array([_size_of(rle, i) for i, rle in enumerate(rles)], np.int64).reshape(-1, 2)
    starts, ends, segs, totals = _foreground_runs(*_gather_counts(rles))
    bad = np.flatnonzero(totals != sizes[:, 0] * sizes[:, 1])
    if bad.size:
        raise ValueError(f"segment {bad[0]}: runs sum to {totals[bad[0]]} pixels, not H*W of its size")
    return _run_boxes(starts, ends, segs, sizes[:, 0])[1]


def area_and_bbox(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas and boxes of every segment straight from a dense label map (no RLE round trip).

    Args:
        labels: (H, W) integer label map with dense ids 0..n-1.

    Returns:
        ``(areas, boxes)``: (n,) int64 pixel counts and (n, 4) float32 ``[x, y, w, h]`` with
        ``w = max_x - min_x + 1`` (and likewise h), equal to ``pycocotools.mask.area``/``toBbox`` of
        ``encode_segments(labels)``.
    """
    labels, n = _check_label_map(labels)
    starts, ids = _column_major_runs(labels)
    ends = np.append(starts[1:], labels.size)
    areas, boxes = _run_boxes(starts, ends, ids, np.full(n, labels.shape[0], np.int64))
    _raise_missing_ids(areas > 0)
    return areas, boxes
