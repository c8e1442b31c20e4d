"""The command line, called through click's CliRunner on the bundled sample data."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from regionshards.cli.main import main

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def test_proposals_on_bundled_coco_sample(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    result = CliRunner().invoke(
        main,
        ["proposals", str(SAMPLE / "coco" / "images"), "--annotations", str(SAMPLE / "coco" / "instances.json"),
         "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(list((SAMPLE / "coco" / "images").glob("*.jpg")))
    assert "inputs 6 = ok 6 + failed 0" in result.output and "box recall@0.5" in result.output
    r = records[0]
    assert r["status"] == "ok" and r["segments"]["method"] == "fh"
    assert sum(r["segments"]["areas"]) == r["width"] * r["height"]
    assert len(r["proposals"]["boxes"]) == len(r["proposals"]["sizes"]) == len(r["proposals"]["levels"])
    assert set(r["filters"]) == {"ratio3size0308"} and "recall_05" in r["eval"]


def test_failed_inputs_are_reported_and_set_the_exit_status(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"hello")
    result = CliRunner().invoke(main, ["proposals", str(tmp_path), "--proposals", "none"])
    assert result.exit_code == 1
    assert "FAILED empty" in result.output and "FAILED not-an-image" in result.output
    assert "inputs 2 = ok 0 + failed 2 (empty: 1, not-an-image: 1)" in result.output


def test_gt_segments_need_annotations(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["proposals", str(SAMPLE / "coco" / "images" / "chelsea.jpg"), "--segments", "gt", "--proposals", "none"]
    )
    assert result.exit_code == 2 and "--segments gt needs --annotations" in result.output
