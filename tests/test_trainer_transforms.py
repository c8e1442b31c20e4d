"""Trainer views: image and mask move together through crop, flip and resize (property tests), the colour
kernels agree with torchvision's, and the feature-grid masks agree with DetCon's avg-pool + argmax."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

from regionshards.proposals import encode_segments  # noqa: E402
from regionshards.proposals.rle import segment_runs  # noqa: E402
from regionshards.trainer.config import TrainConfig, ViewConfig  # noqa: E402
from regionshards.trainer.decode import decode_for_crops  # noqa: E402
from regionshards.trainer.methods.detcon_masks import majority_grid, runs_grid, sample_ids  # noqa: E402
from regionshards.trainer.methods.detcon_views import PairBuffers, make_pair  # noqa: E402
from regionshards.trainer.transforms import (  # noqa: E402
    Crop,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    colour_augment,
    dct_scale,
    gaussian_blur,
    grayscale,
    mask_positions,
    normalize,
    resize_image,
    resize_mask,
    sample_crop,
    snap,
    solarize,
)

torch.set_num_threads(1)
VIEW = ViewConfig(blur_p=1.0, solarize_p=0.0)


def blocks(h: int, w: int, ys: list[int], xs: list[int]) -> np.ndarray:
    """(h, w) int32 dense ids: blocks cut at rows ``ys`` and columns ``xs``."""
    row = np.searchsorted(np.array(sorted(ys)), np.arange(h), side="right")
    col = np.searchsorted(np.array(sorted(xs)), np.arange(w), side="right")
    return (row[:, None] * (len(xs) + 1) + col[None, :]).astype(np.int32)


def palette(n: int) -> np.ndarray:
    """n well-separated colours."""
    rng = np.random.default_rng(n)
    return rng.permutation(np.array([[r, g, b] for r in (10, 90, 170, 250) for g in (10, 90, 170, 250)
                                     for b in (10, 90, 170, 250)], np.uint8))[:n]


@st.composite
def scenes(draw):
    s = draw(st.sampled_from([1, 2, 4]))
    h, w = s * draw(st.integers(12, 40)), s * draw(st.integers(12, 40))
    ys = draw(st.lists(st.integers(6 * s, h - 6 * s), max_size=2)) if h > 12 * s else []
    xs = draw(st.lists(st.integers(6 * s, w - 6 * s), max_size=2)) if w > 12 * s else []
    ys = [y for i, y in enumerate(sorted(set(ys))) if i == 0 or y - sorted(set(ys))[i - 1] >= 6 * s]
    xs = [x for i, x in enumerate(sorted(set(xs))) if i == 0 or x - sorted(set(xs))[i - 1] >= 6 * s]
    return s, blocks(h, w, ys, xs), draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from([16, 24, 32]))


@settings(max_examples=60, deadline=None)
@given(scenes())
def test_a_mask_pixel_follows_its_image_pixel(scene) -> None:
    """Through crop, flip, resize (and a 1/s DCT-style decode), every output pixel whose bicubic support lies in
    one segment has that segment's colour, and the mask says that segment."""
    s, labels, seed, size = scene
    colours = palette(int(labels.max()) + 1)
    image = colours[labels]
    h, w = labels.shape
    reduced = image.reshape(h // s, s, w // s, s, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    rng = np.random.default_rng(seed)
    crop = snap(sample_crop(rng, h, w, ViewConfig(blur_p=0, solarize_p=0)), s, h // s, w // s)
    view = resize_image(reduced, crop, size).astype(int)
    mask = resize_mask(labels, crop, s, size)
    checked = 0
    for v in range(size):
        for u in range(size):
            uu = size - 1 - u if crop.flip else u
            xr = crop.x + (uu + 0.5) * crop.w / size - 0.5  # bicubic source position on the decoded grid
            yr = crop.y + (v + 0.5) * crop.h / size - 0.5
            x0, y0 = int(np.floor(xr)) - 1, int(np.floor(yr)) - 1
            xs = np.clip(np.arange(x0, x0 + 4), 0, w // s - 1)
            ys = np.clip(np.arange(y0, y0 + 4), 0, h // s - 1)
            support = labels[(ys[:, None] * s + np.arange(s)).ravel()][:, (xs[:, None] * s + np.arange(s)).ravel()]
            if (support == mask[v, u]).all():
                checked += 1
                assert np.abs(view[v, u] - colours[mask[v, u]].astype(int)).max() <= 1, (v, u)
    assert checked > 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 4]), st.sampled_from([8, 16, 24]), st.booleans())
def test_mask_and_image_sample_the_same_position(seed: int, s: int, size: int, flip: bool) -> None:
    """On coordinate ramps (image value = 2 x decoded column or row, mask id = stored column or row), the mask's
    stored pixel contains the point where the bicubic image is sampled, to within half a stored pixel."""
    rng = np.random.default_rng(seed)
    hr, wr = int(rng.integers(20, 100)), int(rng.integers(20, 100))
    ramp = np.zeros((hr, wr, 3), np.uint8)
    ramp[..., 0] = 2 * np.arange(wr)[None, :]
    ramp[..., 1] = 2 * np.arange(hr)[:, None]
    cols = np.broadcast_to(np.arange(wr * s)[None, :], (hr * s, wr * s)).astype(np.int32)
    rows = np.broadcast_to(np.arange(hr * s)[:, None], (hr * s, wr * s)).astype(np.int32)
    c = sample_crop(rng, hr * s, wr * s, VIEW)
    crop = snap(Crop(c.y, c.x, c.h, c.w, flip), s, hr, wr)
    view = resize_image(ramp, crop, size).astype(float) / 2  # decoded-grid position of each output pixel
    for channel, ids, limit in ((0, cols, wr), (1, rows, hr)):
        mask = resize_mask(ids, crop, s, size)
        from_mask = (mask + 0.5) / s - 0.5
        inside = (view[..., channel] >= 1.5) & (view[..., channel] <= limit - 2.5)  # away from clamped borders
        gap = np.abs(view[..., channel] - from_mask)[inside]
        assert gap.size == 0 or gap.max() <= 0.5 / s + 0.26, gap.max()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(8, 60), st.integers(8, 60), st.sampled_from([1, 2]))
