"""The sample codec and the per-sample JSON Schema: records → JSON, sample dict ⇄ tar members."""

from __future__ import annotations

import copy
import io
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fixtures.tiny_build import TINY_CONFIG, imagenet_inputs, make_record
from regionshards.proposals import decode_segments, encode_segments, segment_areas
from regionshards.shards import FilterKeep, InputRecord, ProposalsData, SegmentsData, Source, config_hash
from regionshards.shards.reader import iter_shard
from regionshards.shards.sample import (
    canonical_json,
    image_extension,
    members_to_sample,
    record_sample,
    sample_json,
    sample_schema,
    sample_to_members,
    schema_errors,
)
from regionshards.shards.tario import TarStreamWriter

HASH = config_hash(TINY_CONFIG)


@pytest.fixture(scope="module")
def record() -> InputRecord:
    return make_record(next(i for i in imagenet_inputs() if i.key == "animal_chelsea"))


def test_schema_is_a_valid_draft_07_schema() -> None:
    jsonschema.Draft7Validator.check_schema(sample_schema())


def test_a_real_record_gives_schema_valid_json(record: InputRecord) -> None:
    meta = sample_json(record, HASH)
    assert schema_errors(meta) == []
    assert meta["key"] == "animal_chelsea" and meta["config_hash"] == HASH
    assert meta["image"] == {"field": "jpg", "format": "JPEG", "mode": "RGB", "width": 48, "height": 32,
                             "bytes": len(record.image), "exif_orientation": "ignored"}
    assert meta["source"] == {"path": "animal/chelsea.jpg", "image_id": None, "class_index": 0,
                              "class_name": "animal"}
    seg = meta["segments"]
    assert sum(seg["areas"]) == 48 * 32 and seg["params"] == TINY_CONFIG["segments"]["params"]
    assert decode_segments(seg["rles"]).max() == len(seg["rles"]) - 1
    props = meta["proposals"]
    assert len(props["boxes"]) == len(props["sizes"]) == len(props["levels"]) > 0
    assert set(props["filters"]) == {"ratio3", "ratio3size0308"}
    assert meta["ground_truth"] is None


def _mutations(meta: dict) -> list[tuple[str, dict]]:
    out = []

    def mutate(what: str, fn) -> None:
        m = copy.deepcopy(meta)
        fn(m)
        out.append((what, m))

    mutate("missing key", lambda m: m.pop("key"))
    mutate("extra property", lambda m: m.update(extra=1))
    mutate("dotted key", lambda m: m.update(key="a.b"))
    mutate("wrong version", lambda m: m.update(format_version=2))
    mutate("bad hash", lambda m: m.update(config_hash="xyz"))
    mutate("pickle field", lambda m: m["image"].update(field="pyd"))
    mutate("exif policy", lambda m: m["image"].update(exif_orientation="applied"))
    mutate("zero width", lambda m: m["image"].update(width=0))
    mutate("boolean width", lambda m: m["image"].update(width=True))
    mutate("missing ground_truth", lambda m: m.pop("ground_truth"))
    mutate("bad counts", lambda m: m["segments"]["rles"][0].update(counts="p~"))
    mutate("list counts", lambda m: m["segments"]["rles"][0].update(counts=[1, 2]))
    mutate("empty segments", lambda m: m["segments"].update(rles=[]))
    mutate("zero-area segment", lambda m: m["segments"]["areas"].__setitem__(0, 0))
    mutate("zero-width box", lambda m: m["proposals"]["boxes"].__setitem__(0, [0, 0, 0, 4]))
    mutate("float box", lambda m: m["proposals"]["boxes"].__setitem__(0, [0.5, 0, 3, 4]))
    mutate("five-number box", lambda m: m["proposals"]["boxes"].__setitem__(0, [0, 0, 3, 4, 5]))
    mutate("negative keep", lambda m: m["proposals"]["filters"]["ratio3"].update(keep=[-1]))
    mutate("segments extra", lambda m: m["segments"].update(annotation_ids=[1]))
    return out


def test_schema_rejects_broken_samples_and_both_validators_agree(record: InputRecord) -> None:
    """verify uses fastjsonschema for speed; the reference jsonschema must reach the same verdicts."""
    reference = jsonschema.Draft7Validator(sample_schema())
    meta = sample_json(record, HASH)
    assert schema_errors(meta) == [] and reference.is_valid(meta)
    for what, broken in _mutations(meta):
        assert schema_errors(broken), what
        assert not reference.is_valid(broken), what


