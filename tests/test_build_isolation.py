"""One bad input never stops a shard: the worker and the listing (no Ray), every trigger of issue #12."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from build_inputs import FAST, corrupt_blp, hostile_coco, jpeg_bytes, lying_jpeg, make_imagenet
from regionshards.builder import SourceError, list_source, make_config
from regionshards.builder.plan import order_refs, plan_shards
from regionshards.builder.sources import ImageRef
from regionshards.builder.worker import REASONS, compute_input, process_shard, read_input
from regionshards.shards import open_dataset
from regionshards.shards.records import Source

CONFIG = make_config(**FAST, proposals="none", shard_size=100, layout="folder")


def rows_of(out: Path, name: str = "shard-000000") -> dict[str, dict]:
    return {r["source_path"]: r for r in pq.read_table(out / f"{name}.parquet").to_pylist()}


def build_one(refs, config, out: Path) -> dict[str, dict]:
    out.mkdir(parents=True, exist_ok=True)
    info = process_shard(0, refs, config, str(out)).info
    assert info.inputs == len(refs) == info.samples + info.failures
    return rows_of(out)


def ref(path: Path, rel: str) -> ImageRef:
    from regionshards.shards.keys import key_from_path

    return ImageRef(key_from_path(rel), str(path), Source(path=rel))


# --- reads: bytes, file kinds ---------------------------------------------------------------------------------


def test_only_regular_files_are_read_and_never_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:  # a sparse 6 GB file: refused from its size, never read
        f.truncate(6 * 2**30)
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "folder.jpg").mkdir()
    refs = [ref(fifo, "pipe.jpg"), ref(big, "huge.jpg"), ref(Path("/dev/zero"), "dev/zero"),
            ref(tmp_path / "ok.jpg", "ok.jpg"), ref(tmp_path / "folder.jpg", "folder.jpg"),
            ref(tmp_path / "gone.jpg", "gone.jpg")]
    rows = build_one(refs, CONFIG, tmp_path / "out")
    assert {k: r["reason"] for k, r in rows.items()} == {
        "pipe.jpg": "not-a-regular-file", "huge.jpg": "too-many-bytes", "dev/zero": "not-a-regular-file",
        "ok.jpg": None, "folder.jpg": "not-a-regular-file", "gone.jpg": "missing"}
    assert "a FIFO" in rows["pipe.jpg"]["detail"] and "6442450944 bytes" in rows["huge.jpg"]["detail"]
    assert rows["ok.jpg"]["input_bytes"] == (tmp_path / "ok.jpg").stat().st_size
    assert len(rows["ok.jpg"]["input_sha256"]) == 64 and rows["ok.jpg"]["input_mtime_ns"] > 0


def test_max_bytes_is_a_config_limit(tmp_path: Path) -> None:
    data = jpeg_bytes()
    (tmp_path / "a.jpg").write_bytes(data)
    with pytest.raises(Exception, match="too-many-bytes"):
        read_input(str(tmp_path / "a.jpg"), len(data) - 1)
    assert read_input(str(tmp_path / "a.jpg"), len(data))[0] == data


# --- decoding and computing: every exception is a row ----------------------------------------------------------


def test_hostile_images_fail_alone_with_stable_reasons(tmp_path: Path) -> None:
    files = {"lying.jpg": (lying_jpeg(9000, 9000), "too-many-pixels"), "blp.jpg": (corrupt_blp(), "undecodable"),
             "ok.jpg": (jpeg_bytes(), None), "notes.jpg": (b"notes", "not-an-image")}
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    rows = build_one([ref(tmp_path / n, n) for n in files], CONFIG, tmp_path / "out")
    assert {n: r["reason"] for n, r in rows.items()} == {n: why for n, (_, why) in files.items()}
    assert "81000000 pixels > limit 32000000" in rows["lying.jpg"]["detail"]
    assert all(r["reason"] in REASONS for r in rows.values() if r["reason"])


def test_pillow_limit_never_caps_the_users_choice(tmp_path: Path) -> None:
    from PIL import Image

    from regionshards.images import decode_image

    data = lying_jpeg(14000, 13000)  # 182 Mpx > 2 x Pillow's own 89 Mpx limit; ≈ 1.1 GB to decode
    assert decode_image(data, 200_000_000).rgb.shape == (13000, 14000, 3)  # Pillow does not refuse it
    assert Image.MAX_IMAGE_PIXELS == 89478485  # and Pillow's global setting is left as it was


@pytest.mark.parametrize(("error", "reason"), [(MemoryError, "out-of-memory"), (RuntimeError, "error"),
                                               (NotImplementedError, "error")])
def test_any_exception_in_a_stage_is_that_inputs_row(tmp_path: Path, monkeypatch, error, reason) -> None:
    import regionshards.proposals as proposals

    class Boom:
        def __repr__(self) -> str:
            return object.__repr__(self)  # '<... object at 0x7f...>': must not reach the detail

    def explode(*args, **kwargs):
        raise error(f"kernel failed on {Boom()!r} at {tmp_path}/x.jpg")

    (tmp_path / "x.jpg").write_bytes(jpeg_bytes())
    monkeypatch.setattr(proposals, "felzenszwalb", explode)
    out = compute_input(ImageRef("x", str(tmp_path / "x.jpg"), Source(path="x.jpg")), CONFIG)
    assert out.record.reason == reason and out.record.detail.startswith("segments: ")
    assert "0x" not in out.record.detail and str(tmp_path) not in out.record.detail or reason == "out-of-memory"


# --- COCO annotations -------------------------------------------------------------------------------------------


def test_unusable_annotations_are_dropped_with_a_note(tmp_path: Path) -> None:
    images, ann, expect = hostile_coco(tmp_path)
    listing = list_source(images, ann)
    config = make_config(**FAST, proposals="none", layout="coco", shard_size=100)
    out = tmp_path / "out"
    out.mkdir()
    process_shard(0, listing.refs, config, str(out))
    rows = {r["image_id"]: r for r in pq.read_table(out / "shard-000000.parquet").to_pylist()}
    for image_id, want in expect.items():
        row = rows[image_id]
        assert row["status"] == want["status"], (want["what"], row)
        assert want["note"] in (row["note"] or ""), (want["what"], row["note"])
    samples = {s["json"]["source"]["image_id"]: s["json"] for s in open_dataset([str(out / "shard-000000.tar")])}
    assert samples[1]["ground_truth"]["annotation_ids"][-1] == 101  # the good instance is kept


def test_segments_gt_fails_an_image_left_without_masks(tmp_path: Path) -> None:
    images, ann, _ = hostile_coco(tmp_path)
    listing = list_source(images, ann)
    config = make_config(segments="gt", proposals="none", layout="coco", shard_size=100)
    out = tmp_path / "out"
    out.mkdir()
    process_shard(0, listing.refs, config, str(out))
    rows = {r["image_id"]: r for r in pq.read_table(out / "shard-000000.parquet").to_pylist()}
    assert rows[20]["reason"] == "no-gt-mask" and "annotation 300" in rows[20]["detail"]
    assert all(rows[i]["status"] == "ok" for i in range(1, 9))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(images=None), "'images' must be a list"),
    (lambda d: d["annotations"][0].pop("id"), r"annotations\[0\]: 'id' must be an integer"),
    (lambda d: d["images"][0].update(id="x"), r"images\[0\]: 'id' must be a non-negative integer"),
    (lambda d: d["images"][0].update(file_name="../../etc/passwd"), "leads outside the image folder"),
    (lambda d: d["images"][0].update(file_name="/etc/passwd"), "leads outside the image folder"),
    (lambda d: d["annotations"][0].update(image_id=999), "unknown image_id 999"),
    (lambda d: [i.update(file_name="nothing-" + i["file_name"]) for i in d["images"]], "none of the"),
])
def test_malformed_coco_is_one_line_naming_the_field(tmp_path: Path, mutate, message) -> None:
    import json

    images, ann, _ = hostile_coco(tmp_path)
    data = json.loads(ann.read_text())
    mutate(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(SourceError, match=message) as err:
        list_source(images, ann)
    assert "\n" not in str(err.value)


def test_a_symlink_out_of_the_image_folder_is_refused(tmp_path: Path) -> None:
    images, ann, _ = hostile_coco(tmp_path)
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes())
    (images / "img1.jpg").unlink()
    (images / "img1.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(SourceError, match="img1.jpg.*outside"):
        list_source(images, ann)


# --- folder listing ---------------------------------------------------------------------------------------------


def test_listing_follows_symlinked_folders_and_records_what_it_cannot_read(tmp_path: Path) -> None:
    src = make_imagenet(tmp_path / "src")
    shutil.copytree(src / "animal", tmp_path / "elsewhere")
    (src / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (src / "animal" / "loop").symlink_to(src / "animal", target_is_directory=True)
    (src / "object" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(src / "object" / "fifo.jpg")
    bad_name = os.fsdecode(b"object/caf\xe9.jpg")  # Latin-1 bytes: not UTF-8
    shutil.copy(src / "object" / "rocket_0.jpg", src / bad_name)
    listing = list_source(src)
    assert listing.layout == "imagenet" and listing.classes == ["animal", "linked", "object"]
    by_path = {r.source.path: r for r in listing.refs}
    assert "linked/chelsea_0.jpg" in by_path  # the symlinked folder is followed
    assert by_path["animal/loop"].listing_error[0] == "symlink-loop"
    assert "object/caf\\xe9.jpg" in by_path  # stored with an escape, read by its real name
    rows = build_one(listing.refs, make_config(**FAST, proposals="none", layout="imagenet",
                                               classes=listing.classes), tmp_path / "out")
    assert rows["object/dangling.jpg"]["reason"] == "missing"
    assert rows["object/fifo.jpg"]["reason"] == "not-a-regular-file"
    assert rows["animal/loop"]["reason"] == "symlink-loop"
    assert rows["object/caf\\xe9.jpg"]["status"] == "ok"


def test_unlistable_folder_is_a_row(tmp_path: Path, monkeypatch) -> None:
    src = make_imagenet(tmp_path / "src")
    real = os.scandir

    def scandir(path):
        if str(path).endswith("object"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = list_source(src, layout="imagenet")
    assert [r.listing_error for r in listing.refs if r.listing_error] == [
        ("unreadable", "folder cannot be listed: Permission denied")]


def test_http_entries_in_a_list_are_rows(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    lst = tmp_path / "list.txt"
    lst.write_text("a.jpg\nhttp://example.com/b.jpg\n")
    rows = build_one(list_source(lst).refs, make_config(**FAST, proposals="none", layout="list"), tmp_path / "out")
    assert rows["example.com/b.jpg"]["reason"] == "unsupported" and rows["a.jpg"]["status"] == "ok"


# --- order ----------------------------------------------------------------------------------------------------


def test_permuted_order_mixes_classes_and_is_stable(tmp_path: Path) -> None:
    refs = [ImageRef(f"c{c:03d}_{i}", "", Source(path=f"c{c:03d}/{i}.jpg", class_index=c))
            for c in range(100) for i in range(20)]
    sorted_plan = plan_shards(order_refs(refs, {"method": "sorted"}), 100, "shard")
    mixed = plan_shards(order_refs(refs, {"method": "permuted", "seed": 0}), 100, "shard")
    assert max(len({r.source.class_index for r in s.refs}) for s in sorted_plan) == 5
    assert min(len({r.source.class_index for r in s.refs}) for s in mixed) > 50  # i.i.d.: 100(1-0.99^100) = 63
    assert order_refs(refs[::-1], {"method": "permuted", "seed": 0}) == order_refs(refs, {"method": "permuted",
                                                                                         "seed": 0})
    assert order_refs(refs, {"method": "permuted", "seed": 1}) != order_refs(refs, {"method": "permuted", "seed": 0})
    fewer = [r for r in refs if r.key != "c050_3"]  # removing one input keeps everyone else's relative order
    assert order_refs(fewer, {"method": "permuted", "seed": 0}) == [
        r for r in order_refs(refs, {"method": "permuted", "seed": 0}) if r.key != "c050_3"]


# --- determinism with failures ----------------------------------------------------------------------------------

KINDS = {
    "ok": lambda: jpeg_bytes(40), "empty": lambda: b"", "notes": lambda: b"not an image",
    "truncated": lambda: jpeg_bytes(40)[:300], "lying": lambda: lying_jpeg(9000, 9000), "blp": corrupt_blp,
}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=6))
def test_two_builds_of_a_source_with_failures_are_byte_identical(tmp_path_factory, kinds) -> None:
    base = tmp_path_factory.mktemp("det")
    src = base / "src"
    src.mkdir()
    for n, kind in enumerate(kinds):
        (src / f"{n}_{kind}.jpg").write_bytes(KINDS[kind]())
    copy = base / "elsewhere" / "deeper" / "src"
    shutil.copytree(src, copy)  # same bytes and mtimes, another absolute path
    for root in (src, copy):
        os.mkfifo(root / "pipe.jpg")
    outs = []
    for root in (src, copy):
        listing = list_source(root)
        out = root.parent / "out"
        out.mkdir()
        process_shard(0, listing.refs, CONFIG, str(out))
        outs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outs[0] == outs[1]


def test_resume_check_keeps_permanent_failures_and_retries_transient_ones(tmp_path: Path) -> None:
    from regionshards.builder.plan import existing_shard
    from regionshards.shards import config_hash

    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "notes.jpg").write_bytes(b"notes")
    with open(tmp_path / "huge.jpg", "wb") as f:
        f.truncate(2**30)
    os.mkfifo(tmp_path / "pipe.jpg")
    names = ["ok.jpg", "notes.jpg", "huge.jpg", "pipe.jpg"]
    refs = tuple(ref(tmp_path / n, n) for n in names)
    out = tmp_path / "out"
    build_one(refs, CONFIG, out)
    shard = plan_shards(refs, 100, "shard")[0]
    digest = config_hash(CONFIG)
    assert existing_shard(out, shard, digest).why == "verified"  # permanent failures are not retried
    os.utime(tmp_path / "ok.jpg", ns=(5, 5))
    assert existing_shard(out, shard, digest).why == "verified"  # same content
    (tmp_path / "notes.jpg").write_bytes(jpeg_bytes())
    assert existing_shard(out, shard, digest).why == f"notes.jpg changed size (5 -> {len(jpeg_bytes())} bytes)"
    build_one(refs, CONFIG, out)
    os.utime(tmp_path / "huge.jpg", ns=(5, 5))
    assert existing_shard(out, shard, digest).why == "huge.jpg was modified"
    build_one(refs, CONFIG, out)
    with_missing = (*refs, ref(tmp_path / "gone.jpg", "gone.jpg"))
    build_one(with_missing, CONFIG, out)
    assert existing_shard(out, plan_shards(with_missing, 100, "shard")[0], digest).why == (
        "gone.jpg failed for a transient reason (missing)")


def test_list_and_annotation_files_must_be_regular(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "list.txt")
    with pytest.raises(SourceError, match="not a regular file"):
        list_source(tmp_path / "list.txt")
    (tmp_path / "images").mkdir()
    with pytest.raises(SourceError, match="annotations /dev/zero is not a regular file"):
        list_source(tmp_path / "images", Path("/dev/zero"))


def test_damaged_parquet_list_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "list.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    with pytest.raises(SourceError, match="list.parquet: not a readable Parquet file list"):
        list_source(tmp_path / "list.parquet")
