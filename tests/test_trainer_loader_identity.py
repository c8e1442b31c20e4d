"""The loader's per-sample path, rewritten for speed, gives byte-identical batches: every batch of ``ShardStream``
equals the one the previous path (reader-validated bytes, partition re-parsed, BGR decode + channel swap,
``np.unique`` ids, positions by the formula) computes from the same samples with the same generator."""

from __future__ import annotations

import io
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from fixtures.hostile import SHARD, edit_json  # noqa: E402
from fixtures.tiny_build import build_dataset, imagenet_inputs  # noqa: E402
from regionshards.images import decode_image  # noqa: E402
from regionshards.proposals import decode_segments, encode_segments  # noqa: E402
from regionshards.proposals.rle import _gather_counts  # noqa: E402
from regionshards.shards import ShardError, iter_shard  # noqa: E402
from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.data import CheckedOnUse, ShardStream  # noqa: E402
from regionshards.trainer.decode import decode_for_crops, parse_partition  # noqa: E402
from regionshards.trainer.methods.detcon_masks import majority_grid, sample_ids  # noqa: E402
from regionshards.trainer.transforms import (  # noqa: E402
    colour_augment,
    dct_scale,
    resize_image,
    sample_crop,
    sample_positions,
    snap,
)
from regionshards.trainer.watch import sample_label  # noqa: E402

_BGR_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
              8: cv2.IMREAD_REDUCED_COLOR_8}


# --- the previous path, kept here as the reference --------------------------------------------------------


def _old_positions(start: int, length: int, scale: int, limit: int, size: int) -> np.ndarray:
    centres = scale * (start + (np.arange(size) + 0.5) * (length / size))
    return np.minimum(np.floor(centres).astype(np.int64), limit - 1)


def _old_ids(grid: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    present = np.unique(grid)
    return present[rng.integers(0, present.size, size=k)].astype(np.int64)


def _old_decode(data: bytes, field: str, height: int, width: int, scale: int) -> tuple[np.ndarray, int, bool]:
    if field == "jpg":
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _BGR_FLAGS[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is not None and image.shape[:2] == (math.ceil(height / scale), math.ceil(width / scale)):
            return image, scale, True
    return decode_image(data).rgb, 1, False


def _old_batch(samples: list[dict[str, Any]], cfg: TrainConfig, rng: np.random.Generator,
               scales: set[int]) -> dict[str, np.ndarray]:
    n, s = len(samples), cfg.image_size
    images = np.empty((2, n, s, s, 3), np.uint8)
    grids = np.empty((2, n, cfg.grid_size, cfg.grid_size), np.int64)
    ids = np.empty((2, n, cfg.num_masks), np.int64)
    for i, sample in enumerate(samples):
        part = parse_partition(sample["json"], cfg.mask_source)
        height, width = (int(v) for v in part["rles"][0]["size"])
        crops = [sample_crop(rng, height, width, cfg.views[v]) for v in range(2)]
        image, scale, bgr = _old_decode(sample["jpg"], "jpg", height, width, dct_scale(crops, s))
        scales.add(scale)
        labels = decode_segments(part["rles"])
        for v, crop in enumerate(crops):
            c = snap(crop, scale, image.shape[0], image.shape[1])
            view = resize_image(image, c, s)
            images[v, i] = cv2.cvtColor(view, cv2.COLOR_BGR2RGB) if bgr else view
            rows = _old_positions(c.y, c.h, scale, labels.shape[0], s)
            cols = _old_positions(c.x, c.w, scale, labels.shape[1], s)
            cols = cols[::-1].copy() if c.flip else cols
            grids[v, i] = majority_grid(labels[rows][:, cols], cfg.feature_stride)
        if cfg.colour:
            for v in range(2):
                images[v, i] = colour_augment(images[v, i], rng, cfg.views[v])
        for v in range(2):
            ids[v, i] = _old_ids(grids[v, i], cfg.num_masks, rng)
    views = images.transpose(0, 1, 4, 2, 3)  # (2, B, 3, S, S), as the batch's channels_last tensors read
    return {"view0": views[0], "view1": views[1], "grid0": grids[0], "grid1": grids[1], "ids0": ids[0],
            "ids1": ids[1], "label": np.array([sample_label(x["json"]) for x in samples], np.int64)}


# --- batches ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six bundled photos at 160 px: 32 px views decode them at 1/1 .. 1/4 of their size."""
    out = tmp_path_factory.mktemp("identity") / "ds"
    build_dataset(out, imagenet_inputs(long_side=160), shard_size=2)
    return out


@pytest.mark.parametrize("colour", [False, True])
def test_stream_batches_equal_the_previous_path(photos: Path, colour: bool) -> None:
    byol = TrainConfig().views  # view 0's crops larger, so some pairs allow a reduced decode
    cfg = TrainConfig(batch_size=3, image_size=32, feature_stride=8, num_masks=5, colour=colour, workers=0,
                      shuffle_buffer=4,
                      views=(replace(byol[0], crop_scale=(0.3, 1.0)), byol[1]))
    raw = {s["__key__"]: s for url in sorted(photos.glob("*.tar")) for s in iter_shard(url, parse_json=False)}
    scales: set[int] = set()
    ids: set[int] = set()
    for seed in range(3):
        stream = ShardStream(photos, replace(cfg, seed=seed), epochs=2)
        q = stream.batches_per_epoch
        for batch in stream:
            b = batch["step"] - batch["epoch"] * q
            rng = np.random.default_rng([seed, batch["epoch"], 0, b, 0x4254])
            expected = _old_batch([raw[k] for k in batch["keys"]], cfg, rng, scales)
            for name, value in expected.items():
                got = batch[name].numpy()
                assert got.dtype == value.dtype and np.array_equal(got, value), (seed, batch["step"], name)
            ids.update(expected["ids0"].ravel().tolist())
    assert len(scales) > 1  # reduced and full-size decodes were both compared
    assert len(ids) > 20  # 4 x 4 grids of many segments


def test_a_refused_sample_raises_the_readers_error_before_decoding(photos: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(photos, tmp_path / "ds"))
    edit_json(folder, lambda meta: meta["image"].update(x=1), sample=1)
    url = folder / SHARD
    with pytest.raises(ShardError) as reader:
        list(iter_shard(url))
    good, bad = iter_shard(url, parse_json=False, validate=False)
    checked = CheckedOnUse([good, bad])
    with pytest.raises(ShardError) as trainer:
        checked[1]
    assert (trainer.value.code, trainer.value.shard, trainer.value.member, trainer.value.detail) == (
        reader.value.code, reader.value.shard, reader.value.member, reader.value.detail)
    assert reader.value.code == "schema"
    assert checked[0]["json"] == next(iter_shard(url))["json"]
    assert checked[0]["jpg"] == good["jpg"]


# --- the rewritten kernels ------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5000), st.integers(1, 5000), st.sampled_from([1, 2, 4, 8]), st.integers(1, 40000),
       st.sampled_from([7, 32, 64, 96, 112, 160, 192, 224, 256]))
def test_positions_equal_the_formula(start: int, length: int, scale: int, limit: int, size: int) -> None:
    assert np.array_equal(sample_positions(start, length, scale, limit, size),
                          _old_positions(start, length, scale, limit, size))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=49), st.integers(1, 32), st.integers(0, 2**32 - 1))
