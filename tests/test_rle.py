"""COCO RLE codec for label maps: byte-identical to pycocotools, round trips, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils
from skimage import data
from skimage.segmentation import felzenszwalb

from regionshards.proposals._rle_kernels import _tiling_runs
from regionshards.proposals.fh import relabel_raster_order
from regionshards.proposals.rle import (
    area_and_bbox,
    counts_to_string,
    decode_mask,
    decode_segments,
    encode_segments,
    rle_to_counts,
    segment_areas,
    segment_bboxes,
)


def reference_rles(labels: np.ndarray) -> list[dict]:
    n = int(labels.max()) + 1
    one_hot = np.asfortranarray((labels[:, :, None] == np.arange(n)).astype(np.uint8))
    return mask_utils.encode(one_hot)


def assert_matches_pycocotools(labels: np.ndarray) -> list[dict]:
    ours = encode_segments(labels)
    ref = reference_rles(labels)
    assert len(ours) == len(ref)
    for k, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert isinstance(a["counts"], str)
        assert a["counts"] == b["counts"].decode("ascii"), f"segment {k}"
        assert a["size"] == b["size"] == list(labels.shape)
    decoded = decode_segments(ours)
    assert decoded.dtype == np.int32 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, labels)
    # pycocotools.mask.decode warns under numpy 2 (its Masks.__array__ lacks the copy keyword), so the
    # decode cross-check goes through the injective encoder: pycocotools must see exactly its own RLEs.
    for k, rle in enumerate(ref):
        again = mask_utils.encode(np.asfortranarray((decoded == k).astype(np.uint8)))
        assert again["counts"] == rle["counts"]
        mask = decode_mask(rle)
        assert mask.dtype == np.uint8 and mask.shape == labels.shape
        np.testing.assert_array_equal(mask, labels == k)
    areas = segment_areas(ours)
    boxes = segment_bboxes(ours)
    assert areas.dtype == np.int64 and boxes.dtype == np.float32 and boxes.shape == (len(ref), 4)
    np.testing.assert_array_equal(areas, mask_utils.area(ref))
    np.testing.assert_array_equal(boxes, mask_utils.toBbox(ref))
    fast_areas, fast_boxes = area_and_bbox(labels)
    assert fast_areas.dtype == np.int64 and fast_boxes.dtype == np.float32
    np.testing.assert_array_equal(fast_areas, areas)
    np.testing.assert_array_equal(fast_boxes, boxes)
    return ours


def dense(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


# --------------------------------------------------------------------------------------------- encode


@pytest.mark.parametrize("seed", range(6))
def test_random_label_maps_match_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 60, size=2)
    n = int(rng.integers(1, 40))
    # Blocky maps have long runs and runs that wrap between columns; noise has single-pixel runs.
    coarse = rng.integers(0, n, size=(h // 7 + 1, w // 5 + 1))
    blocky = np.kron(coarse, np.ones((7, 5), np.int64))[:h, :w]
    noise = rng.integers(0, n, size=(h, w))
    for labels in (blocky, noise):
        assert_matches_pycocotools(dense(labels))


@pytest.mark.parametrize(
    ("name", "scale", "step"),
    [("astronaut", 800, 1), ("coffee", 300, 2), ("chelsea", 100, 2), ("astronaut", 50, 4)],
)
def test_photo_segments_match_pycocotools(name: str, scale: float, step: int) -> None:
    image = getattr(data, name)()[::step, ::step]
    labels = felzenszwalb(image, scale=scale, sigma=0.8, min_size=50)
    assert labels.max() > 0
    assert_matches_pycocotools(labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64])
def test_integer_dtypes(dtype: type) -> None:
    labels = dense(np.random.default_rng(1).integers(0, 5, size=(9, 11)))
    ours = encode_segments(labels.astype(dtype))
    assert ours == encode_segments(labels)
    assert ours == encode_segments(np.asfortranarray(labels))
    assert ours == encode_segments(labels.T.copy().T)


def test_bool_label_map() -> None:
    labels = np.zeros((4, 6), bool)
    labels[1:3, 2:5] = True
    assert encode_segments(labels) == encode_segments(labels.astype(np.int64))


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (5, 5)])
def test_uniform_map_is_one_segment(shape: tuple[int, int]) -> None:
    labels = np.zeros(shape, np.int64)
    (rle,) = assert_matches_pycocotools(labels)
    np.testing.assert_array_equal(rle_to_counts(rle), [0, shape[0] * shape[1]])


def test_single_pixel_image() -> None:
    assert encode_segments(np.zeros((1, 1), np.uint8)) == [{"size": [1, 1], "counts": "01"}]


@pytest.mark.parametrize("shape", [(1, 23), (23, 1)])
def test_thin_maps(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    assert_matches_pycocotools(dense(rng.integers(0, 4, size=shape)))
    assert_matches_pycocotools(np.arange(23).reshape(shape))


def test_more_than_65535_segments() -> None:
    rng = np.random.default_rng(3)
    labels = rng.permutation(300 * 300).reshape(300, 300)  # every pixel its own segment
    rles = encode_segments(labels)
    assert len(rles) == 90_000
    np.testing.assert_array_equal(decode_segments(rles), labels)
    np.testing.assert_array_equal(segment_areas(rles), np.ones(90_000))
    ys, xs = np.divmod(np.argsort(labels, axis=None), 300)
    expected = np.stack([xs, ys, np.ones_like(xs), np.ones_like(ys)], axis=1)
    np.testing.assert_array_equal(segment_bboxes(rles), expected)
    np.testing.assert_array_equal(area_and_bbox(labels)[1], expected)
    for k in rng.choice(90_000, size=50, replace=False):
        ref = mask_utils.encode(np.asfortranarray((labels == k).astype(np.uint8)))
        assert rles[k]["counts"] == ref["counts"].decode("ascii")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([[0, 2], [2, 0]]), "dense"),
        (np.array([[1, 1], [2, 2]]), "dense"),
        (np.array([[0, 9]]), "dense"),
        (np.array([[0, -1]]), "non-negative"),
        (np.zeros((2, 2, 2), np.int64), "2-D"),
        (np.zeros(4, np.int64), "2-D"),
        (np.zeros((0, 0), np.int64), "non-empty"),
        (np.zeros((0, 3), np.int64), "non-empty"),
        (np.zeros((2, 2), np.float64), "integer"),
    ],
)
def test_encode_rejects_bad_label_maps(labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_segments(labels)
    with pytest.raises(ValueError, match=message):
        area_and_bbox(labels)


# --------------------------------------------------------------------------------------------- decode


def test_decode_accepts_bytes_and_uncompressed_counts() -> None:
    labels = dense(np.random.default_rng(4).integers(0, 3, size=(6, 7)))
    rles = encode_segments(labels)
    mixed = [
        rles[0],
        {"size": rles[1]["size"], "counts": rles[1]["counts"].encode("ascii")},
        {"size": tuple(rles[2]["size"]), "counts": rle_to_counts(rles[2]).tolist()},
    ]
    np.testing.assert_array_equal(decode_segments(mixed), labels)
    uncompressed = [{"size": r["size"], "counts": [int(c) for c in rle_to_counts(r)]} for r in rles]
    np.testing.assert_array_equal(decode_segments(uncompressed), labels)


def test_decode_tolerates_empty_runs_in_uncompressed_counts() -> None:
    # [0, 2, 0, 2] is the same mask as [0, 4]; such counts are legal uncompressed RLE.
    rles = [{"size": [2, 3], "counts": [0, 2, 0, 2, 2]}, {"size": [2, 3], "counts": [4, 2]}]
    np.testing.assert_array_equal(decode_segments(rles), [[0, 0, 1], [0, 0, 1]])


def test_decode_rejects_mismatched_sizes() -> None:
    rles = encode_segments(np.array([[0, 1], [1, 1]]))
    rles[1]["size"] = [1, 4]
    with pytest.raises(ValueError, match="segment 1 has size"):
        decode_segments(rles)


def test_decode_rejects_wrong_total() -> None:
    rles = [{"size": [2, 2], "counts": [0, 4]}, {"size": [2, 2], "counts": [4, 1]}]
    with pytest.raises(ValueError, match="segment 1: runs sum to 5"):
        decode_segments(rles)


def test_decode_rejects_overlap() -> None:
    rles = [
        {"size": [2, 2], "counts": [0, 2, 2]},
        {"size": [2, 2], "counts": [1, 3]},
        {"size": [2, 2], "counts": [4]},
    ]
    with pytest.raises(ValueError, match="segment 1 overlaps segment 0"):
        decode_segments(rles)


def test_decode_rejects_incomplete_coverage() -> None:
    rles = [{"size": [2, 3], "counts": [0, 2, 4]}, {"size": [2, 3], "counts": [3, 3]}]
    with pytest.raises(ValueError, match=r"pixel \(y=0, x=1\) is covered by no segment"):
        decode_segments(rles)
    with pytest.raises(ValueError, match=r"pixel \(y=1, x=2\)"):
        decode_segments([{"size": [2, 3], "counts": [0, 5, 1]}])


@pytest.mark.parametrize(
    ("rles", "message"),
    [
        ([], "at least one"),
        ([{"size": [2, 2]}], "'size' and 'counts'"),
        ([{"size": [2], "counts": "04"}], "size must be"),
        ([{"size": [0, 0], "counts": ""}], "empty"),
        ([{"size": [2, 2], "counts": "0"}, {"size": [2, 2], "counts": "0\x7f"}], "segment 1: malformed"),
        ([{"size": [2, 2], "counts": "0d"}], "malformed"),  # continuation bit on the last character
        ([{"size": [2, 2], "counts": [0, -4]}], "0..2\\*\\*32-1"),
        ([{"size": [2, 2], "counts": "0é"}], "ASCII"),
    ],
)
def test_decode_rejects_malformed(rles: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_segments(rles)


# --------------------------------------------------------------------------------------------- helpers


def test_counts_to_string_known_values() -> None:
    # Hand-checked against rleToString: 20 = 0b10100 needs a continuation chunk ('d' = 48 + 0x20 + 20 & 0x1f,
    # then '0'); the fourth count is stored as a delta to the second (3 - 5 = -2 → 48 + 0x1e = 'N').
    assert counts_to_string([20]) == "d0"
    assert counts_to_string([0, 20]) == "0d0"
    assert counts_to_string([1, 5, 2, 3]) == "152N"
    np.testing.assert_array_equal(rle_to_counts({"counts": "152N"}), [1, 5, 2, 3])
    assert rle_to_counts({"counts": "152N"}).dtype == np.uint32
    assert counts_to_string([]) == ""


def test_counts_to_string_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        counts_to_string([2**32])
    with pytest.raises(ValueError):
        counts_to_string([-1])


def test_segment_bboxes_of_empty_mask_is_zero() -> None:
    rle = {"size": [3, 4], "counts": [12]}
    np.testing.assert_array_equal(segment_bboxes([rle]), [[0, 0, 0, 0]])
    np.testing.assert_array_equal(
        segment_bboxes([rle]), mask_utils.toBbox([mask_utils.frPyObjects(rle, 3, 4)])
    )
    np.testing.assert_array_equal(segment_areas([rle]), [0])


# --------------------------------------------------------------------------------------------- properties

label_maps = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int32, np.int64]),
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    elements=st.integers(0, 6),
).map(dense)


@settings(max_examples=150, deadline=None)
@given(label_maps)
def test_property_round_trip_and_pycocotools(labels: np.ndarray) -> None:
    rles = encode_segments(labels)
    np.testing.assert_array_equal(decode_segments(rles), labels)
    ref = reference_rles(labels)
    assert [r["counts"] for r in rles] == [r["counts"].decode("ascii") for r in ref]
    np.testing.assert_array_equal(area_and_bbox(labels)[1], mask_utils.toBbox(ref))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=40))
def test_property_string_codec_round_trip(counts: list[int]) -> None:
    text = counts_to_string(counts)
    assert text.isascii()
    np.testing.assert_array_equal(rle_to_counts({"counts": text}), np.array(counts, np.uint32))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**29 - 1), min_size=1, max_size=40))
def test_property_string_codec_matches_pycocotools(counts: list[int]) -> None:
    # pycocotools sizes its buffer for 6 characters per count, so stay where its deltas fit in 6 — and its
    # rleToString writes the closing NUL one byte past that buffer when every count takes all 6 (heap
    # corruption that aborted later tests), so end with a count of one character (a delta of 0, or a 0 among
    # the first three counts, which are stored as they are).
    counts = [*counts, counts[-2] if len(counts) >= 3 else 0]
    total = sum(counts)
    ref = mask_utils.frPyObjects({"size": [1, total], "counts": counts}, 1, total)
    assert counts_to_string(counts) == ref["counts"].decode("ascii")


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.lists(st.integers(1, 36), max_size=6), st.booleans())
def test_property_areas_and_bboxes_match_pycocotools(h: int, w: int, runs: list[int], lead: bool) -> None:
    # Any mask RLE without empty runs, optionally with the empty leading background run of a mask that
    # starts in the foreground.
    cuts = sorted({int(c) for c in np.cumsum(runs) if c < h * w})
    counts = ([0] if lead else []) + np.diff([0, *cuts, h * w]).tolist()
    rle = {"size": [h, w], "counts": counts}
    reference = [mask_utils.frPyObjects(rle, h, w)]
    np.testing.assert_array_equal(segment_bboxes([rle]), mask_utils.toBbox(reference))
    np.testing.assert_array_equal(segment_areas([rle]), mask_utils.area(reference))


def test_segment_runs_tile_the_image_in_column_major_order(rng: np.random.Generator) -> None:
    from regionshards.proposals.rle import segment_runs

    labels = relabel_raster_order(rng.integers(0, 5, size=(13, 17)))
    starts, segs, h, w = segment_runs(encode_segments(labels))
    assert (h, w) == labels.shape and starts[0] == 0 and np.all(np.diff(starts) > 0)
    flat = labels.ravel(order="F")
    np.testing.assert_array_equal(flat[starts], segs)
    ends = np.append(starts[1:], flat.size)
    for start, end, seg in zip(starts, ends, segs, strict=True):
        assert (flat[start:end] == seg).all()


# --------------------------------------------------------------------------------------- tiling runs


def _reference_tiling(counts: np.ndarray, offsets: np.ndarray, n_pixels: int) -> tuple:
    """The tiling check spelled out with numpy: runs in segment order, stable argsort by start, then a sweep."""
    starts, ends, segs = [], [], []
    for s in range(offsets.size - 1):
        c = counts[offsets[s] : offsets[s + 1]]
        if int(c.sum()) != n_pixels:
            return 1, s, int(c.sum())
        pos = np.concatenate([[0], np.cumsum(c)])
        for i in range(1, c.size, 2):
            if c[i] > 0:
                starts.append(pos[i]), ends.append(pos[i + 1]), segs.append(s)
    order = np.argsort(np.array(starts, np.int64), kind="stable")
    starts, ends, segs = (np.array(a, np.int64)[order] for a in (starts, ends, segs))
    covered = 0
    for r in range(starts.size):
        if starts[r] < covered:
            return 2, segs[r], segs[r - 1], starts, segs
        if starts[r] > covered:
            return 3, covered, 0, starts, segs
        covered = ends[r]
    if covered < n_pixels:
        return 3, covered, 0, starts, segs
    return 0, 0, 0, starts, segs


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400), st.integers(1, 90), st.integers(0, 2**32 - 1), st.sampled_from(["tile", "random",
                                                                                             "stacked", "crowded"]))
def test_tiling_runs_sort_and_check_like_a_stable_argsort(n_pixels: int, k: int, seed: int, kind: str) -> None:
    """Partitions (kept whole, or as given), random overlapping run lists, and many segments stacked on the same
    pixels (crowded buckets: the argsort path) give the reference's runs, order and verdict."""
    rng = np.random.default_rng(seed)
    pieces = []
    if kind == "tile":
        labels = rng.integers(0, k, n_pixels)
        for s in range(k):
            fg = np.concatenate([[0], (labels == s).astype(np.int8), [0]])
            edges = np.flatnonzero(np.diff(fg))
            bounds = np.concatenate([[0], edges, [n_pixels]])
            pieces.append(np.diff(bounds) if edges.size else np.array([n_pixels]))
    else:
        for _ in range(k):
            if kind in ("stacked", "crowded"):  # crowded: every run starts at pixel 0
                a = int(rng.integers(0, n_pixels)) if kind == "stacked" else 0
                pieces.append(np.array([a, n_pixels - a]))
            else:
                cuts = np.sort(rng.integers(0, n_pixels + 1, int(rng.integers(0, 8))))
                pieces.append(np.diff(np.concatenate([[0], cuts, [n_pixels]])))
    counts = np.concatenate(pieces).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum([p.size for p in pieces])]).astype(np.int64)
    starts, segs, code, a, b = _tiling_runs(counts, offsets, n_pixels)
    expected = _reference_tiling(counts, offsets, n_pixels)
    assert (code, a, b) == expected[:3]
    if code != 1:
        assert np.array_equal(starts, expected[3]) and np.array_equal(segs, expected[4])
