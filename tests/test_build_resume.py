"""Honest resume on a local Ray: a rerun recomputes exactly the shards whose inputs changed, appeared, vanished or
failed transiently, says so, and its summary describes the whole dataset with rates of this run only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from build_inputs import FAST_ARGS, jpeg_bytes, make_imagenet
from regionshards.cli.main import main
from regionshards.shards import verify


def shard_of(out: Path) -> dict[str, str]:
    """source path → shard file name."""
    return {r["source_path"]: p.stem for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()}


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "summary.json"}


def test_rerun_recomputes_exactly_what_changed_and_says_why(tmp_path: Path, ray_local) -> None:
    src = make_imagenet(tmp_path / "src", copies=2)
    lst = tmp_path / "list.txt"
    paths = sorted(p.relative_to(tmp_path).as_posix() for p in src.rglob("*.jpg"))
    lst.write_text("\n".join([*paths, "src/late.jpg"]) + "\n")  # late.jpg does not exist yet
    out = tmp_path / "out"
    args = ["build", str(lst), str(out), "--shard-size", "3", "--no-progress", "--proposals", "none", *FAST_ARGS]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 1 and "missing: 1" in first.output, first.output
    summary1 = json.loads((out / "summary.json").read_text())
    before = files(out)
    where = shard_of(out)

    # a rerun: only the shard with the missing (transient) input is tried again; same bytes, whole-dataset stats
    again = CliRunner().invoke(main, args)
    assert "shards 4 (3 reused after verification)" in again.output, again.output
    assert f"recomputed {where['src/late.jpg']}: src/late.jpg failed for a transient reason (missing)" in again.output
    summary2 = json.loads((out / "summary.json").read_text())
    assert summary2["images_computed"] == pq.read_metadata(out / f"{where['src/late.jpg']}.parquet").num_rows
    assert summary2["segments_per_image"] == summary1["segments_per_image"] and summary2["inputs"] == 11
    assert files(out) == before

    # touching a file (mtime only) keeps its shard: the content decides
    touched = src / "animal" / "chelsea_0.jpg"
    os.utime(touched, ns=(1, 1))
    assert "(3 reused" in CliRunner().invoke(main, args).output

    # change one input's bytes, and fix the missing one: exactly their shards are computed again
    (src / "object" / "coins_1.jpg").write_bytes(jpeg_bytes(70, "rocket"))
    (src / "late.jpg").write_bytes(jpeg_bytes(50))
    third = CliRunner().invoke(main, args)
    assert third.exit_code == 0, third.output
    changed = {where["src/object/coins_1.jpg"], where["src/late.jpg"]}
    assert f"shards 4 ({4 - len(changed)} reused" in third.output
    assert "src/object/coins_1.jpg changed" in third.output
    assert "src/late.jpg failed for a transient reason (missing)" in third.output
    summary3 = json.loads((out / "summary.json").read_text())
    sizes = {s: pq.read_metadata(out / f"{s}.parquet").num_rows for s in changed}
    assert summary3["images_computed"] == sum(sizes.values()) and summary3["images_per_second"] > 0
    assert summary3["ok"] == 11 and verify(out).ok
    after = files(out)
    assert {n for n in after if after[n] != before.get(n)} == {f"{s}.{e}" for s in changed
                                                               for e in ("tar", "parquet")} | {"manifest.json"}


def test_vanished_input_recomputes_its_shard(tmp_path: Path, ray_local) -> None:
    src = make_imagenet(tmp_path / "src", copies=2)
    out = tmp_path / "out"
    args = ["build", str(src), str(out), "--shard-size", "4", "--no-progress", "--proposals", "none",
            "--order", "sorted", *FAST_ARGS]
    assert CliRunner().invoke(main, args).exit_code == 0
    summary1 = json.loads((out / "summary.json").read_text())
    noop = CliRunner().invoke(main, args)  # nothing changed: nothing computed, and no invented rate
    assert "shards 3 (3 reused" in noop.output and "nothing to compute" in noop.output, noop.output
    summary2 = json.loads((out / "summary.json").read_text())
    assert summary2["images_per_second"] is None and summary2["images_computed"] == 0
    assert summary2["segments_per_image"] == summary1["segments_per_image"] and summary2["ok"] == 10
    (src / "object" / "rocket_1.jpg").unlink()  # the last input in sorted order: only the last shard changes
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 0 and "shards 3 (2 reused" in rerun.output, rerun.output
    assert "inputs appeared or vanished" in rerun.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["order"] == {"method": "sorted", "seed": None} and manifest["totals"]["inputs"] == 9