def test_flipping_mirrors_image_and_mask(seed: int, h: int, w: int, s: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, (h * s, w * s)).astype(np.int32)
    c = sample_crop(rng, h, w, VIEW)
    plain, flipped = Crop(c.y, c.x, c.h, c.w, False), Crop(c.y, c.x, c.h, c.w, True)
    assert np.array_equal(resize_image(image, flipped, 16), resize_image(image, plain, 16)[:, ::-1])
    assert np.array_equal(resize_mask(labels, flipped, s, 16), resize_mask(labels, plain, s, 16)[:, ::-1])


def test_crops_follow_torchvision_random_resized_crop_ranges() -> None:
    rng = np.random.default_rng(0)
    view = ViewConfig(blur_p=0, solarize_p=0)
    crops = [sample_crop(rng, 300, 400, view) for _ in range(2000)]
    areas = np.array([c.h * c.w / (300 * 400) for c in crops])
    ratios = np.array([c.w / c.h for c in crops])
    assert areas.min() >= 0.07 and areas.max() <= 1.0 and ratios.min() > 0.7 and ratios.max() < 1.45
    assert all(0 <= c.y <= 300 - c.h and 0 <= c.x <= 400 - c.w for c in crops)
    assert 0.45 < np.mean([c.flip for c in crops]) < 0.55


