"""The build: sources, the worker (no Ray), and `regionshards build` on a local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from build_inputs import FAST, FAST_ARGS, make_awkward, make_coco, make_imagenet
from regionshards.builder import ConfigMismatchError, list_source, make_config, run_build
from regionshards.builder.plan import existing_shard, plan_shards
from regionshards.builder.worker import process_shard
from regionshards.cli.main import main
from regionshards.shards import DuplicateKeyError, config_hash, open_dataset, verify


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "summary.json"}


# --- sources -------------------------------------------------------------------------------------------------


def test_imagenet_layout_is_detected_with_sorted_classes(tmp_path: Path) -> None:
    listing = list_source(make_imagenet(tmp_path / "src"))
    assert listing.layout == "imagenet" and listing.classes == ["animal", "object"]
    assert [r.key for r in listing.refs] == sorted(r.key for r in listing.refs)
    by_key = {r.key: r.source for r in listing.refs}
    assert by_key["animal_chelsea_0"].class_index == 0 and by_key["object_rocket_0"].class_name == "object"


def test_coco_layout_keys_are_image_ids_with_annotations(tmp_path: Path) -> None:
    images, ann = make_coco(tmp_path)
    listing = list_source(images, ann)
    assert listing.layout == "coco" and [len(r.key) for r in listing.refs] == [12, 12]
    assert all(r.annotations for r in listing.refs) and listing.categories


def test_flat_folder_and_file_lists(tmp_path: Path) -> None:
    src = make_imagenet(tmp_path / "src")
    (src / "stray.jpg").write_bytes(b"")  # a stray top-level file keeps the layout and is recorded
    listing = list_source(src)
    assert listing.layout == "imagenet" and listing.classes == ["animal", "object"]
    stray = next(r for r in listing.refs if r.source.path == "stray.jpg")
    assert stray.listing_error[0] == "stray-file" and stray.source.class_name is None
    (src / "more.jpg").write_bytes(b"")  # as many top-level files as classes: a plain folder
    assert list_source(src).layout == "folder"
    lst = tmp_path / "list.txt"
    lst.write_text("# two images and a missing one\nsrc/animal/chelsea_0.jpg\n\nsrc/object/gone.jpg\n")
    listing = list_source(lst)
    assert listing.layout == "list" and [r.source.path for r in listing.refs] == [
        "src/animal/chelsea_0.jpg", "src/object/gone.jpg"]


def test_duplicate_keys_are_refused_naming_both_sources(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.jpg").write_bytes(b"x")
    (tmp_path / "a_b.png").write_bytes(b"y")
    with pytest.raises(DuplicateKeyError, match="a/b.jpg.*a_b.png|a_b.png.*a/b.jpg"):
        list_source(tmp_path, layout="folder")


def test_config_gt_needs_coco() -> None:
    with pytest.raises(ValueError, match="COCO"):
        make_config(segments="gt", layout="folder")


# --- worker --------------------------------------------------------------------------------------------------


def test_worker_records_every_input_with_its_reason(tmp_path: Path) -> None:
    expected = make_awkward(tmp_path / "src")
    listing = list_source(tmp_path / "src")
    config = make_config(**FAST, shard_size=100, max_pixels=10_000_000, layout=listing.layout,
                         classes=listing.classes)
    out = tmp_path / "out"
    out.mkdir()
    result = process_shard(0, listing.refs, config, str(out))
    rows = {r["source_path"]: r for r in pq.read_table(out / "shard-000000.parquet").to_pylist()}
    assert set(rows) == set(expected)
    for rel, reason in expected.items():
        assert rows[rel]["status"] == ("ok" if reason is None else "failed"), rel
        assert rows[rel]["reason"] == reason, rel
    assert result.info.inputs == len(expected) == result.info.samples + result.info.failures
    samples = {s["json"]["source"]["path"]: s for s in open_dataset([str(out / "shard-000000.tar")])}
    assert "png" in samples["b/png_named_jpg.jpg"]  # extension from the sniffed format
    assert samples["a/cmyk.jpg"]["json"]["image"]["mode"] == "CMYK"
    assert samples["b/rotated.jpg"]["json"]["image"]["exif_orientation"] == "ignored"


def test_missing_file_in_a_list_is_recorded(tmp_path: Path) -> None:
    make_imagenet(tmp_path / "src")
    lst = tmp_path / "list.txt"
    lst.write_text("src/animal/chelsea_0.jpg\nsrc/object/gone.jpg\n")
    listing = list_source(lst)
    config = make_config(**FAST, shard_size=10, layout="list")
    (tmp_path / "out").mkdir()
    info = process_shard(0, listing.refs, config, tmp_path / "out").info
    assert info.failure_reasons == {"missing": 1} and info.samples == 1


def test_coco_gt_segments_and_size_check(tmp_path: Path) -> None:
    images, ann = make_coco(tmp_path)
    listing = list_source(images, ann)
    config = make_config(segments="gt", proposals="none", layout="coco", shard_size=10)
    (tmp_path / "out").mkdir()
    process_shard(0, listing.refs, config, tmp_path / "out")
    samples = list(open_dataset([str(tmp_path / "out" / "shard-000000.tar")]))
    for s in samples:
        meta = s["json"]
        assert meta["segments"]["method"] == "gt" and meta["ground_truth"] is not None
        assert sum(meta["segments"]["areas"]) == meta["image"]["width"] * meta["image"]["height"]


def test_existing_shard_is_trusted_only_when_it_verifies(tmp_path: Path) -> None:
    listing = list_source(make_imagenet(tmp_path / "src"))
    config = make_config(**FAST, shard_size=3, layout=listing.layout, classes=listing.classes)
    out = tmp_path / "out"
    out.mkdir()
    shard = plan_shards(listing.refs, 3, "shard")[0]
    assert existing_shard(out, shard, config_hash(config)).why == "not written"
    process_shard(0, shard.refs, config, str(out))
    check = existing_shard(out, shard, config_hash(config))
    assert check.why == "verified" and check.info is not None and check.info.samples == 3
    assert len(check.segments) == 3 and all(n > 0 for n in check.segments)
    assert existing_shard(out, shard, "0" * 64).why == "written with another config"
    tar = out / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[:2000])
    assert existing_shard(out, shard, config_hash(config)).info is None


# --- the command on a local Ray --------------------------------------------------------------------------------


def test_build_command_end_to_end_then_resume(tmp_path: Path, ray_local) -> None:
    make_awkward(tmp_path / "src")
    out = tmp_path / "out"
    args = ["build", str(tmp_path / "src"), str(out), "--shard-size", "4", "--no-progress", *FAST_ARGS,
            "--max-pixels", "10000000"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output  # some inputs failed on purpose
    assert "inputs 14 = ok 10 + failed 4" in result.output
    assert "empty: 1" in result.output and "too-many-pixels: 1" in result.output
    assert verify(out).ok, str(verify(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == summary["ok"] + summary["failed"] == 14
    assert set(summary["core_seconds"]) == {"read", "decode", "segments", "proposals", "write"}
    first = files(out)
    again = CliRunner().invoke(main, args)
    assert "4 reused after verification" in again.output
    assert files(out) == first
    (out / "shard-000002.tar").unlink()
    (out / ".shard-000002.tar.k1ll3d.tmp").write_bytes(b"half a shard from a killed worker")
    CliRunner().invoke(main, args)
    assert files(out) == first


def test_a_different_config_is_refused_naming_the_keys(tmp_path: Path, ray_local) -> None:
    listing = list_source(make_imagenet(tmp_path / "src"))
    config = make_config(**FAST, shard_size=2, layout=listing.layout, classes=listing.classes)
    run_build(listing, tmp_path / "out", config, progress=False)
    other = make_config(**dict(FAST, fh_scale=200), shard_size=2, layout=listing.layout, classes=listing.classes)
    with pytest.raises(ConfigMismatchError, match=r"segments\.params\.scale"):
        run_build(listing, tmp_path / "out", other, progress=False)
    summary = run_build(listing, tmp_path / "out", other, progress=False, overwrite=True)
    assert summary.shards_reused == 0 and verify(tmp_path / "out").ok


def test_proposals_command_computes_what_the_build_stores(tmp_path: Path) -> None:
    src = make_imagenet(tmp_path / "src")
    image = src / "object" / "coins_0.jpg"
    listing = list_source(src)
    config = make_config(**FAST, shard_size=100, layout=listing.layout, classes=listing.classes)
    (tmp_path / "out").mkdir()
    process_shard(0, listing.refs, config, str(tmp_path / "out"))
    stored = next(s["json"] for s in open_dataset([str(tmp_path / "out" / "shard-000000.tar")])
                  if s["json"]["source"]["path"] == "object/coins_0.jpg")
    lines = tmp_path / "p.jsonl"
    result = CliRunner().invoke(main, ["proposals", str(image), "--out", str(lines), *FAST_ARGS,
                                       "--filter", "ratio3size0308"])
    assert result.exit_code == 0, result.output
    shown = json.loads(lines.read_text())
    assert shown["segments"]["areas"] == stored["segments"]["areas"]
    assert shown["proposals"]["boxes"] == stored["proposals"]["boxes"]
    assert shown["filters"]["ratio3size0308"]["keep"] == stored["proposals"]["filters"]["ratio3size0308"]["keep"]


def test_first_build_says_it_compiles_the_kernels(tmp_path: Path, monkeypatch) -> None:
    import io

    import regionshards.proposals as proposals
    from regionshards.builder import runner

    assert not runner._kernels_cached(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "_fh_kernels.felzenszwalb-12.py311.nbi").write_bytes(b"")
    assert runner._kernels_cached(tmp_path)
    calls = []
    monkeypatch.setattr(proposals, "warm_up", lambda: calls.append("warm"))
    monkeypatch.setattr(runner, "_kernels_cached", lambda package: False)
    stream = io.StringIO()
    runner._warm_kernels(make_config(layout="folder"), stream)
    assert stream.getvalue().startswith("compiling kernels (first run only, ≈ ") and calls == ["warm"]
    monkeypatch.setattr(runner, "_kernels_cached", lambda package: True)
    stream = io.StringIO()
    runner._warm_kernels(make_config(layout="folder"), stream)
    assert stream.getvalue() == "" and calls == ["warm", "warm"]
