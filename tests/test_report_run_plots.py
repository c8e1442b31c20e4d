"""``regionshards plot-run``: metrics of training runs against steps, several runs overlaid; no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from regionshards.cli.main import main
from regionshards.report.run_plots import RunReadError, make_figure, plot_runs, read_run

ROOT = Path(__file__).resolve().parents[1]


def fake_run(path: Path, steps: int, method: str = "detcon-b", probe: bool = True, extra: str = "") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"method": method, "backbone": "resnet18", "steps": steps}))
    lines = []
    for t in range(1, steps + 1):
        row = {"step": t, "epoch": t // 5, "loss": 5.0 / t, "lr": 0.1 * t / steps, "img_per_s": 100.0 + t,
               "time": float(t), "ema": 0.99 + 0.01 * t / steps}
        if probe:
            row.update(probe_loss=2.0 / t, probe_top1=min(1.0, t / steps))
        lines.append(json.dumps(row))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + extra)
    return path


def test_every_quantity_overlays_the_runs_that_logged_it(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", 12)
    b = fake_run(tmp_path / "b", 7, method="detco", probe=False)
    runs = [read_run(a), read_run(b)]
    assert runs[0].label == "a (detcon-b resnet18)" and [r["step"] for r in runs[1].rows] == list(range(1, 8))
    loss = make_figure(runs, "loss")
    assert len(loss.axes[0].lines) == 2 and loss.axes[0].get_xlabel() == "optimiser step"
    probe = make_figure(runs, "probe_top1")
    assert len(probe.axes[0].lines) == 1  # only run a has a probe
    xs, ys = probe.axes[0].lines[0].get_data()
    assert list(xs) == list(range(1, 13)) and ys[-1] == 1.0
    result = plot_runs([a, b], tmp_path / "plots")
    names = sorted(Path(p).name for p in result["written"])
    assert names == ["img_per_s.png", "loss.png", "lr.png", "momentum.png", "probe_top1.png"]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result["written"])
    without = plot_runs([b], tmp_path / "plain")
    assert "probe_top1.png" not in {Path(p).name for p in without["written"]}


def test_bad_lines_and_bad_runs_are_reported_not_fatal(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", 4, extra='not json\n[1, 2]\n{"step": true}\n{"step": 5, "loss": NaN}\n{"step": 6, "lo')
    run = read_run(a)
    assert [r["step"] for r in run.rows] == [1, 2, 3, 4, 5]
    assert len(run.skipped) == 4 and run.skipped[0] == "line 5: not JSON"
    assert run.series("loss")[0] == [1, 2, 3, 4]  # NaN is not drawn
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunReadError, match="no metrics.jsonl"):
        read_run(empty)
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "metrics.jsonl")
    with pytest.raises(RunReadError, match="no metrics.jsonl"):
        read_run(fifo)  # never opened: a FIFO would block
    result = CliRunner().invoke(main, ["plot-run", str(a), str(empty), "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "skipped" in result.output and "wrote 5 plots of 1 run(s)" in result.output
    none = CliRunner().invoke(main, ["plot-run", str(empty), "--out", str(tmp_path / "q")])
    assert none.exit_code == 1 and none.output.startswith("Error:") and len(none.output.splitlines()) == 1


def test_plot_run_imports_no_torch() -> None:
    code = "import sys, regionshards.report.run_plots, regionshards.cli.run_cmd; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
