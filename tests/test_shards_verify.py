"""``verify`` and ``regionshards verify``: a clean dataset passes; each kind of damage gives its exact finding."""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from fixtures.tampering import append_members, foreign_member, reseal
from fixtures.tiny_build import TINY_CONFIG, build_dataset, imagenet_inputs, make_record
from regionshards.cli.main import main
from regionshards.shards import verify
from regionshards.shards.index import index_bytes

SHARD0 = "shard-000000.tar"


def _where(report) -> list[tuple[str, str | None, str | None]]:
    return [(f.code, f.shard, f.member) for f in report.findings]


def _cli(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify", str(path)])
    return result.exit_code, result.output


def test_a_clean_dataset_verifies_with_exit_status_0(tiny_dataset: Path) -> None:
    report = verify(tiny_dataset)
    assert report.ok and report.findings == [] and report.shards == 3 and report.samples_read == 6
    assert verify(tiny_dataset / "manifest.json").ok
    code, output = _cli(tiny_dataset)
    assert code == 0, output
    assert "OK: 3 shard(s), 6 sample(s) read; manifest: inputs 8 = ok 6 + failed 2" in output
    assert "format_version 1, regionshards 0.1.0" in output and "PROBLEMS" not in output


def test_truncated_shard(dataset_copy: Path) -> None:
    shard = dataset_copy / SHARD0
    raw = shard.read_bytes()
    shard.write_bytes(raw[: raw.index(b"object_coffee.json\0") + 600])
    report = verify(dataset_copy)
    assert _where(report) == [("shard-size-mismatch", SHARD0, None), ("truncated", SHARD0, "object_coffee.json")]
    code, output = _cli(dataset_copy)
    assert code == 1 and "PROBLEMS: 2" in output and "truncated" in output and output.rstrip().splitlines()[
        -1].startswith("FAILED")


def test_bit_flipped_shard(dataset_copy: Path) -> None:
    shard = dataset_copy / SHARD0
    raw = bytearray(shard.read_bytes())
    raw[512 + 300] ^= 0x10  # inside the first image's entropy-coded data
    shard.write_bytes(bytes(raw))
    assert _where(verify(dataset_copy)) == [("shard-sha256-mismatch", SHARD0, None)]


def test_missing_shard(dataset_copy: Path) -> None:
    os.remove(dataset_copy / "shard-000001.tar")
    assert _where(verify(dataset_copy)) == [("shard-missing", "shard-000001.tar", None)]
    assert _cli(dataset_copy)[0] == 1


def test_extra_stray_file(dataset_copy: Path) -> None:
    (dataset_copy / ".shard-000003.tar.x1y2.tmp").write_bytes(b"partial")
    assert _where(verify(dataset_copy)) == [("stray-file", ".shard-000003.tar.x1y2.tmp", None)]


def test_pyd_member(dataset_copy: Path) -> None:
    append_members(dataset_copy / SHARD0, foreign_member("zzz.pyd", b"\x80\x04K\x01."))
    reseal(dataset_copy)  # even with a matching checksum the member is refused
    assert _where(verify(dataset_copy)) == [("pickle-extension", SHARD0, "zzz.pyd")]


def test_path_traversal_member(dataset_copy: Path) -> None:
    append_members(dataset_copy / SHARD0, foreign_member("../../etc/cron.d/x.json", b"{}"))
    reseal(dataset_copy)
    assert _where(verify(dataset_copy)) == [("path-traversal", SHARD0, "../../etc/cron.d/x.json")]


def test_symlink_member(dataset_copy: Path) -> None:
    append_members(dataset_copy / SHARD0, foreign_member("zzz.jpg", kind=tarfile.SYMTYPE, linkname="/etc/passwd"))
    reseal(dataset_copy)
    assert _where(verify(dataset_copy)) == [("link", SHARD0, "zzz.jpg")]


def test_missing_manifest_and_broken_manifest(dataset_copy: Path) -> None:
    manifest = json.loads((dataset_copy / "manifest.json").read_text())
    manifest["totals"]["samples"] += 1
    (dataset_copy / "manifest.json").write_text(json.dumps(manifest))
    report = verify(dataset_copy)
    assert [f.code for f in report.findings] == ["manifest-invalid"] and "do not add up" in str(report)
    os.remove(dataset_copy / "manifest.json")
    assert _where(verify(dataset_copy)) == [("manifest-missing", None, None)]


def test_index_that_disagrees_with_its_tar(dataset_copy: Path) -> None:
    path = dataset_copy / "shard-000000.parquet"
    table = pq.read_table(path)
    widths = table.column("width").to_pylist()
    widths[1] += 1
    table = table.set_column(table.schema.get_field_index("width"), "width", pa.array(widths, pa.int32()))
    path.write_bytes(index_bytes(table))
    reseal(dataset_copy)
    report = verify(dataset_copy)
    assert _where(report) == [("index-mismatch", "shard-000000.parquet", "object_coffee")]
    assert "width 49 != 48" in report.findings[0].message


def test_sample_content_checks_catch_what_the_writer_cannot(tmp_path: Path) -> None:
    """The writer checks sizes and that areas sum to H*W; swapped areas and a proposal box edited in the JSON
    are left for verify (areas against the RLEs, boxes against the image)."""
    items = [i for i in imagenet_inputs() if i.key == "animal_chelsea"]
    record = make_record(items[0])
    areas = record.segments.areas.copy()
    areas[[0, 1]] = areas[[1, 0]]
    build_dataset(tmp_path, items, records=[replace(record, segments=replace(record.segments, areas=areas))])
    assert [f.code for f in verify(tmp_path).findings] == ["area-mismatch"]

    # Same length JSON edit: a proposal box moved outside the 48x32 image.
    build_dataset(tmp_path, items, records=[record])
    shard = tmp_path / SHARD0
    raw = shard.read_bytes()
    widest = np.asarray(record.proposals.boxes, np.int64)[np.argmax(record.proposals.boxes[:, 2])].tolist()
    assert widest[2] >= 40
    box = json.dumps(widest, separators=(",", ":")).encode()
    moved = json.dumps([int("9" * len(str(widest[0]))), *widest[1:]], separators=(",", ":")).encode()
    assert len(moved) == len(box) and raw.count(box) >= 1  # proposals.boxes come first in the sorted JSON
    shard.write_bytes(raw.replace(box, moved, 1))
    reseal(tmp_path)
    assert [f.code for f in verify(tmp_path).findings] == ["box-outside-image"]


def test_report_text_lists_each_problem_with_its_place(dataset_copy: Path) -> None:
    os.remove(dataset_copy / "shard-000002.tar")
    (dataset_copy / "notes.txt").write_text("x")
    text = str(verify(dataset_copy))
    assert "stray-file" in text and "notes.txt" in text and "shard-missing" in text and "shard-000002.tar" in text
    assert TINY_CONFIG and text.splitlines()[0] == f"verify {dataset_copy}"
