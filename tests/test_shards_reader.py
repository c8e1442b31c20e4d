"""The safe reader: sources, plain dict samples, sha256 on request, refusals, and the skip-and-record handler."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest

from fixtures.tampering import append_members, foreign_member, reseal
from regionshards.shards import Recorder, ShardDataset, ShardError, iter_shard, label_map, open_dataset
from regionshards.shards.tario import TarStreamWriter

KEYS = ["animal_chelsea", "object_coffee", "object_coins", "object_rocket", "person_astronaut", "person_camera"]


def _keys(samples) -> list[str]:
    return [s["__key__"] for s in samples]


def test_a_dataset_opens_from_its_folder_manifest_shard_list_single_shard_and_file_url(tiny_dataset: Path) -> None:
    shards = sorted(str(p) for p in tiny_dataset.glob("*.tar"))
    assert _keys(open_dataset(tiny_dataset)) == KEYS
    assert _keys(open_dataset(tiny_dataset / "manifest.json")) == KEYS
    assert _keys(open_dataset(shards)) == KEYS
    assert _keys(open_dataset(shards[1])) == KEYS[3:5]  # shard 1: object_empty (failed), rocket, astronaut
    assert _keys(open_dataset([f"file://{s}" for s in shards])) == KEYS
    ds = open_dataset(tiny_dataset)
    assert isinstance(ds, ShardDataset) and ds.num_samples == 6 and open_dataset(shards).num_samples is None


def test_samples_are_plain_dicts_with_bytes_and_parsed_json(tiny_dataset: Path) -> None:
    sample = next(iter(open_dataset(tiny_dataset)))
    assert type(sample) is dict and set(sample) == {"__key__", "__url__", "jpg", "json"}
    assert sample["__url__"] == str(tiny_dataset / "shard-000000.tar")
    assert sample["jpg"][:2] == b"\xff\xd8" and sample["json"]["key"] == "animal_chelsea"
    assert label_map(sample).shape == (32, 48)
    raw = next(iter(open_dataset(tiny_dataset, parse_json=False)))
    assert isinstance(raw["json"], bytes) and json.loads(raw["json"]) == sample["json"]


def test_sha256_is_checked_on_request_before_anything_is_yielded(dataset_copy: Path) -> None:
    with pytest.raises(ValueError, match="needs a manifest"):
        open_dataset(sorted(dataset_copy.glob("*.tar")), verify_sha256=True)
    assert _keys(open_dataset(dataset_copy, verify_sha256=True)) == KEYS
    shard = dataset_copy / "shard-000001.tar"
    raw = bytearray(shard.read_bytes())
    raw[700] ^= 0x04  # inside an image: the tar structure stays valid
    shard.write_bytes(bytes(raw))
    assert _keys(open_dataset(dataset_copy)) == KEYS  # without the check the damage goes unnoticed
    with pytest.raises(ShardError, match="sha256") as info:
        list(open_dataset(dataset_copy, verify_sha256=True))
    assert (info.value.code, info.value.shard, info.value.member) == ("sha256-mismatch", str(shard), None)
    recorder = Recorder()
    got = _keys(open_dataset(dataset_copy, verify_sha256=True, handler=recorder))
    assert got == KEYS[:3] + KEYS[5:]  # the whole damaged shard is skipped and recorded
    assert [(e.code, e.shard) for e in recorder.errors] == [("sha256-mismatch", str(shard))]


class _Boom:
    """Unpickling this would create a file: proof that the reader never unpickles."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_members_are_refused_and_never_unpickled(dataset_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    shard = dataset_copy / "shard-000000.tar"
    payload = pickle.dumps(_Boom(str(marker)))
    append_members(shard, foreign_member("zzz.json", b"{}"), foreign_member("zzz.pkl", payload),
                   foreign_member("zzzz.json", b"[1]"))
    with pytest.raises(ShardError) as info:
        list(open_dataset(dataset_copy))
    assert (info.value.code, info.value.shard, info.value.member) == ("pickle-extension", str(shard), "zzz.pkl")
    recorder = Recorder()
    got = list(open_dataset(dataset_copy, handler=recorder))
    assert _keys(got) == KEYS  # sample zzz skipped, zzzz refused by the sample schema, the rest read on
    assert [(e.code, e.member) for e in recorder.errors] == [("pickle-extension", "zzz.pkl"), ("schema", "zzzz.json")]
    recorder = Recorder()
    got = list(open_dataset(dataset_copy, handler=recorder, validate=False))  # any WebDataset-style sample
    assert _keys(got) == KEYS[:3] + ["zzzz"] + KEYS[3:]
    assert [(e.code, e.member) for e in recorder.errors] == [("pickle-extension", "zzz.pkl")]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("member", "code"),
    [
        (foreign_member("../evil.json", b"{}"), "path-traversal"),
        (foreign_member("/etc/evil.json", b"{}"), "absolute-name"),
        (foreign_member("zzz.jpg", kind=tarfile.SYMTYPE, linkname="/etc/passwd"), "link"),
        (foreign_member("zzz.jpg", kind=tarfile.CHRTYPE), "device"),
        (foreign_member("zzz.json", b"{not json"), "bad-json"),
        (foreign_member("animal_chelsea.txt", b"again"), "duplicate-key"),
        (foreign_member("zzz.json", b"{}") + foreign_member("zzz.json", b"{}"), "duplicate-member"),
        (foreign_member("zzz.jpg", b"x" * 5000), "oversize"),
    ],
)
def test_refusals_raise_naming_shard_and_member_or_are_recorded(dataset_copy: Path, member: bytes, code: str) -> None:
    shard = dataset_copy / "shard-000000.tar"
    append_members(shard, member)
    reseal(dataset_copy)
    with pytest.raises(ShardError) as info:
        list(open_dataset(dataset_copy, verify_sha256=True, max_member_bytes=4096))
    assert info.value.code == code and info.value.shard == str(shard) and info.value.member
    recorder = Recorder()
    assert _keys(open_dataset(dataset_copy, handler=recorder, max_member_bytes=4096)) == KEYS
    assert [e.code for e in recorder.errors] == [code]


