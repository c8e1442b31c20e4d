"""SoCo's boxes: carried exactly through crop, DCT-scaled decode, resize and flip (property tests: a box's pixels
go where their image pixels go), jitter, K-sampling among proposals overlapping the views' intersection, FPN
level thresholds, and reading a named filter's stored keep list."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regionshards.trainer.methods.soco_boxes import (
    NO_ID,
    assign_levels,
    candidate_boxes,
    clip,
    crop_corners,
    from_view,
    intersection,
    jitter,
    overlapping,
    sample_boxes,
    to_view,
    xywh_to_corners,
)
from regionshards.trainer.transforms import Crop, mask_positions, resize_mask


@st.composite
def view_case(draw: st.DrawFn) -> tuple[int, int, int, Crop, int, np.ndarray]:
    """(H, W, scale, crop on the 1/scale grid, view side, one stored [x, y, w, h] box)."""
    scale = draw(st.sampled_from([1, 2, 4]))
    gh, gw = draw(st.integers(4, 40)), draw(st.integers(4, 40))  # decoded grid
    height, width = gh * scale - draw(st.integers(0, scale - 1)), gw * scale - draw(st.integers(0, scale - 1))
    ch, cw = draw(st.integers(1, gh)), draw(st.integers(1, gw))
    crop = Crop(draw(st.integers(0, gh - ch)), draw(st.integers(0, gw - cw)), ch, cw, draw(st.booleans()))
    size = draw(st.integers(2, 48))
    x, y = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    box = np.array([x, y, draw(st.integers(1, width - x)), draw(st.integers(1, height - y))])
    return height, width, scale, crop, size, box


@settings(max_examples=300, deadline=None)
@given(view_case())
def test_a_box_covers_exactly_the_view_pixels_sampled_from_inside_it(case) -> None:
    height, width, scale, crop, size, box = case
    inside = np.zeros((height, width), np.int32)
    x, y, w, h = box
    inside[y : y + h, x : x + w] = 1
    # the view of the box's indicator mask: each view pixel takes the stored pixel its centre samples
    # (``transforms.mask_positions``, the positions the image is resized around), mirrored when flipped
    sampled = resize_mask(inside, crop, scale, size).astype(bool)
    vb = to_view(xywh_to_corners(box), crop, scale, size, (height, width))[0]
    centres = np.arange(size) + 0.5
    in_x = (centres >= vb[0]) & (centres < vb[2])
    in_y = (centres >= vb[1]) & (centres < vb[3])
    by_box = in_y[:, None] & in_x[None, :]
    # a centre exactly on an edge is inside on one side only (half-open boxes; a flip swaps the open side)
    on_x = np.isclose(centres, vb[0], atol=1e-9) | np.isclose(centres, vb[2], atol=1e-9)
    on_y = np.isclose(centres, vb[1], atol=1e-9) | np.isclose(centres, vb[3], atol=1e-9)
    ties = on_y[:, None] | on_x[None, :]
    assert np.array_equal(sampled[~ties], by_box[~ties])
    assert np.all((vb >= 0) & (vb <= size))


@settings(max_examples=200, deadline=None)
@given(view_case())
def test_the_view_map_inverts_on_the_clipped_box(case) -> None:
    _, _, scale, crop, size, box = case
    corners = xywh_to_corners(box)
    clipped = clip(corners, crop_corners(crop, scale))
    back = from_view(to_view(corners, crop, scale, size), crop, scale, size)
    if clipped[0, 2] > clipped[0, 0] and clipped[0, 3] > clipped[0, 1]:
        np.testing.assert_allclose(back, clipped, rtol=0, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(view_case())
def test_corner_pixels_follow_their_image_pixels(case) -> None:
    """The view pixels at a transformed box's inner corners sample the box's own corner pixels' neighbourhood:
    the stored pixel they read lies inside the box and is the box pixel nearest that corner (up to the view's
    sampling step)."""
    height, width, scale, crop, size, box = case
    rows, cols = mask_positions(crop, scale, (height, width), size)
    vb = to_view(xywh_to_corners(box), crop, scale, size, (height, width))[0]
    first = np.ceil(vb[:2] - 0.5).astype(int)  # first view pixel whose centre is >= the box's low edge
    last = np.ceil(vb[2:] - 0.5).astype(int) - 1  # last one whose centre is < the high edge
    if np.any(first > last) or np.any(np.isclose(vb, np.round(vb - 0.5) + 0.5, atol=1e-9)):
        return  # the box covers no view pixel centre, or an edge passes exactly through a centre
    x, y, w, h = box
    step_x = scale * crop.w / size  # stored pixels between neighbouring view-pixel centres
    step_y = scale * crop.h / size
    for u in (first[0], last[0]):
        for v in (first[1], last[1]):
            r, c = rows[v], cols[u]
            assert y <= r < y + h and x <= c < x + w
    # the extreme view pixels read the stored pixels closest to the visible box's edges (within a sampling step)
    x0, y0, x1, y1 = clip(xywh_to_corners(box), crop_corners(crop, scale))[0]
    xs = sorted({cols[first[0]], cols[last[0]]})
    ys = sorted({rows[first[1]], rows[last[1]]})
    assert xs[0] - x0 <= step_x and (x1 - 1) - xs[-1] <= step_x
    assert ys[0] - y0 <= step_y and (y1 - 1) - ys[-1] <= step_y


def test_view_map_by_hand() -> None:
    crop = Crop(y=10, x=20, h=50, w=100, flip=False)
    # stored [30, 20, 40, 25] → corners [30, 20, 70, 45] → decoded /2 → [15, 10, 35, 22.5] → clip to the crop
    # [20, 10, 35, 22.5] on the grid → minus (20, 10), times (224/100, 224/50)
    vb = to_view(xywh_to_corners([30, 20, 40, 25]), crop, 2, 224)[0]
    np.testing.assert_allclose(vb, [0.0, 0.0, 15 * 2.24, 12.5 * 4.48])
    flipped = to_view(xywh_to_corners([30, 20, 40, 25]), Crop(10, 20, 50, 100, True), 2, 224)[0]
    np.testing.assert_allclose(flipped, [224 - 15 * 2.24, 0.0, 224.0, 12.5 * 4.48])


def test_jitter_by_hand() -> None:
    rng = np.random.default_rng(5)
    boxes = np.array([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 8.0, 8.0]])
    twin = np.random.default_rng(5)
    apply = twin.random(2) < 0.5
    a, b, c, d = twin.uniform(-0.1, 0.1, size=(2, 4)).T
    out = jitter(boxes, rng, 0.5, 0.1)
    for i in range(2):
        w, h = boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]
        x0, y0 = boxes[i, 0] + a[i] * w, boxes[i, 1] + b[i] * h
        want = [x0, y0, x0 + w * (1 + c[i]), y0 + h * (1 + d[i])] if apply[i] else boxes[i]
        np.testing.assert_allclose(out[i], want)
    assert np.array_equal(jitter(boxes, np.random.default_rng(0), 0.0, 0.1), boxes)
    moved = jitter(boxes, np.random.default_rng(0), 1.0, 0.1)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.all(np.abs(moved[:, 0] - boxes[:, 0]) <= 0.1 * w + 1e-9)
    assert np.all(np.abs((moved[:, 3] - moved[:, 1]) / h - 1) <= 0.1 + 1e-9)


def test_sampling_draws_k_distinct_overlapping_proposals_then_pads_with_duplicates() -> None:
    cands = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [5, 5, 30, 30], [20, 0, 40, 8], [90, 90, 99, 99]], float)
    ids = np.array([3, 7, 8, 11, 12])
    region = np.array([0.0, 0.0, 40.0, 40.0])
    assert overlapping(cands, region).tolist() == [True, False, True, True, False]
    for seed in range(20):
        boxes, got = sample_boxes(cands, ids, region, 4, np.random.default_rng(seed))
        assert boxes.shape == (4, 4) and got.shape == (4,)
        assert set(got[:3]) == {3, 8, 11}  # the three overlapping proposals, without replacement
        assert got[3] in (3, 8, 11)  # padded with a duplicate of one of them
        assert np.array_equal(boxes, cands[[int(np.flatnonzero(ids == i)[0]) for i in got]])
    many = np.array([[i, 0, i + 5, 5] for i in range(10)], float)
    boxes, got = sample_boxes(many, np.arange(10), np.array([0.0, 0.0, 100, 100]), 4, np.random.default_rng(1))
    assert len(set(got)) == 4
    # touching is not overlapping; nothing overlapping → the region itself, without an id
    boxes, got = sample_boxes(cands[:1], ids[:1], np.array([10.0, 0, 20, 10]), 4, np.random.default_rng(0))
    assert got.tolist() == [NO_ID] * 4 and np.array_equal(boxes, np.tile([10.0, 0, 20, 10], (4, 1)))
    assert intersection(np.array([0.0, 0, 5, 5]), np.array([5.0, 0, 9, 9])) is None


def test_level_thresholds_on_sqrt_wh_in_view_pixels() -> None:
    def box(s: float, aspect: float = 1.0) -> list[float]:
        w = s * np.sqrt(aspect)
        return [3.0, 4.0, 3.0 + w, 4.0 + s * s / w]

    sides = [1, 47.9, 48, 48.01, 96, 96.5, 192, 192.5, 224, 300]
    got = assign_levels(np.array([box(s) for s in sides]), (48, 96, 192, 224))
    assert got.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    # sqrt(w h), not the longest side: a 24 x 96 box (s = 48) is P2
    assert assign_levels(np.array([[0.0, 0.0, 24.0, 96.0]]), (48, 96, 192, 224)).tolist() == [0]
    assert assign_levels(np.array([box(96.0, 4.0)]), (48, 96, 192, 224)).tolist() == [1]
    assert assign_levels(np.zeros((1, 4)), (48, 96, 192, 224)).tolist() == [0]


def test_candidates_come_from_the_stored_keep_list_and_its_fallback() -> None:
    props = {"boxes": [[0, 0, 8, 13], [2, 3, 40, 30], [1, 1, 30, 20]],
             "filters": {"ratio3size0308": {"keep": [1, 2], "used": "ratio3"},
                         "ratio3": {"keep": [], "used": "whole-image"}}}
    boxes, ids, used = candidate_boxes(props, "ratio3size0308", 32, 48)
    assert used == "ratio3" and ids.tolist() == [1, 2]
    assert boxes.tolist() == [[2, 3, 42, 33], [1, 1, 31, 21]]
    boxes, ids, used = candidate_boxes(props, "ratio3", 32, 48)
    assert used == "whole-image" and ids.tolist() == [NO_ID] and boxes.tolist() == [[0, 0, 48, 32]]
    with pytest.raises(ValueError, match="no proposal filter 'size01'"):
        candidate_boxes(props, "size01", 32, 48)
    with pytest.raises(ValueError, match="has no proposals"):
        candidate_boxes(None, "ratio3", 32, 48)