def test_nullable_parts_and_zero_proposals_are_valid(record: InputRecord) -> None:
    empty = ProposalsData("selective_search", {}, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0),
                          {"ratio3": FilterKeep("whole-image", np.zeros(0, np.int64))})
    meta = sample_json(replace(record, segments=None, proposals=empty), HASH)
    assert meta["segments"] is None and meta["proposals"]["boxes"] == [] and schema_errors(meta) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: replace(r, image=b""), "image bytes"),
        (lambda r: replace(r, width=None), "positive integer width"),
        (lambda r: replace(r, image_format="PKL"), "no safe member extension"),
        (lambda r: replace(r, segments=replace(r.segments, areas=r.segments.areas[:-1])), "values for"),
        (lambda r: replace(r, segments=replace(r.segments, areas=r.segments.areas * 2)), "must cover"),
        (lambda r: replace(r, segments=replace(r.segments, rles=[])), "at least one segment"),
        (lambda r: replace(r, proposals=replace(r.proposals, boxes=r.proposals.boxes + 0.5)), "whole numbers"),
        (lambda r: replace(r, proposals=replace(r.proposals, boxes=r.proposals.boxes + 100)), "outside"),
        (lambda r: replace(r, proposals=replace(r.proposals, filters={"x": FilterKeep("x", np.array([5000]))})),
         "ascending unique"),
        (lambda r: InputRecord.failed(r.key, r.source, "empty", "zero bytes"), "failed input has no sample"),
    ],
)
def test_invalid_records_are_refused_naming_the_key(record: InputRecord, change, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        sample_json(change(record), HASH)
    assert "animal_chelsea" in str(info.value)


def test_extension_comes_from_the_sniffed_format() -> None:
    assert [image_extension(f) for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")] == [
        "jpg", "png", "webp", "gif", "bmp", "tiff", "ppm"]
    for bad in ("JSON", "PT", "", "X.Y"):
        with pytest.raises(ValueError):
            image_extension(bad)


def test_canonical_json_is_compact_sorted_utf8_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_record_sample_has_the_image_bytes_unchanged(record: InputRecord) -> None:
    sample = record_sample(record, HASH)
    assert sample["jpg"] == record.image
    assert [name for name, _ in sample_to_members(sample)] == ["animal_chelsea.jpg", "animal_chelsea.json"]


def test_members_refuse_bad_fields_and_values() -> None:
    with pytest.raises(ValueError, match="invalid member field"):
        sample_to_members({"__key__": "k", "pkl": b"x"})
    with pytest.raises(ValueError, match="must be bytes"):
        sample_to_members({"__key__": "k", "txt": "text"})
    with pytest.raises(ValueError, match="invalid sample key"):
        sample_to_members({"__key__": "a.b", "txt": b"x"})
    with pytest.raises(ValueError, match=r"k\.json: invalid JSON"):
        members_to_sample("k", [("json", b"{")])


# ------------------------------------------------------------------------------------------ property tests

_json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False,
                                                                                  allow_infinity=False) | st.text()
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                            max_size=4), max_leaves=12)
_key = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
_field = st.from_regex(r"[a-z0-9]{1,5}(\.[a-z0-9]{1,4})?", fullmatch=True).filter(
    lambda f: not {"pyd", "pkl", "pt", "pth", "pickle"} & set(f.split(".")))


@st.composite
def _samples(draw) -> list[dict]:
    keys = draw(st.lists(_key, min_size=1, max_size=4, unique=True))
    out = []
    for key in keys:
        sample = {"__key__": key, "json": draw(_json)}
        for field in draw(st.lists(_field, max_size=3, unique=True)):
            sample[field] = draw(_json) if field.endswith("json") else draw(st.binary(max_size=1200))
        out.append(sample)
    return out


@settings(max_examples=60, deadline=None)
@given(_samples())
def test_sample_dicts_survive_tar_members_and_back(samples: list[dict]) -> None:
    buf = io.BytesIO()
    writer = TarStreamWriter(buf)
    members = sorted(m for s in samples for m in sample_to_members(s))
    for name, data in members:
        writer.add(name, data)
    writer.close()
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "s-000000.tar"
        shard.write_bytes(buf.getvalue())
        got = list(iter_shard(shard, validate=False))
    expected = sorted(samples, key=lambda s: (s["__key__"] + ".").encode())
    for s in got:
        assert s.pop("__url__") == str(shard)
    assert got == expected


@settings(max_examples=60, deadline=None)
@given(arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 5)))
def test_rle_json_round_trip(raw: np.ndarray) -> None:
    _, labels = np.unique(raw, return_inverse=True)  # dense ids 0..n-1
    labels = labels.reshape(raw.shape).astype(np.int32)
    rles = encode_segments(labels)
    back = json.loads(canonical_json({"rles": rles}))["rles"]
    assert back == rles
    np.testing.assert_array_equal(decode_segments(back), labels)
    assert int(segment_areas(back).sum()) == labels.size


def test_from_rles_matches_from_labels() -> None:
    labels = np.zeros((5, 7), np.int32)
    labels[1:4, 2:6] = 1
    a = SegmentsData.from_labels(labels, "fh", {})
    b = SegmentsData.from_rles([{**r, "counts": r["counts"].encode()} for r in a.rles], "fh", {})
    assert b.rles == a.rles
    np.testing.assert_array_equal(a.areas, b.areas)
    np.testing.assert_array_equal(a.bboxes, b.bboxes)
    assert Source("x.jpg").describe() == "x.jpg" and Source(image_id=3).describe() == "image id 3"