def test_truncated_shard_raises_or_keeps_the_samples_before_the_damage(dataset_copy: Path) -> None:
    shard = dataset_copy / "shard-000000.tar"
    raw = shard.read_bytes()
    cut = raw.index(b"object_coins.jpg\0") + 512 + 10  # inside the third sample's image
    shard.write_bytes(raw[:cut])
    with pytest.raises(ShardError, match="truncated") as info:
        list(iter_shard(shard))
    assert info.value.member == "object_coins.jpg"
    recorder = Recorder()
    assert _keys(open_dataset(dataset_copy, handler=recorder)) == KEYS[:2] + KEYS[3:]
    assert [(e.code, e.member) for e in recorder.errors] == [("truncated", "object_coins.jpg")]


def test_missing_manifest_or_shard_is_a_clear_error(dataset_copy: Path, tmp_path: Path) -> None:
    os.remove(dataset_copy / "shard-000002.tar")
    with pytest.raises(ShardError, match="unreadable: FileNotFoundError"):
        list(open_dataset(dataset_copy))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="must end with .tar"):
        open_dataset(["a.zip"])


def test_a_handler_that_raises_stops_the_iteration(dataset_copy: Path) -> None:
    append_members(dataset_copy / "shard-000000.tar", foreign_member("zzz.pth", b"x"))

    def strict(error: ShardError) -> None:
        raise RuntimeError(f"stop at {error.member}")

    with pytest.raises(RuntimeError, match="stop at zzz.pth"):
        list(open_dataset(dataset_copy, handler=strict))


def test_index_covers_every_input(tiny_dataset: Path, tmp_path: Path) -> None:
    table = open_dataset(tiny_dataset).index()
    assert table.column_names[0] == "shard" and table.num_rows == 8
    assert table.column("status").to_pylist().count("failed") == 2
    shutil.copy(tiny_dataset / "shard-000000.tar", tmp_path / "only-000000.tar")
    with open(tmp_path / "x-000000.tar", "wb") as f:
        TarStreamWriter(f).close()
    assert list(open_dataset([str(tmp_path / "x-000000.tar")])) == []