def test_make_pair_composes_decode_crop_and_grid() -> None:
    """make_pair's views and grids are exactly the primitives' (with the reduced JPEG decode)."""
    h, w = 300, 360
    labels = blocks(h, w, [100, 210], [90, 250])
    buf = io.BytesIO()
    Image.fromarray(palette(9)[labels]).save(buf, format="JPEG", quality=95)
    meta = {"segments": {"rles": encode_segments(labels)}}
    big = ViewConfig(blur_p=0, solarize_p=0, crop_scale=(0.5, 1))
    cfg = TrainConfig(image_size=64, num_masks=6, colour=False, views=(big, big))
    out = PairBuffers(np.zeros((2, 1, 64, 64, 3), np.uint8), np.zeros((2, 1, 2, 2), np.int64),
                      np.zeros((2, 1, 6), np.int64))
    make_pair({"__key__": "k", "jpg": buf.getvalue(), "json": meta}, cfg, np.random.default_rng(3), out, 0)
    rng = np.random.default_rng(3)
    crops = [sample_crop(rng, h, w, v) for v in cfg.views]
    image, scale = decode_for_crops(buf.getvalue(), "jpg", h, w, dct_scale(crops, 64))
    assert scale == 2
    for v, crop in enumerate(crops):
        c = snap(crop, scale, *image.shape[:2])
        assert np.array_equal(out.images[v, 0], resize_image(image, c, 64))
        assert np.array_equal(out.grids[v, 0], majority_grid(resize_mask(labels, c, scale, 64), 32))
    for v in range(2):
        assert np.array_equal(out.ids[v, 0], sample_ids(out.grids[v, 0], 6, rng))


# --- colour -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(1)
    base = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(base, (5, 5), 1.0)


def _tv(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def _close(ours: np.ndarray, theirs: torch.Tensor, tol: int) -> None:
    diff = np.abs(ours.astype(int) - theirs.permute(1, 2, 0).numpy().astype(int))
    assert diff.max() <= tol, diff.max()


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.4])
def test_brightness_contrast_saturation_match_torchvision(photo: np.ndarray, factor: float) -> None:
    _close(adjust_brightness(photo, factor), TF.adjust_brightness(_tv(photo), factor), 1)
    _close(adjust_contrast(photo, factor), TF.adjust_contrast(_tv(photo), factor), 2)
    _close(adjust_saturation(photo, factor), TF.adjust_saturation(_tv(photo), factor), 2)


@pytest.mark.parametrize("factor", [-0.1, -0.03, 0.05, 0.1])
def test_hue_matches_torchvision_up_to_8_bit_hue(photo: np.ndarray, factor: float) -> None:
    ours = adjust_hue(photo, factor).astype(int)
    theirs = TF.adjust_hue(_tv(photo), factor).permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ours - theirs).mean() < 2.0 and np.abs(ours - theirs).max() <= 12


def test_grayscale_blur_solarize_match_torchvision(photo: np.ndarray) -> None:
    _close(grayscale(photo), TF.rgb_to_grayscale(_tv(photo), num_output_channels=3), 1)
    k = blur_kernel_size(64, 0.1)
    assert k == 7 and blur_kernel_size(224, 0.1) == 23
    _close(gaussian_blur(photo, 1.3, k), TF.gaussian_blur(_tv(photo), [k, k], [1.3, 1.3]), 1)
    _close(solarize(photo, 128), TF.solarize(_tv(photo), 128), 0)


def test_colour_probabilities_are_the_views(photo: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    none = ViewConfig(blur_p=0, solarize_p=0, jitter_p=0, grayscale_p=0)
    assert all(np.array_equal(colour_augment(photo, rng, none), photo) for _ in range(20))
    grey = ViewConfig(blur_p=0, solarize_p=0, jitter_p=0, grayscale_p=1)
    out = colour_augment(photo, rng, grey)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    # the second view solarizes about 20 % of the time, the first never
    cfg = TrainConfig()
    solarized = [[np.array_equal(colour_augment(photo, rng, solarize_only(v)), solarize(photo, 128))
                  for _ in range(400)] for v in cfg.views]
    assert sum(solarized[0]) == 0 and 50 < sum(solarized[1]) < 110


def solarize_only(view: ViewConfig) -> ViewConfig:
    return ViewConfig(blur_p=0, solarize_p=view.solarize_p, jitter_p=0, grayscale_p=0)


def test_normalize_matches_torchvision_and_keeps_channels_last() -> None:
    x = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    cfg = TrainConfig()
    ours = normalize(x, cfg.mean, cfg.std)
    theirs = TF.normalize(TF.to_dtype(x.contiguous(), torch.float32, scale=True), list(cfg.mean), list(cfg.std))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert ours.is_contiguous(memory_format=torch.channels_last) and ours.dtype == torch.float32


# --- grids and ids ----------------------------------------------------------------------------------------


def _torch_majority(mask: np.ndarray, stride: int) -> np.ndarray:
    onehot = F.one_hot(torch.from_numpy(mask).long(), int(mask.max()) + 1).permute(2, 0, 1).float()[None]
    return F.avg_pool2d(onehot, stride).argmax(1)[0].numpy()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.sampled_from([(4, 2), (8, 4), (12, 4), (64, 32)]))
