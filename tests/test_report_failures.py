"""`regionshards failures`: every failed input with its key, source, reason and detail, from the indexes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from fixtures.tampering import reseal
from regionshards.cli.main import main
from regionshards.report.failures import failures_json, iter_failures
from regionshards.shards import open_dataset
from regionshards.shards.index import index_bytes, read_index


def test_lists_every_failed_row_of_the_indexes(tiny_dataset: Path) -> None:
    expected = [r for r in open_dataset(tiny_dataset).index().to_pylist() if r["status"] == "failed"]
    failures = list(iter_failures(tiny_dataset))
    assert [(f.key, f.source_path, f.reason, f.detail) for f in failures] == [
        (r["key"], r["source_path"], r["reason"], r["detail"]) for r in expected]
    assert {(f.source_path, f.reason) for f in failures} == {("object/empty.jpg", "empty"),
                                                             ("person/notes.png", "not-an-image")}
    assert all(f.detail and f.shard.endswith(".parquet") for f in failures)


def test_cli_text_and_json(tiny_dataset: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(main, ["failures", str(tiny_dataset)])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].split() == ["key", "reason", "source", "detail"]
    assert any("object/empty.jpg" in line and "empty" in line for line in lines)
    assert lines[-1] == "2 of 8 inputs failed (empty: 1, not-an-image: 1)"
    as_json = runner.invoke(main, ["failures", str(tiny_dataset), "--json"])
    assert as_json.exit_code == 0
    result = json.loads(as_json.output)
    assert result == failures_json(tiny_dataset)
    assert result["inputs"] == 8 and result["failures"] == 2
    assert result["failure_reasons"] == {"empty": 1, "not-an-image": 1}
    assert {f["source_path"] for f in result["failed"]} == {"object/empty.jpg", "person/notes.png"}


def test_a_dataset_without_failures_says_so(tiny_dataset: Path, tmp_path: Path) -> None:
    from fixtures.tiny_build import build_dataset, imagenet_inputs

    out = tmp_path / "clean"
    build_dataset(out, imagenet_inputs(), shard_size=3)
    result = CliRunner().invoke(main, ["failures", str(out)])
    assert result.exit_code == 0 and result.output.strip() == "no failed inputs (6 inputs, all ok)"


def test_control_characters_in_a_detail_are_escaped(dataset_copy: Path) -> None:
    index = next(p for p in sorted(dataset_copy.glob("*.parquet"))
                 if pc.sum(pc.equal(read_index(p).column("status"), "failed")).as_py())
    table = read_index(index)
    details = [("bad \x1b[31mname\x07" if s == "failed" else d)
               for s, d in zip(table.column("status").to_pylist(), table.column("detail").to_pylist(), strict=True)]
    i = table.schema.get_field_index("detail")
    index.write_bytes(index_bytes(table.set_column(i, table.schema.field(i), pa.array(details, pa.string()))))
    reseal(dataset_copy)
    out = CliRunner().invoke(main, ["failures", str(dataset_copy)]).output
    assert "\x1b" not in out and "\x07" not in out and "bad \\x1b[31mname\\x07" in out


def test_an_index_that_disagrees_with_the_manifest_is_refused(dataset_copy: Path) -> None:
    index = next(p for p in sorted(dataset_copy.glob("*.parquet"))
                 if pc.sum(pc.equal(read_index(p).column("status"), "failed")).as_py())
    table = read_index(index)
    i = table.schema.get_field_index("status")  # a forger hides the failures but keeps the manifest's counts
    table = table.set_column(i, table.schema.field(i), pa.array(["ok"] * table.num_rows, pa.string()))
    index.write_bytes(index_bytes(table))
    reseal(dataset_copy)
    with pytest.raises(ValueError, match=rf"{index.name}: 0 failed row\(s\), but the manifest counts"):
        list(iter_failures(dataset_copy))
    result = CliRunner().invoke(main, ["failures", str(dataset_copy)])
    assert result.exit_code == 1 and "regionshards verify" in result.output


def test_a_missing_or_unfinished_dataset_is_a_one_line_error(tmp_path: Path, tiny_dataset: Path) -> None:
    result = CliRunner().invoke(main, ["failures", str(tmp_path / "nope")])
    nope = tmp_path / "nope"
    assert result.exit_code == 1 and result.output.strip() == f"Error: dataset folder {nope} does not exist"
    partial = Path(shutil.copytree(tiny_dataset, tmp_path / "partial"))
    (partial / "manifest.json").unlink()
    result = CliRunner().invoke(main, ["failures", str(partial)])
    assert result.exit_code == 1 and "not a finished regionshards build" in result.output


def test_an_index_replaced_by_a_fifo_or_grown_is_refused_without_reading_it(dataset_copy: Path) -> None:
    import os

    index = next(p for p in sorted(dataset_copy.glob("*.parquet"))
                 if pc.sum(pc.equal(read_index(p).column("status"), "failed")).as_py())
    data = index.read_bytes()
    index.write_bytes(data + bytes(1 << 20))
    with pytest.raises(ValueError, match=rf"{index.name}: more than {len(data)} bytes, but the manifest says"):
        list(iter_failures(dataset_copy))
    index.unlink()
    os.mkfifo(index)
    with pytest.raises(ValueError, match=rf"{index.name}: not a regular file"):
        list(iter_failures(dataset_copy))


def test_an_index_declared_over_the_limit_is_not_read(dataset_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from regionshards.report import failures

    monkeypatch.setattr(failures, "MAX_INDEX_BYTES", 1000)  # the real limit is 1 GiB: a smaller one stands in
    with pytest.raises(ValueError, match=r"shard-\d{6}\.parquet: the manifest declares \d+ bytes, over the 1000-byte"):
        list(iter_failures(dataset_copy))
