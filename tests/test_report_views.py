"""`regionshards show --views`: the picture of DetCon's two augmented views equals what the trainer makes."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from regionshards.cli.main import main
from regionshards.images import decode_image
from regionshards.proposals import decode_segments
from regionshards.report.dataset import find_samples, open_report_dataset
from regionshards.report.overlay import GAP, display_image
from regionshards.report.views import render_views, show_views, views_png
from regionshards.trainer.config import TrainConfig

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the train extra (torch)")


def _sample(ds: Path, key: str):
    (sample,) = find_samples(open_report_dataset(ds), [key])
    return sample


def _augment(cfg: TrainConfig | None = None):
    from regionshards.trainer.preview import views_augmenter

    return views_augmenter(cfg)


def _trainer_sample(sample) -> dict:
    """The ``iter_shard`` dict ``make_pair`` takes (JSON parsed, image under its stored field)."""
    return {"__key__": sample.key, "json": sample.meta, sample.meta["image"]["field"]: sample.image}


def _trainer_pair(sample, cfg: TrainConfig, seed: int):
    """make_pair's own output and, from an independent replay of its draws, the view label maps."""
    from regionshards.trainer.decode import decode_for_crops
    from regionshards.trainer.methods.detcon_views import PairBuffers, make_pair
    from regionshards.trainer.transforms import dct_scale, resize_mask, sample_crop, snap

    s, g, k = cfg.image_size, cfg.grid_size, cfg.num_masks
    out = PairBuffers(np.zeros((2, 1, s, s, 3), np.uint8), np.zeros((2, 1, g, g), np.int64),
                      np.zeros((2, 1, k), np.int64))
    make_pair(_trainer_sample(sample), cfg, np.random.default_rng(seed), out, 0)
    rles = sample.meta["segments"]["rles"]
    height, width = rles[0]["size"]
    rng = np.random.default_rng(seed)
    crops = [sample_crop(rng, height, width, cfg.views[v]) for v in range(2)]
    image, scale = decode_for_crops(sample.image, sample.meta["image"]["field"], height, width,
                                       dct_scale(crops, s))
    snapped = [snap(c, scale, *image.shape[:2]) for c in crops]
    labels = np.stack([resize_mask(decode_segments(rles), c, scale, s) for c in snapped])
    return out, labels, snapped, scale


@needs_torch
def test_views_match_the_trainer_and_the_layout(tiny_dataset: Path) -> None:
    sample = _sample(tiny_dataset, "animal_chelsea")
    cfg = TrainConfig()
    out, labels, snapped, scale = _trainer_pair(sample, cfg, seed=4)
    pair = _augment(cfg)(sample.key, sample.meta, sample.image, 4)
    np.testing.assert_array_equal(pair.labels, labels)
    np.testing.assert_array_equal(pair.grids, out.grids[:, 0])
    np.testing.assert_array_equal(pair.ids, out.ids[:, 0])
    assert np.abs(pair.images.astype(int) - out.images[:, 0]).max() <= 1  # normalised and back: rounding only
    assert pair.flips == (snapped[0].flip, snapped[1].flip) and pair.scale == scale == 1
    assert pair.boxes.tolist() == [[c.x, c.y, c.w, c.h] for c in snapped]

    img = np.asarray(render_views(sample, _augment(cfg), seed=4))
    top_h = display_image(decode_image(sample.image).rgb, 3 * 224 + 2 * GAP, 224)[0].shape[0]
    assert img.shape[1] == 3 * 224 + 2 * GAP and img.shape[0] > top_h + 2 * (224 + GAP) + 3 * 17
    for v in range(2):
        row = top_h + GAP + v * (224 + GAP)
        np.testing.assert_array_equal(img[row : row + 224, :224], pair.images[v])  # the view, pixel for pixel
        seg = img[row : row + 224, 224 + GAP : 2 * 224 + GAP]
        edge = np.zeros((224, 224), bool)
        edge[:, :-1] |= labels[v][:, :-1] != labels[v][:, 1:]
        edge[:-1] |= labels[v][:-1] != labels[v][1:]
        assert (seg[edge] == 255).all()  # outlines where the view's label map changes
    caption = img[top_h + GAP + 2 * (224 + GAP) :]
    assert (caption < 128).any()


