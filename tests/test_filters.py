"""SoCo's proposal filters, checked against the formulas of SoCo's selective_search/filters.py."""

from __future__ import annotations

from math import sqrt

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionshards.proposals.filters import (
    BoxFilter,
    apply_filter,
    dedupe_boxes,
    filter_boxes,
    named_filter,
    whole_image_box,
)


def soco_ratio_size(rect, image_size, r=3, lo=0.3, hi=0.8) -> bool:
    # SoCo's filter_ratio_size on one reference rect (w = max_x - min_x), written from its source.
    ih, iw = image_size
    w, h = rect[2], rect[3]
    return w >= 32 and h >= 32 and (1.0 / r) <= (w / h) <= r and lo <= sqrt(w * h) / sqrt(iw * ih) <= hi


def soco_ratio(rect, r=3) -> bool:
    w, h = rect[2], rect[3]
    return w >= 32 and h >= 32 and (1.0 / r) <= (w / h) <= r


def as_boxes(rects) -> np.ndarray:
    b = np.asarray(rects, dtype=np.float32).reshape(-1, 4).copy()
    b[:, 2:] += 1  # reference rect → pixel-covering box
    return b


rect_st = st.tuples(
    st.integers(0, 300), st.integers(0, 300), st.integers(0, 400), st.integers(0, 400)
)


@given(st.lists(rect_st, max_size=40), st.integers(32, 600), st.integers(32, 600))
def test_ratio3size0308_selects_what_soco_selected(rects, height, width) -> None:
    keep = named_filter("ratio3size0308")(as_boxes(rects), (height, width))
    assert keep.tolist() == [soco_ratio_size(r, (height, width)) for r in rects]


@given(st.lists(rect_st, max_size=40))
def test_ratio3_selects_what_soco_selected(rects) -> None:
    keep = named_filter("ratio3")(as_boxes(rects), (500, 500))
    assert keep.tolist() == [soco_ratio(r) for r in rects]


def test_boundaries_are_inclusive() -> None:
    image = (100, 100)
    # rect w=h=32 → sqrt(32*32)/100 = 0.32; w/h = 1
    assert named_filter("ratio3size0308")(as_boxes([[0, 0, 32, 32]]), image).tolist() == [True]
    assert named_filter("ratio3size0308")(as_boxes([[0, 0, 31, 32]]), image).tolist() == [False]
    assert named_filter("ratio3")(as_boxes([[0, 0, 96, 32], [0, 0, 97, 32]]), image).tolist() == [True, False]
    # pixel extent: the same boxes measured as given
    f = BoxFilter(max_aspect=3, extent="pixels")
    assert f(np.array([[0, 0, 96, 32], [0, 0, 97, 32]], np.float32), image).tolist() == [True, False]


def test_post_fallbacks_in_soco_order() -> None:
    image = (1000, 1000)
    tiny_ratio_ok = as_boxes([[0, 0, 40, 40]])  # passes ratio3, too small for size 0.3
    keep, used = apply_filter(tiny_ratio_ok, image)
    assert used == "ratio3" and keep.tolist() == [True]
    thin = as_boxes([[0, 0, 400, 40]])  # aspect 10: only the side filter keeps it
    keep, used = apply_filter(thin, image)
    assert used == "none" and keep.tolist() == [True]
    small = as_boxes([[0, 0, 10, 10]])
    keep, used = apply_filter(small, image)
    assert used == "whole-image" and not keep.any()
    keep, used = apply_filter(small, image, post=False)
    assert used == "ratio3size0308" and not keep.any()
    np.testing.assert_array_equal(whole_image_box(image), [[0, 0, 1000, 1000]])


def test_zero_proposals() -> None:
    empty = np.zeros((0, 4), np.float32)
    keep, used = apply_filter(empty, (100, 100))
    assert keep.shape == (0,) and used == "whole-image"
    assert dedupe_boxes(empty).shape == (0,)


def test_dedupe_keeps_first_occurrences_in_order() -> None:
    boxes = np.array([[5, 5, 10, 10], [0, 0, 3, 3], [5, 5, 10, 10], [1, 1, 1, 1], [0, 0, 3, 3]], np.float32)
    assert dedupe_boxes(boxes).tolist() == [0, 1, 3]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown filter 'ratio9'"):
        named_filter("ratio9")
    with pytest.raises(ValueError, match="image_size"):
        filter_boxes(np.zeros((1, 4)), (0, 10))
    with pytest.raises(ValueError, match="extent"):
        filter_boxes(np.zeros((1, 4)), (10, 10), extent="inches")  # type: ignore[arg-type]
