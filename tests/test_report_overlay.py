"""`regionshards show`: colours, outlines, boxes and captions of overlay pictures, checked pixel by pixel."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from regionshards.cli.main import main
from regionshards.report.dataset import ReportSample
from regionshards.report.overlay import (
    SEGMENT_ALPHA,
    boxes_panel,
    render_overlay,
    segment_colours,
    segments_panel,
    selected_boxes,
    show,
)
from regionshards.shards import open_dataset
from test_report_eval import hand_dataset


def test_segment_colours_are_stable_and_distinct() -> None:
    colours = segment_colours(300)
    assert colours.dtype == np.uint8 and colours.shape == (300, 3)
    np.testing.assert_array_equal(segment_colours(7), colours[:7])  # id k has one colour whatever n is
    assert colours[0].tolist() == [242, 48, 48]  # hue 0, saturation 0.8, value 0.95
    near = np.abs(colours[1:].astype(int) - colours[:-1]).sum(axis=1)
    assert near.min() > 60  # neighbouring ids are clearly different
    assert len({tuple(c) for c in colours[:64].tolist()}) == 64


def test_segments_panel_blends_colours_and_outlines_boundaries() -> None:
    rgb = np.full((6, 8, 3), 100, np.uint8)
    labels = np.zeros((6, 8), np.int64)
    labels[:, 4:] = 1
    out = segments_panel(rgb, labels)
    c = segment_colours(2).astype(float)
    expect0 = (100 * (1 - SEGMENT_ALPHA) + c[0] * SEGMENT_ALPHA).astype(np.uint8)
    expect1 = (100 * (1 - SEGMENT_ALPHA) + c[1] * SEGMENT_ALPHA).astype(np.uint8)
    assert (out[:, :3] == expect0).all() and (out[:, 5:] == expect1).all()
    assert (out[:, 3] == 255).all() and not (out[:, 4] == 255).all(axis=1).any()  # outline left of the change
    np.testing.assert_array_equal(segments_panel(rgb, None), rgb)


def test_boxes_panel_draws_translucent_outlines_only() -> None:
    rgb = np.zeros((40, 40, 3), np.uint8)
    out = np.asarray(boxes_panel(rgb, np.array([[5, 5, 20, 10]]), 1.0))
    assert out[5, 10].any() and out[14, 10].any() and out[10, 5].any() and out[10, 24].any()  # the four sides
    assert not out[10, 12].any() and not out[30, 30].any()  # inside and outside stay untouched
    assert out[5, 10].max() < segment_colours(1).max()  # blended: alpha < 255


def _sample(tmp_path: Path, key: str) -> ReportSample:
    ds, _ = hand_dataset(tmp_path)
    raw = next(s for s in open_dataset(ds, parse_json=False) if s["__key__"] == key)
    return ReportSample(key, raw["__url__"], json.loads(raw["json"]), raw["png"], len(raw["json"]))


def test_render_overlay_panels_and_caption(tmp_path: Path) -> None:
    sample = _sample(tmp_path, "sub_a")
    img = render_overlay(sample, min_side=200)
    s = 10  # 20 px images are enlarged by a whole factor to reach 200
    assert img.width == 2 * 20 * s + 6 and img.height > 20 * s + 3 * 17
    left = np.asarray(img)[: 20 * s, : 20 * s]
    assert (left[:, 10 * s - 1] == 255).all()  # outline where id 0 meets id 1
    assert np.abs(left[50, 50].astype(int) - segment_colours(2)[0] * SEGMENT_ALPHA - 64).max() <= 1
    boxes, text = selected_boxes(sample.meta, None)
    assert len(boxes) == 4 and text == "all 4 proposals (soco)"
    boxes, text = selected_boxes(sample.meta, "ratio3size0308")
    assert boxes.tolist() == [[0, 0, 20, 20]] and "whole-image fallback" in text
    boxes, text = selected_boxes(sample.meta, "ratio3")
    assert boxes.tolist() == [[0, 0, 20, 20], [5, 5, 5, 5]] and text == "2 of 4 proposals (soco) kept by ratio3"
    caption = np.asarray(img)[20 * s + 6:]
    assert (caption < 128).any()  # text was drawn
    with pytest.raises(ValueError, match="records no filter 'ratio2'"):
        selected_boxes(sample.meta, "ratio2")


def test_show_writes_pictures_by_key_or_draw(tmp_path: Path, tiny_dataset: Path) -> None:
    paths = show(tiny_dataset, tmp_path / "a", n=3, seed=5)
    again = show(tiny_dataset, tmp_path / "b", n=3, seed=5)
    assert [p.name for p in paths] == [p.name for p in again] and len(paths) == 3
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(paths, again, strict=True))  # reproducible
    assert [p.name for p in show(tiny_dataset, tmp_path / "c", n=3, seed=6)] != [p.name for p in paths]
    (one,) = show(tiny_dataset, tmp_path / "d", keys=["animal_chelsea"], filter_name="ratio3")
    assert one.name == "animal_chelsea-ratio3.png"
    with Image.open(io.BytesIO(one.read_bytes())) as im:
        assert im.format == "PNG" and im.width > 2 * 256
    with pytest.raises(KeyError, match="unknown key 'nope'"):
        show(tiny_dataset, tmp_path / "e", keys=["nope"])
    with pytest.raises(KeyError, match="'object_empty' failed in the build \\(empty\\)"):
        show(tiny_dataset, tmp_path / "e", keys=["object_empty"])
    with pytest.raises(ValueError, match="unknown filter 'ratio4': the dataset records"):
        show(tiny_dataset, tmp_path / "e", filter_name="ratio4")


def test_show_command(tmp_path: Path, tiny_dataset: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["show", str(tiny_dataset), "--key", "person_camera", "--key", "object_coins",
                                  "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(tmp_path / "person_camera.png"), str(tmp_path / "object_coins.png")]
    result = runner.invoke(main, ["show", str(tiny_dataset), "--key", "x", "--sample", "2", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(main, ["show", str(tiny_dataset), "--key", "x", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "unknown key 'x'" in result.output
