"""Selective search: same regions, same order, same sizes as the reference packages."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from reference_ss import reference_regions
from regionshards.proposals.ss import selective_search

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina")
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def resized(image: np.ndarray, long_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = long_side / max(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def assert_same_as_reference(image: np.ndarray, variant: str, **params) -> None:
    ours = selective_search(image, variant=variant, **params)
    rects, sizes = reference_regions(image, variant, **params)
    np.testing.assert_array_equal(ours.reference_rects, rects)
    np.testing.assert_array_equal(ours.sizes, sizes)


def sample_photos() -> list[Path]:
    return sorted(SAMPLE.rglob("*.jpg"))


@pytest.mark.parametrize("variant", ["soco", "alpacadb"])
@pytest.mark.parametrize("name", PHOTOS)
def test_faithful_variants_match_the_reference(name: str, variant: str) -> None:
    assert_same_as_reference(resized(getattr(skimage.data, name)(), 128), variant)


@pytest.mark.parametrize("long_side", [160, 320])
@pytest.mark.parametrize("variant", ["soco", "alpacadb"])
def test_bundled_photos_match_the_reference(long_side: int, variant: str) -> None:
    photos = sample_photos()
    if not photos:
        pytest.skip(f"no bundled photos under {SAMPLE}")
    for path in photos:
        image = np.asarray(Image.open(path).convert("RGB"))
        assert_same_as_reference(resized(image, long_side), variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["soco", "alpacadb"])
@pytest.mark.parametrize("name", PHOTOS)
def test_faithful_variants_match_the_reference_at_500px(name: str, variant: str) -> None:
    assert_same_as_reference(resized(getattr(skimage.data, name)(), 500), variant)


def test_boxes_cover_the_region_pixels_one_pixel_wider_than_the_reference() -> None:
    image = resized(skimage.data.coffee(), 96)
    props = selective_search(image)
    seg = props.segments
    assert seg is not None
    for k in range(int(seg.max()) + 1):
        ys, xs = np.nonzero(seg == k)
        x, y, w, h = props.boxes[k]
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert props.sizes[k] == xs.size and props.levels[k] == 0
    assert props.boxes.dtype == np.float32
    np.testing.assert_array_equal(props.reference_rects[:, 2:], props.boxes[:, 2:].astype(np.int64) - 1)


def test_merges_record_children_levels_and_union_boxes() -> None:
    props = selective_search(resized(skimage.data.astronaut(), 128))
    n_initial = int(props.segments.max()) + 1
    assert len(props) > n_initial
    for t in range(n_initial, len(props)):
        i, j = props.children[t]
        assert i < t and j < t
        assert props.sizes[t] == props.sizes[i] + props.sizes[j]
        assert props.levels[t] == max(props.levels[i], props.levels[j]) + 1
        x0 = min(props.boxes[i, 0], props.boxes[j, 0])
        x1 = max(props.boxes[i, 0] + props.boxes[i, 2], props.boxes[j, 0] + props.boxes[j, 2])
        assert props.boxes[t, 0] == x0 and props.boxes[t, 0] + props.boxes[t, 2] == x1


@pytest.mark.parametrize("shape", [(1, 1), (1, 30), (30, 1), (5, 7)])
@pytest.mark.parametrize("variant", ["soco", "alpacadb"])
def test_tiny_images(shape: tuple, variant: str, rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    assert_same_as_reference(image, variant, scale=1, sigma=0.0, min_size=1)
    assert_same_as_reference(image, variant)


def test_uniform_image_is_one_region_and_no_merge() -> None:
    props = selective_search(np.full((20, 30, 3), 128, np.uint8))
    np.testing.assert_array_equal(props.boxes, [[0, 0, 30, 20]])
    assert props.sizes.tolist() == [600]


def test_ties_everywhere_follow_the_reference_order() -> None:
    # A grid of identical blocks: every neighbour pair has the same similarity, so the merge order is decided
    # by the reference's tie rule alone (the last inserted maximum wins).
    block = np.zeros((12, 12, 3), np.uint8)
    block[2:10, 2:10] = 200
    image = np.tile(block, (4, 5, 1))
    for variant in ("soco", "alpacadb"):
        assert_same_as_reference(image, variant, scale=1, sigma=0.0, min_size=1)


def test_noise_with_many_regions_matches_the_reference(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    assert_same_as_reference(image, "soco", scale=20, sigma=0.5, min_size=5)


@pytest.mark.parametrize("dtype", ["uint16", "float32", "float64", "bool", "int32"])
def test_other_dtypes_than_uint8_are_refused_in_one_line(dtype: str) -> None:
    # The reference accepts them but histograms the raw values over 0..255; not reproduced, so refused.
    image = np.zeros((8, 8, 3), dtype=dtype)
    with pytest.raises(ValueError, match=f"dtype {dtype}") as info:
        selective_search(image)
    assert "\n" not in str(info.value)


def test_uint8_rgba_loses_its_alpha() -> None:
    rgb = resized(skimage.data.coffee(), 64)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(selective_search(rgba).boxes, selective_search(rgb).boxes)


def test_grey_input_is_treated_as_its_rgb_copy() -> None:
    grey = resized(skimage.data.camera(), 96)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(selective_search(grey).boxes, selective_search(rgb).boxes)


@pytest.mark.parametrize("variant", ["opencv-fast", "opencv-quality"])
def test_opencv_variants_are_deterministic_boxes_inside_the_image(variant: str) -> None:
    image = resized(skimage.data.chelsea(), 96)
    a = selective_search(image, variant=variant)
    b = selective_search(image, variant=variant)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert len(a) > 0 and a.segments is None
    h, w = image.shape[:2]
    assert (a.boxes[:, :2] >= 0).all() and (a.boxes[:, 2:] >= 1).all()
    assert (a.boxes[:, 0] + a.boxes[:, 2] <= w).all() and (a.boxes[:, 1] + a.boxes[:, 3] <= h).all()


def test_opencv_rejects_min_size_and_unknown_variants_are_rejected() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="min_size"):
        selective_search(image, min_size=10, variant="opencv-fast")
    with pytest.raises(ValueError, match="variant"):
        selective_search(image, variant="nope")  # type: ignore[arg-type]


@pytest.mark.slow
def test_soco_matches_the_reference_on_eval_photos(eval_photos_dir: Path) -> None:
    # Real photos at a long side of 320 px (the reference takes about a second per full-size photo).
    for path in sorted((eval_photos_dir / "images").glob("*"))[::3]:
        image = resized(np.asarray(Image.open(path).convert("RGB")), 320)
        assert_same_as_reference(image, "soco")


@pytest.mark.parametrize("variant", ["soco", "alpacadb"])
def test_segments_and_proposals_equal_the_two_separate_calls(variant: str) -> None:
    from regionshards.proposals import felzenszwalb, segments_and_proposals

    image = resized(skimage.data.astronaut(), 128)
    for segments, proposals in [((1000, 0.8, 1000), (300, 0.9, 100)), ((300, 0.9, 100), (300, 0.9, 100)),
                                ((500, 0.9, 50), (300, 0.9, 100))]:
        labels, props = segments_and_proposals(image, segments, proposals, variant)
        np.testing.assert_array_equal(labels, felzenszwalb(image, *segments))
        expected = selective_search(image, *proposals, variant=variant)
        for field in ("boxes", "sizes", "levels", "children", "segments"):
            np.testing.assert_array_equal(getattr(props, field), getattr(expected, field))
    with pytest.raises(ValueError, match="uint8"):
        segments_and_proposals(image.astype(np.float32))
    with pytest.raises(ValueError, match="faithful"):
        segments_and_proposals(image, variant="opencv-fast")  # type: ignore[arg-type]