def test_majority_grid_is_avg_pool_argmax_with_ties_to_the_smallest_id(seed: int, n: int, shape) -> None:
    size, stride = shape
    mask = np.random.default_rng(seed).integers(0, n, (size, size)).astype(np.int32)
    assert np.array_equal(majority_grid(mask, stride), _torch_majority(mask, stride))


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 3, 40, 3000]), st.booleans(), st.sampled_from([1, 2, 4]),
       st.sampled_from([(64, 32), (12, 4), (7, 7)]), st.booleans())
def test_runs_grid_equals_the_grid_of_the_view_mask(seed: int, n: int, flip: bool, scale: int, shape,
                                                     blocky: bool) -> None:
    """The grid counted from the map's runs equals the avg-pool/argmax grid of the view mask sampled from the
    painted map: random maps (pixel noise, or few long runs crossing column ends), any crop, flip, DCT scale,
    views larger and smaller than their crop, and the painted fallback beyond 1024 ids."""
    size, stride = shape
    rng = np.random.default_rng(seed)
    h, w = (60, 80) if n > 1024 else (int(rng.integers(1, 60)), int(rng.integers(1, 80)))
    if blocky:  # long runs that wrap from the bottom of one column into the next
        labels = np.repeat(rng.integers(0, n, h * w // 37 + 1), 37)[: h * w].reshape((h, w), order="F")
    else:
        labels = rng.integers(0, n, (h, w))
    labels = np.unique(labels, return_inverse=True)[1].reshape(h, w).astype(np.int32)  # ids 0..K-1, as stored
    starts, segs, _, _ = segment_runs(encode_segments(labels))
    gh, gw = -(-h // scale), -(-w // scale)
    crop = sample_crop(rng, gh, gw, VIEW)
    crop = Crop(crop.y, crop.x, crop.h, crop.w, flip)
    rows, cols = mask_positions(crop, scale, labels.shape, size)
    got = runs_grid(starts, segs, h, w, rows, cols, stride, int(labels.max()) + 1)
    assert got.dtype == np.int64
    assert np.array_equal(got, majority_grid(labels[rows][:, cols], stride))


def test_runs_grid_takes_any_sample_positions() -> None:
    """Rows out of order (no caller makes them) take the painted path and still give the view's grid."""
    labels = np.arange(30, dtype=np.int32).reshape(5, 6) % 7
    starts, segs, _, _ = segment_runs(encode_segments(labels))
    rows = np.array([4, 0, 3, 3, 1, 2, 0, 4])
    cols = np.array([5, 5, 0, 1, 2, 3, 4, 0])
    assert np.array_equal(runs_grid(starts, segs, 5, 6, rows, cols, 4, 7), majority_grid(labels[rows][:, cols], 4))


def test_sampled_ids_are_uniform_over_present_ids_with_replacement() -> None:
    grid = np.array([[3, 3], [3, 9]])
    rng = np.random.default_rng(0)
    draws = np.concatenate([sample_ids(grid, 16, rng) for _ in range(200)])
    assert set(draws.tolist()) == {3, 9}
    assert 0.45 < np.mean(draws == 9) < 0.55  # uniform over ids, not over cells
    assert sample_ids(np.array([[5]]), 16, rng).tolist() == [5] * 16