@needs_torch
def test_views_are_deterministic_for_a_seed(tiny_dataset: Path, tmp_path: Path) -> None:
    sample = _sample(tiny_dataset, "person_camera")
    augment = _augment()
    assert views_png(sample, augment, seed=1) == views_png(sample, _augment(), seed=1)
    assert views_png(sample, augment, seed=1) != views_png(sample, augment, seed=2)
    paths = show_views(tiny_dataset, tmp_path / "a", n=2, seed=7, augment=augment)
    again = show_views(tiny_dataset, tmp_path / "b", n=2, seed=7, augment=_augment())
    assert [p.name for p in paths] == [p.name for p in again] and all(p.name.endswith("-views.png") for p in paths)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(paths, again, strict=True))


@needs_torch
def test_reduced_jpeg_decode_boxes_are_in_stored_pixels(tmp_path: Path) -> None:
    from fixtures.tiny_build import build_dataset, imagenet_inputs

    ds = tmp_path / "big"
    build_dataset(ds, [i for i in imagenet_inputs(640) if i.key == "animal_chelsea"])
    sample = _sample(ds, "animal_chelsea")
    views = tuple(dataclasses.replace(v, crop_scale=(0.9, 1.0)) for v in TrainConfig().views)
    cfg = TrainConfig(image_size=128, num_masks=5, views=views, steps=1).validate()
    out, labels, snapped, scale = _trainer_pair(sample, cfg, seed=0)
    pair = _augment(cfg)(sample.key, sample.meta, sample.image, 0)
    assert pair.scale == scale == 2  # decoded at half size, as in training
    np.testing.assert_array_equal(pair.labels, labels)
    np.testing.assert_array_equal(pair.grids, out.grids[:, 0])
    w, h = sample.meta["image"]["width"], sample.meta["image"]["height"]
    for (x, y, bw, bh), c in zip(pair.boxes.tolist(), snapped, strict=True):
        assert (x, y) == (2 * c.x, 2 * c.y) and 0 < x + bw <= w and 0 < y + bh <= h
    with Image.open(io.BytesIO(views_png(sample, _augment(cfg)))) as im:
        assert im.width == 3 * 256 + 2 * GAP  # 128 px views enlarged by 2 for display


@needs_torch
def test_show_views_command(tiny_dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["show", str(tiny_dataset), "--key", "object_coins", "--views", "--out",
                                  str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(tmp_path / "object_coins-views.png")]
    result = runner.invoke(main, ["show", str(tiny_dataset), "--views", "--filter", "ratio3", "--out",
                                  str(tmp_path)])
    assert result.exit_code == 2 and "--filter does not apply to --views" in result.output
    result = runner.invoke(main, ["show", str(tiny_dataset), "--key", "nope", "--views", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "unknown key 'nope'" in result.output


def test_views_without_torch_say_which_extra(tiny_dataset: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError):
        _augment()
    result = CliRunner().invoke(main, ["show", str(tiny_dataset), "--views", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: regionshards show --views needs the train extra (torch): "
                                     "pip install 'regionshards[train]'")
    assert not list(tmp_path.iterdir())


def test_views_without_torch_in_a_fresh_process(tiny_dataset: Path, tmp_path: Path) -> None:
    """The real CLI in a process where `import torch` fails: one Error line, exit 1, nothing written."""
    code = ("import sys; sys.modules['torch'] = None; from regionshards.cli.main import main; "
            "main(['show', sys.argv[1], '--views', '--out', sys.argv[2]])")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_dataset), str(tmp_path / "v")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["Error: regionshards show --views needs the train extra (torch): "
                                                "pip install 'regionshards[train]'"]
    assert not (tmp_path / "v").exists()


def test_report_never_imports_the_trainer_nor_torch() -> None:
    code = ("import sys, regionshards.report.views, regionshards.report.overlay; "
            "print('torch' in sys.modules, any(m.startswith('regionshards.trainer') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False False"
    report = Path(__file__).resolve().parents[1] / "src" / "regionshards" / "report"
    for path in report.glob("*.py"):  # not even lazily or under TYPE_CHECKING
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any("trainer" in name or name == "torch" for name in names), f"{path.name}:{node.lineno}"
