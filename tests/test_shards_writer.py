"""The shard writer and the manifest: determinism, one index row per input, atomicity, edge-case inputs."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from fixtures.tiny_build import (
    TINY_CONFIG,
    TinyInput,
    build_dataset,
    coco_inputs,
    imagenet_inputs,
    make_record,
)
from regionshards.proposals import annotations_to_labels
from regionshards.shards import (
    DuplicateKeyError,
    InputRecord,
    ProposalsData,
    SegmentsData,
    Source,
    config_hash,
    label_map,
    open_dataset,
    read_manifest,
    shard_name,
    verify,
    write_manifest,
    write_shard,
)
from regionshards.shards.index import INDEX_SCHEMA, read_index
from regionshards.shards.manifest import ManifestError, manifest_bytes, manifest_schema

HASH = config_hash(TINY_CONFIG)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny_records() -> list[InputRecord]:
    items = imagenet_inputs() + [TinyInput(Source("object/empty.jpg"), b"")]
    return [make_record(i) for i in items]


def test_same_inputs_give_byte_identical_tar_parquet_and_manifest(tiny_records, tmp_path: Path) -> None:
    items = imagenet_inputs() + [TinyInput(Source("object/empty.jpg"), b"")]
    build_dataset(tmp_path / "a", items, records=tiny_records)
    shuffled = list(tiny_records)
    random.Random(1).shuffle(shuffled)
    # Shards written in reverse order, records in another order within each shard: same bytes.
    ordered = sorted(tiny_records, key=lambda r: r.key)
    (tmp_path / "b").mkdir()
    infos = [
        write_shard(tmp_path / "b", n, random.Random(n).sample(ordered[n * 3 : n * 3 + 3], k=len(ordered[n * 3 :
                                                                                                      n * 3 + 3])),
                    config_hash=HASH)
        for n in reversed(range(3))
    ]
    write_manifest(tmp_path / "b", TINY_CONFIG, infos)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert list(a) == ["manifest.json"] + [f"shard-{i:06d}.{ext}" for i in range(3) for ext in ("parquet", "tar")]
    assert a == b
    build_dataset(tmp_path / "a", items, records=shuffled)  # rewriting in place changes nothing either
    assert _files(tmp_path / "a") == a


def test_index_has_one_row_per_input_and_true_offsets(tiny_dataset: Path) -> None:
    manifest = read_manifest(tiny_dataset / "manifest.json")
    assert manifest["totals"] == {"shards": 3, "inputs": 8, "samples": 6, "failures": 2, "bytes": sum(
        s["bytes"] + s["index_bytes"] for s in manifest["shards"]), "failure_reasons": {"empty": 1,
                                                                                         "not-an-image": 1}}
    table = open_dataset(tiny_dataset).index()
    assert table.num_rows == 8 and table.schema.remove(0).equals(INDEX_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    failed = {r["key"]: (r["reason"], r["source_path"], r["image_offset"]) for r in rows if r["status"] == "failed"}
    assert failed == {"object_empty": ("empty", "object/empty.jpg", None),
                      "person_notes": ("not-an-image", "person/notes.png", None)}
    for row in rows:
        if row["status"] != "ok":
            continue
        raw = (tiny_dataset / Path(row["shard"]).name).read_bytes()
        meta = json.loads(raw[row["json_offset"] : row["json_offset"] + row["json_bytes"]])
        image = raw[row["image_offset"] : row["image_offset"] + row["image_bytes"]]
        assert meta["key"] == row["key"] and Image.open(io.BytesIO(image)).size == (row["width"], row["height"])
        assert raw[row["json_offset"] - 512 : row["json_offset"] - 412].rstrip(b"\0") == f"{row['key']}.json".encode()
        assert (row["n_segments"], row["n_proposals"]) == (len(meta["segments"]["rles"]),
                                                           len(meta["proposals"]["boxes"]))
    meta_of = read_index(tiny_dataset / "shard-000000.parquet").schema.metadata
    assert meta_of[b"regionshards.shard"] == b"shard-000000.tar" and meta_of[b"regionshards.format_version"] == b"1"


def test_a_bad_record_writes_nothing_and_no_temporary_file_is_left(tiny_records, tmp_path: Path) -> None:
    good = tiny_records[0]
    bad = InputRecord("bad", Source("bad.jpg"), image=good.image, image_format="JPEG", image_mode="RGB",
                      width=good.width, height=good.height + 1, segments=good.segments)
    with pytest.raises(ValueError, match="bad: segments: segment 0 has size"):
        write_shard(tmp_path, 0, [good, bad], config_hash=HASH)
    assert os.listdir(tmp_path) == []
    write_shard(tmp_path, 0, [good], config_hash=HASH)
    assert sorted(os.listdir(tmp_path)) == ["shard-000000.parquet", "shard-000000.tar"]
    assert oct(os.stat(tmp_path / "shard-000000.tar").st_mode & 0o777) == "0o644"


def test_duplicate_keys_are_refused_at_plan_time_and_by_the_writer(tiny_records, tmp_path: Path) -> None:
    items = [TinyInput(Source("a/b.jpg"), b"x"), TinyInput(Source("a_b.png"), b"y")]
    with pytest.raises(DuplicateKeyError, match=r"'a/b\.jpg'.*'a_b\.png'"):
        build_dataset(tmp_path, items)
    twin = InputRecord.failed(tiny_records[0].key, Source("elsewhere.jpg"), "empty", "zero bytes")
    with pytest.raises(DuplicateKeyError, match="elsewhere.jpg"):
        write_shard(tmp_path, 0, [tiny_records[0], twin], config_hash=HASH)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: shard_name("bad.prefix", 0), "prefix"),
        (lambda: shard_name("s", 1_000_000), "0..999999"),
        (lambda: write_shard(".", 0, [], config_hash="abc"), "64 lower-case hex"),
        (lambda: write_shard(".", 0, [InputRecord("k", Source("k"), status="weird")], config_hash=HASH), "status"),
        (lambda: write_shard(".", 0, [InputRecord.failed("k", Source("k"), "", "")], config_hash=HASH), "reason"),
    ],
)
def test_writer_arguments_are_checked(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _mode_inputs() -> list[TinyInput]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    grey16 = Image.fromarray((rng.integers(0, 65535, (24, 32))).astype(np.uint16))
    return [
        TinyInput(Source("grey.jpg"), _encoded(rgb.convert("L"), "JPEG")),
        TinyInput(Source("cmyk.jpg"), _encoded(rgb.convert("CMYK"), "JPEG")),
        TinyInput(Source("deep.png"), _encoded(grey16, "PNG")),
        TinyInput(Source("alpha.png"), _encoded(rgb.convert("RGBA"), "PNG")),
        TinyInput(Source("palette.png"), _encoded(pal, "PNG", transparency=0)),
        TinyInput(Source("really-a-png.jpg"), _encoded(rgb, "PNG")),
        TinyInput(Source("café/naïve photo.v2.jpeg"), _encoded(rgb, "JPEG")),
        TinyInput(Source("猫.webp"), _encoded(rgb, "WEBP", lossless=True)),
    ]


def test_grey_cmyk_16bit_alpha_palette_and_odd_names(tmp_path: Path) -> None:
    items = _mode_inputs()
    build_dataset(tmp_path, items, shard_size=4)
    report = verify(tmp_path)
    assert report.ok, str(report)
    by_path = {s["json"]["source"]["path"]: s for s in open_dataset(tmp_path)}
    assert set(by_path) == {i.source.path for i in items}
    for item in items:
        sample = by_path[item.source.path]
        field = sample["json"]["image"]["field"]
        assert sample[field] == item.data  # original bytes, unchanged
        assert "." not in sample["__key__"]
    modes = {p: (s["json"]["image"]["mode"], s["json"]["image"]["field"]) for p, s in by_path.items()}
    assert modes["grey.jpg"] == ("L", "jpg") and modes["cmyk.jpg"] == ("CMYK", "jpg")
    assert modes["deep.png"][0].startswith("I") and modes["alpha.png"] == ("RGBA", "png")
    assert modes["palette.png"] == ("P", "png") and modes["really-a-png.jpg"] == ("RGB", "png")
    assert modes["猫.webp"][1] == "webp"


def test_one_segment_zero_proposals_and_more_than_65535_segments(tmp_path: Path) -> None:
    one = make_record(TinyInput(Source("flat.png"), _encoded(Image.new("RGB", (20, 10), (9, 9, 9)), "PNG")))
    assert len(one.segments.rles) == 1
    none = ProposalsData("selective_search", {}, np.zeros((0, 4)), np.zeros(0), np.zeros(0), {})
    one = InputRecord(**{**one.__dict__, "proposals": none})
    h, w = 257, 256  # every pixel its own segment: 65,792 ids
    many_labels = np.arange(h * w, dtype=np.int32).reshape(h, w)
    many = InputRecord("many", Source("many.png"), image=_encoded(Image.new("L", (w, h)), "PNG"),
                       image_format="PNG", image_mode="L", width=w, height=h,
                       segments=SegmentsData.from_labels(many_labels, "identity", {}))
    infos = build_dataset(tmp_path, [TinyInput(Source("flat.png"), b""), TinyInput(Source("many.png"), b"")],
                          records=[one, many])
    assert verify(tmp_path).ok
    samples = {s["__key__"]: s for s in open_dataset(tmp_path)}
    assert samples["flat"]["json"]["proposals"]["boxes"] == [] and len(samples["flat"]["json"]["segments"]["rles"]) == 1
    np.testing.assert_array_equal(label_map(samples["many"]), many_labels)
    assert open_dataset(tmp_path).index().column("n_segments").to_pylist() == [1, h * w]
    assert infos[0].samples == 2


def test_coco_source_stores_ground_truth_segments_with_image_id_keys(tmp_path: Path) -> None:
    items = coco_inputs(("coins",))
    build_dataset(tmp_path, items)
    assert verify(tmp_path).ok
    (sample,) = open_dataset(tmp_path)
    assert sample["__key__"] == "000000000005" and sample["json"]["source"]["image_id"] == 5
    gt = sample["json"]["ground_truth"]
    labels, ann_ids = annotations_to_labels(items[0].annotations, 303, 384)
    assert gt["annotation_ids"] == ann_ids and gt["category_ids"][0] == -1
    np.testing.assert_array_equal(label_map(sample, "ground_truth"), labels)


def test_manifest_is_deterministic_and_checked(tiny_dataset: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_dataset / "manifest.json")
    jsonschema.Draft7Validator.check_schema(manifest_schema())
    assert jsonschema.Draft7Validator(manifest_schema()).is_valid(manifest)
    assert manifest_bytes(manifest) == (tiny_dataset / "manifest.json").read_bytes()
    assert manifest["tool"] == {"name": "regionshards", "version": "0.1.0"}
    assert manifest["config"] == TINY_CONFIG and manifest["config_hash"] == HASH
    # Pinned: SHA-256 of the canonical JSON {"a":"\u00e9","b":[1,2.5]} (printf ... | sha256sum); must not drift.
    assert config_hash({"b": [1, 2.5], "a": "é"}) == "1d5aa48ef9cd2b6be14efd77e6aa32fc7767713b66a7abf3c772a7863e7c199a"
    assert config_hash({"scale": 1000}) != config_hash({"scale": 1000.0})
    for change, message in [
        (lambda m: m.update(config_hash="0" * 64), "config_hash"),
        (lambda m: m["totals"].update(samples=99), "totals"),
        (lambda m: m["shards"][0].update(samples=0), "inputs"),
        (lambda m: m.update(format_version=2), "format_version 2"),
        (lambda m: m["shards"][0].update(name="../x.tar"), "must match pattern"),
    ]:
        broken = json.loads(json.dumps(manifest))
        change(broken)
        (tmp_path / "manifest.json").write_bytes(manifest_bytes(broken))
        with pytest.raises(ManifestError, match=message):
            read_manifest(tmp_path / "manifest.json")
