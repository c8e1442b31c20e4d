"""The exact FH backend equals skimage.segmentation.felzenszwalb (0.26) on every input kind skimage accepts:
grey as one channel, any channel count, every integer / float / bool dtype, channel_axis, scale <= 0 —
or refuses it with a one-line ValueError. skimage's own test_felzenszwalb.py cases are re-expressed here
(their weak assertions, and equality with skimage on their inputs)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.segmentation import felzenszwalb as sk_felzenszwalb
from skimage.util import img_as_float64

from regionshards.proposals import fh
from regionshards.proposals._image import skimage_channels, skimage_float64
from regionshards.proposals.fh import felzenszwalb, relabel_raster_order


def reference(image: np.ndarray, scale: float, sigma: float, min_size: int, channel_axis: int | None = -1):
    with warnings.catch_warnings():
        # skimage warns (RuntimeWarning) on more than 3 channels and still segments them.
        warnings.simplefilter("ignore", RuntimeWarning)
        labels = sk_felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=channel_axis)
    return relabel_raster_order(labels)


def assert_same(image: np.ndarray, scale: float, sigma: float, min_size: int, channel_axis: int | None = -1):
    ours = felzenszwalb(image, scale, sigma, min_size, channel_axis=channel_axis)
    np.testing.assert_array_equal(ours, reference(image, scale, sigma, min_size, channel_axis))
    return ours


# --- skimage's own cases (skimage/segmentation/tests/test_felzenszwalb.py), re-expressed -------------------


def test_skimage_grey_case() -> None:
    img = np.zeros((20, 21))
    img[:10, 10:] = 0.2
    img[10:, :10] = 0.4
    img[10:, 10:] = 0.6
    seg = assert_same(img, 1, 0, 20)
    assert np.unique(seg).size == 4
    for i in range(4):
        hist = np.histogram(img[seg == i], bins=[0, 0.1, 0.3, 0.5, 1])[0]
        assert hist[i] > 40


@pytest.mark.parametrize("min_size", range(10, 100, 10))
def test_skimage_minsize_case(min_size: int) -> None:
    for img in (skimage.data.coins()[20:168, 0:128], skimage.data.coffee()[::4, ::4]):
        seg = assert_same(img, 1, 3, min_size)
        assert np.bincount(seg.ravel()).min() >= min_size


@pytest.mark.parametrize("channel_axis", [0, -1])
def test_skimage_3d_case(channel_axis: int) -> None:
    grey = np.zeros((10, 10))
    rgb = np.moveaxis(np.zeros((10, 10, 3)), -1, channel_axis)
    ten = np.zeros((10, 10, 10))
    assert_same(grey, 1, 0.8, 20, channel_axis=-1)
    assert_same(grey, 1, 0.8, 20, channel_axis=None)
    assert_same(rgb, 1, 0.8, 20, channel_axis=channel_axis)
    assert_same(ten, 1, 0.8, 20, channel_axis=channel_axis)  # skimage warns here; we segment silently
    for image in (rgb, ten):
        with pytest.raises(ValueError, match="channel_axis=None"):
            felzenszwalb(image, channel_axis=None)


def test_skimage_color_case() -> None:
    img = np.zeros((20, 21, 3))
    img[:10, :10, 0] = 1
    img[10:, :10, 1] = 1
    img[10:, 10:, 2] = 1
    seg = assert_same(img, 1, 0, 20)
    assert np.unique(seg).size == 4
    assert (seg[:10, :10] == 0).all() and (seg[10:, :10] == 2).all()
    assert (seg[:10, 10:] == 1).all() and (seg[10:, 10:] == 3).all()


def test_skimage_merging_case_scale_zero_runs_only_the_min_size_pass() -> None:
    img = np.array([[0, 0.3], [0.7, 1]])
    seg = assert_same(img, 0, 0, 2)
    np.testing.assert_array_equal(seg, [[0, 0], [1, 1]])


# --- the cases the issue measured, and every dtype --------------------------------------------------------


@pytest.mark.parametrize("min_size", [10, 40, 90])
def test_grey_coins_is_one_channel(min_size: int) -> None:
    # Replicating grey to RGB would make every weight sqrt(3) larger (573 vs 460 segments at min_size 10).
    assert_same(skimage.data.coins(), 1, 0.8, min_size)


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
)
@pytest.mark.parametrize("channels", [0, 1, 3])
def test_every_dtype(dtype: str, channels: int) -> None:
    rgb = skimage.data.astronaut()[::8, ::8]
    base = rgb[:, :, 0] if channels == 0 else rgb[:, :, :channels]
    kind = np.dtype(dtype)
    if kind.kind == "f":
        image = (base / 255.0 * 1.7 - 0.3).astype(kind)  # floats as given, also outside [0, 1]
    elif kind.kind == "i":
        image = (base.astype(np.int64) * (np.iinfo(kind).max // 255) * 2 - np.iinfo(kind).max).astype(kind)
    else:
        image = (base.astype(np.uint64) * (np.iinfo(kind).max // 255)).astype(kind)
    for params in [(300, 0.9, 100), (1, 0.5, 5)]:
        assert_same(image, *params, channel_axis=None if channels == 0 else -1)


def test_bool_images() -> None:
    image = skimage.data.horse()[::4, ::4]
    assert image.dtype == np.bool_
    assert_same(image, 1, 0.8, 20)
    assert_same(np.dstack([image, ~image]), 50, 0.0, 5)


@pytest.mark.parametrize("channels", [2, 4, 7, 8, 9, 16, 17, 33])
def test_multichannel_other_than_three(channels: int, rng: np.random.Generator) -> None:
    image = rng.random((23, 19, channels))
    assert_same(image, 20, 0.8, 5)
    assert_same((image * 255).astype(np.uint8), 20, 0.8, 5)


@pytest.mark.parametrize("scale", [0, -3.5, 1e-300, 1e300, np.inf])
def test_degenerate_scales(scale: float) -> None:
    image = skimage.data.astronaut()[::10, ::10]
    assert_same(image, scale, 0.8, 20)
    assert_same(image, scale, 0.8, 0)


@pytest.mark.parametrize("min_size", [-5, 0, 1, 10**9, 2**63 - 1, -(2**63)])
def test_min_size_extremes(min_size: int) -> None:
    assert_same(skimage.data.camera()[::12, ::12], 10, 0.8, min_size)


@pytest.mark.parametrize("sigma", [0.0, 1e-16, 1e-3, 0.3, 5.0, 40.0])
def test_sigmas_including_kernels_longer_than_the_image(sigma: float) -> None:
    image = skimage.data.chelsea()[::40, ::40]
    assert_same(image, 30, sigma, 2)
    assert_same(image[:2, :3], 30, sigma, 1)


def test_equal_weights_in_the_min_size_pass_follow_skimage_order() -> None:
    # sigma=0 on a few grey levels: whole runs of exactly equal weights, where a small segment has two
    # equally close neighbours; which one it joins is decided by skimage's argsort order.
    image = np.tile(np.array([[0, 1, 0, 2], [2, 0, 1, 0]], np.uint8) * 60, (6, 5))
    for min_size in (2, 3, 5, 9):
        assert_same(image, 0, 0, min_size)
        assert_same(image, 1, 0, min_size)


def test_photo_dtypes_via_channel_axis_first() -> None:
    rgb = skimage.data.coffee()[::6, ::6]
    assert_same(np.moveaxis(rgb, -1, 0), 300, 0.9, 100, channel_axis=0)
    assert_same(np.moveaxis(rgb, -1, 1), 300, 0.9, 100, channel_axis=1)
    assert_same(np.moveaxis(rgb, -1, 0).astype(np.float32) / 255, 300, 0.9, 100, channel_axis=-3)


# --- property tests ---------------------------------------------------------------------------------------

DTYPES = ["bool", "uint8", "uint16", "uint32", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


@st.composite
def images(draw) -> tuple[np.ndarray, int | None]:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    channels = draw(st.sampled_from([0, 1, 2, 3, 3, 4, 9]))
    shape = (h, w) if channels == 0 else (h, w, channels)
    levels = draw(st.sampled_from([2, 3, 5, 256]))  # few levels: many exactly equal weights
    idx = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, levels, shape)
    if dtype == np.bool_:
        image = (idx % 2).astype(bool)
    elif dtype.kind == "f":
        image = (idx / (levels - 1) * draw(st.sampled_from([1.0, 3.0, -2.0]))).astype(dtype)
    else:
        info = np.iinfo(dtype)
        lo = draw(st.sampled_from([0, int(info.min)]))
        step = (int(info.max) - lo) // (levels - 1)
        image = np.array([lo + i * step for i in range(levels)], dtype=dtype)[idx]
    return image, None if channels == 0 else -1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    images(),
    st.sampled_from([0.0, 1.0, 3.0, 50.0, 300.0, 1000.0, -5.0]),
    st.sampled_from([0.0, 0.3, 0.8, 2.0, 9.0]),
    st.sampled_from([0, 1, 2, 5, 20, 100]),
)
def test_property_equals_skimage(case, scale: float, sigma: float, min_size: int) -> None:
    image, channel_axis = case
    assert_same(image, scale, sigma, min_size, channel_axis)


@settings(max_examples=60, deadline=None)
@given(images())
def test_property_conversion_is_img_as_float64(case) -> None:
    image, channel_axis = case
    a = skimage_channels(image, channel_axis)
    expected = img_as_float64(np.atleast_3d(image))
    np.testing.assert_array_equal(skimage_float64(a), expected)
    np.testing.assert_array_equal(fh.smooth_image(a, 0.0), expected)


# --- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, kwargs, message",
    [
        (np.zeros((0, 4, 3), np.uint8), {}, "empty"),
        (np.zeros((4, 4, 3, 2), np.uint8), {}, "shape"),
        (np.zeros(5, np.uint8), {}, "shape"),
        (np.full((4, 4, 3), np.nan), {}, "NaN"),
        (np.full((4, 4), np.inf, np.float32), {}, "infinite"),
        (np.zeros((4, 4, 3), np.complex64), {}, "dtype complex64"),
        (np.zeros((4, 4, 3), "U1"), {}, "dtype"),
        (np.zeros((4, 4, 129), np.uint8), {}, "129 channels"),
        (np.zeros((4, 4, 3), np.uint8), {"channel_axis": None}, "channel_axis=None"),
        (np.zeros((4, 5), np.uint8), {"channel_axis": 0}, "transpose|channel_axis=0"),
        (np.zeros((4, 4, 3), np.uint8), {"channel_axis": 3}, "out of range"),
        (np.full((4, 4), 1e308), {}, "overflow"),
        (np.zeros((4, 4, 3), np.uint8), {"scale": float("nan")}, "scale is NaN"),
        (np.zeros((4, 4, 3), np.uint8), {"sigma": -1.0}, "sigma"),
        (np.zeros((4, 4, 3), np.uint8), {"sigma": float("inf")}, "sigma"),
        (np.zeros((4, 4, 3), np.uint8), {"min_size": 2.5}, "min_size"),
        (np.zeros((4, 4, 3), np.uint8), {"min_size": 10**30}, "64 bits"),
    ],
)
def test_unsupported_inputs_are_refused_in_one_line(bad: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        felzenszwalb(bad, **kwargs)
    assert "\n" not in str(info.value)