def test_sampled_ids_equal_the_unique_draws(values: list[int], k: int, seed: int) -> None:
    grid = np.array(values, np.int64).reshape(1, -1)
    got = sample_ids(grid, k, np.random.default_rng(seed))
    assert got.dtype == np.int64 and np.array_equal(got, _old_ids(grid, k, np.random.default_rng(seed)))


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_rgb_decode_equals_the_bgr_decode_swapped(mode: str) -> None:
    rng = np.random.default_rng(5)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 4), dtype=np.uint8), (7, 7), 2.0)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    for scale in (1, 2, 4, 8):
        got, used = decode_for_crops(buf.getvalue(), "jpg", 90, 120, scale)
        old, old_used, bgr = _old_decode(buf.getvalue(), "jpg", 90, 120, scale)
        assert used == old_used and np.array_equal(got, old[..., ::-1] if bgr else old)


def test_counts_gathered_from_strings_equal_the_general_path() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, (40, 30)) // 2
    rles = encode_segments(labels)
    as_bytes = [{"size": r["size"], "counts": r["counts"].encode()} for r in rles]  # the general path
    fast, general = _gather_counts(rles), _gather_counts(as_bytes)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(fast, general, strict=True))
    for bad in ("~", "é"):  # a malformed string, a non-ASCII one: the same error either way
        segments = [rles[0], {"size": rles[1]["size"], "counts": bad}]
        with pytest.raises(ValueError, match="segment 1") as fast_error:
            _gather_counts(segments)
        with pytest.raises(ValueError) as general_error:
            _gather_counts([as_bytes[0], segments[1]])
        assert str(fast_error.value) == str(general_error.value)


def test_an_index_error_in_the_checks_is_not_the_end_of_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    import regionshards.trainer.data as data

    def broken(sample: dict[str, Any]) -> dict[str, Any]:
        raise IndexError("a bug in the checks")

    monkeypatch.setattr(data, "validated_sample", broken)
    with pytest.raises(IndexError, match="a bug"):
        list(CheckedOnUse([{"__key__": "k"}]))
