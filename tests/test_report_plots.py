"""`regionshards plot`: every figure is titled, labelled, has a legend, and its bars hold every value."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from regionshards.cli.main import main
from regionshards.report.plots import _edges, make_figure, render_plots, write_plots
from regionshards.report.sketch import Sketch
from regionshards.report.stats import Distribution, compute_stats


def test_figures_read_on_their_own_and_count_every_value(tiny_dataset: Path) -> None:
    stats = compute_stats(tiny_dataset)
    figures = stats.figures()
    assert "segments.coverage" not in figures  # always 1 for a partition: in the table, not drawn
    assert [d.series for d in figures["proposals.width"]] == ["all", "ratio3", "ratio3size0308"]
    for name, series in figures.items():
        fig = make_figure(series, "tiny")
        (ax,) = fig.axes
        assert ax.get_title().endswith("\ntiny") and len(ax.get_title()) > len("\ntiny") + 5, name
        assert ax.get_xlabel() and ax.get_ylabel().startswith("number of "), name
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        drawn = [d for d in series if d.sketch.count]
        assert len(legend) == len(drawn) and all("n=" in t and "median" in t for t in legend), name
        for patch, d in zip(ax.patches, drawn, strict=True):
            heights = patch.get_data().values
            assert heights.sum() == d.sketch.count, (name, d.key)  # the shared bins hold every value
    assert make_figure(figures["proposals.aspect"], "x").axes[0].get_xscale() == "log"


def test_write_plots_gives_decodable_distinct_pngs(tiny_dataset: Path, tmp_path: Path) -> None:
    stats = compute_stats(tiny_dataset)
    paths = write_plots(stats, tmp_path / "plots")
    assert {p.name for p in paths} == {f"{k.replace('.', '_')}.png" for k in stats.figures()}
    for p in paths:
        with Image.open(p) as im:
            im.load()
            assert im.format == "PNG" and im.size == (700, 420)
            assert np.asarray(im.convert("L")).std() > 10  # something was drawn
    assert len({p.read_bytes() for p in paths}) == len(paths)
    assert render_plots(stats) == render_plots(compute_stats(tiny_dataset))  # deterministic bytes


def test_plot_command(tiny_dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plot", str(tiny_dataset), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    listed = result.output.split()
    assert str(tmp_path / "p" / "proposals_per_image.png") in listed
    assert all(Image.open(io.BytesIO(Path(p).read_bytes())).format == "PNG" for p in listed)
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "none"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "does not exist" in result.output


def _integer_distribution(values: list[int], series: str = "") -> Distribution:
    sketch = Sketch(integer=True)
    sketch.add(np.asarray(values))
    return Distribution(key=f"x.{series}", title="Things per image", unit="things", sketch=sketch, figure="x",
                        series=series)


@pytest.mark.parametrize("values", [[1, 2, 2, 3, 3, 3, 7], list(range(0, 401, 3)) + [5, 6],
                                    [1, 2, 3, 50, 400, 5000, 70000]], ids=["few", "linear", "wide"])
def test_whole_numbers_are_never_split_and_bars_stay_apart(values: list[int]) -> None:
    d = _integer_distribution(values)
    if values[-1] > 1000:
        d = Distribution(**{**d.__dict__, "log": True})
    edges = _edges([d])
    assert np.all(edges == np.floor(edges) + 0.5)  # bins hold whole numbers only, none cut in two
    assert np.all(np.diff(edges) >= 1)
    fig = make_figure([d], "t")
    (patch,) = fig.axes[0].patches
    heights, drawn_edges = patch.get_data().values, patch.get_data().edges
    assert heights.sum() == len(values)
    assert np.all(heights[1::2] == 0) and np.all(np.diff(drawn_edges)[1::2] > 0)  # an empty sliver between bars
    hist, _ = np.histogram(values, bins=edges)
    np.testing.assert_array_equal(heights[::2], hist)
