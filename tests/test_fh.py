"""Exactness of the FH backends against skimage.segmentation.felzenszwalb, and input conversion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image
from skimage.segmentation import felzenszwalb as sk_felzenszwalb

from regionshards.proposals.fh import felzenszwalb, relabel_raster_order

DETCON = (1000, 0.8, 1000)
SOCO = (300, 0.9, 100)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina")


def resized(image: np.ndarray, long_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = long_side / max(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def reference(image: np.ndarray, params: tuple) -> np.ndarray:
    return relabel_raster_order(sk_felzenszwalb(image, *params))


@pytest.mark.parametrize("params", [DETCON, SOCO], ids=["detcon", "soco"])
@pytest.mark.parametrize("name", PHOTOS)
def test_exact_matches_skimage_on_photos(name: str, params: tuple) -> None:
    image = resized(getattr(skimage.data, name)(), 160)
    np.testing.assert_array_equal(felzenszwalb(image, *params), reference(image, params))


@pytest.mark.slow
@pytest.mark.parametrize("long_side", [224, 500])
@pytest.mark.parametrize("params", [DETCON, SOCO], ids=["detcon", "soco"])
@pytest.mark.parametrize("name", PHOTOS)
def test_exact_matches_skimage_at_benchmark_sizes(name: str, params: tuple, long_side: int) -> None:
    image = resized(getattr(skimage.data, name)(), long_side)
    np.testing.assert_array_equal(felzenszwalb(image, *params), reference(image, params))


def test_skimage_labels_are_already_in_raster_order() -> None:
    # The exact backend numbers segments by first appearance; that is skimage's own order, not a relabelling.
    image = resized(skimage.data.coffee(), 128)
    labels = sk_felzenszwalb(image, *SOCO)
    np.testing.assert_array_equal(labels, relabel_raster_order(labels))


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (2, 2), (3, 40)])
@pytest.mark.parametrize("params", [(1, 0.8, 1), SOCO])
def test_tiny_shapes(shape: tuple, params: tuple, rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    np.testing.assert_array_equal(felzenszwalb(image, *params), reference(image, params))


def test_uniform_image_is_one_segment() -> None:
    labels = felzenszwalb(np.full((40, 30, 3), 77, np.uint8))
    assert labels.dtype == np.int32 and labels.shape == (40, 30) and labels.max() == 0


def test_noise_with_small_params_matches_skimage(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    for params in [(1, 0.0, 1), (5, 0.3, 2), (100, 0.5, 20)]:
        np.testing.assert_array_equal(felzenszwalb(image, *params), reference(image, params))


def test_more_than_65535_segments(rng: np.random.Generator) -> None:
    # No smoothing, tiny scale and random colours: almost every pixel stays its own segment.
    image = rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    labels = felzenszwalb(image, scale=1, sigma=0.0, min_size=1)
    assert labels.max() + 1 > 65_535
    np.testing.assert_array_equal(labels, reference(image, (1, 0.0, 1)))


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend"):
        felzenszwalb(np.zeros((4, 4, 3), np.uint8), backend="nope")  # type: ignore[arg-type]


def test_skimage_backend_is_the_reference() -> None:
    image = resized(skimage.data.rocket(), 120)
    np.testing.assert_array_equal(felzenszwalb(image, *SOCO, backend="skimage"), reference(image, SOCO))


def test_opencv_backend_gives_a_dense_raster_ordered_segmentation() -> None:
    image = resized(skimage.data.chelsea(), 160)
    labels = felzenszwalb(image, *SOCO, backend="opencv")
    assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
    np.testing.assert_array_equal(labels, relabel_raster_order(labels))
    sizes = np.bincount(labels.ravel())
    assert sizes.min() > 0 and labels.max() >= 1


SAMPLE_PHOTOS = sorted((Path(__file__).resolve().parents[1] / "data" / "sample" / "coco" / "images").glob("*.jpg"))


@pytest.mark.parametrize("long_side", [160, 320])
@pytest.mark.parametrize("params", [DETCON, SOCO], ids=["detcon", "soco"])
@pytest.mark.parametrize("path", SAMPLE_PHOTOS, ids=[p.stem for p in SAMPLE_PHOTOS])
def test_exact_matches_skimage_on_bundled_photos(path: Path, params: tuple, long_side: int) -> None:
    image = resized(np.asarray(Image.open(path).convert("RGB")), long_side)
    np.testing.assert_array_equal(felzenszwalb(image, *params), reference(image, params))


@pytest.mark.slow
def test_exact_matches_skimage_on_eval_photos_at_full_size(eval_photos_dir: Path) -> None:
    # Every photo at full size, DetCon's and SoCo's settings on alternate photos: both on every photo made this
    # the suite's longest test (≈ 105 s, nearly all in skimage) for no new kind of input; both settings run on
    # every one of skimage's photos at 224 and 500 px above.
    paths = sorted((eval_photos_dir / "images").glob("*"))
    assert len(paths) >= 20
    for i, path in enumerate(paths):
        image = np.asarray(Image.open(path).convert("RGB"))
        params = (DETCON, SOCO)[i % 2]
        np.testing.assert_array_equal(felzenszwalb(image, *params), reference(image, params), err_msg=path.name)


def test_many_parameter_sets_equal_separate_calls() -> None:
    from regionshards.proposals import felzenszwalb_many

    params = [DETCON, SOCO, (300, 0.8, 100), (50, 0.8, 10), (1, 0.0, 1)]
    for image, axis in [(resized(skimage.data.chelsea(), 160), -1), (skimage.data.coins()[::3, ::3] / 255.0, None)]:
        many = felzenszwalb_many(image, params, channel_axis=axis)
        assert len(many) == len(params)
        for labels, p in zip(many, params, strict=True):
            np.testing.assert_array_equal(labels, felzenszwalb(image, *p, channel_axis=axis))
            np.testing.assert_array_equal(labels, reference(image, p) if axis == -1 else
                                          relabel_raster_order(sk_felzenszwalb(image, *p, channel_axis=None)))


def test_truncated_keys_decide_as_the_full_weights_do(rng: np.random.Generator) -> None:
    """The merge decides on sort keys that drop the weights' low bits (see _fh_sort) and reads a full weight
    only where the key cannot decide; made to read every full weight, it gives the same labels."""
    from regionshards.proposals import _fh_sort, fh
    from regionshards.proposals._fh_merge import segment_graph

    images = (resized(skimage.data.astronaut(), 500), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    for image in images:
        for scale, sigma, min_size in (DETCON, SOCO, (50, 0.5, 10)):
            h, w, packed, weights, id_bits, shift, _ = fh._sorted_graph(image, sigma)
            assert 0 < shift <= _fh_sort.MAX_SHIFT
            n, e = h * w, packed.size
            labels = []
            for s in (shift, _fh_sort.MAX_SHIFT + 1):
                out = np.empty(n, np.int32)
                scratch = (np.empty(n, np.int64), np.empty(e, np.uint64), np.empty(n, np.int32))
                segment_graph(packed, weights, id_bits, s, h, w, scale / 255.0, min_size, False, *scratch, out)
                labels.append(out)
            np.testing.assert_array_equal(labels[0], labels[1])


@pytest.mark.parametrize(("delta", "expected"), [(2.0**-45, [0, 0, 0]), (0.0, [0, 0, 1])])
def test_a_merge_threshold_that_the_dropped_bits_round_is_exact(delta: float, expected: list) -> None:
    """A 1 x 3 chain whose first merge threshold float32(w1 + 2 / 2) sits on a float32 rounding midpoint
    up to bits the sort key drops: the merge must read the full weight, or the second edge (weight between
    the two candidate thresholds) goes the wrong way."""
    from regionshards.proposals import _fh_sort
    from regionshards.proposals._fh_merge import segment_graph

    midpoint = 1.5 + 2.0**-24  # between float32 1.5 and 1.5 + 2**-23; ties go to even, 1.5
    w1, w2 = midpoint - 1.0 + delta, 1.5 + 2.0**-24
    weights = np.zeros(12)
    weights[0], weights[4] = w1, w2  # right edges of pixels 0 and 1
    id_bits, shift = 4, 15
    keys = [int(_fh_sort.key(np.float64(v).view(np.uint64), np.uint64(shift))) for v in (w1, w2)]
    assert keys[0] == _fh_sort.key(np.float64(midpoint - 1.0).view(np.uint64), np.uint64(shift))
    packed = np.array([keys[0] << id_bits | 0, keys[1] << id_bits | 4], dtype=np.uint64)
    labels = np.empty(3, np.int32)
    scratch = (np.empty(3, np.int64), np.empty(2, np.uint64), np.empty(3, np.int32))
    segment_graph(packed, weights, id_bits, shift, 1, 3, 2.0, 1, True, *scratch, labels)
    assert labels.tolist() == expected
