"""The shards read by tools that know nothing of regionshards (tar, webdataset's WebDataset and WebLoader,
Ray Data, Hugging Face datasets, pycocotools) and by ``regionshards.builder.ray_dataset``; the README shows each
call."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from regionshards.images import decode_image
from regionshards.shards import label_map, open_dataset

SRC = Path(__file__).resolve().parents[1] / "src"


def _ours(folder: Path) -> dict[str, dict]:
    return {s["__key__"]: s for s in open_dataset(folder, parse_json=False)}


def test_tar_lists_the_sorted_members_with_fixed_owner_and_time(tiny_dataset: Path) -> None:
    shard = tiny_dataset / "shard-000000.tar"
    names = subprocess.run(["tar", "tf", str(shard)], check=True, capture_output=True, text=True).stdout.split()
    assert names == sorted(names) == [f"{k}.{f}" for k in ("animal_chelsea", "object_coffee", "object_coins")
                                      for f in ("jpg", "json")]
    verbose = subprocess.run(["tar", "tvf", str(shard)], check=True, capture_output=True, text=True,
                             env={**os.environ, "TZ": "UTC"}).stdout.splitlines()
    assert all(line.startswith("-rw-r--r-- root/root") and "1970-01-01 00:00" in line for line in verbose)


def test_webdataset_reads_the_shards_without_project_code(tiny_dataset: Path) -> None:
    import webdataset as wds

    urls = sorted(str(p) for p in tiny_dataset.glob("*.tar"))
    # webdataset 1.0 never closes the shard files it opens; only that ResourceWarning is silenced, and the
    # files are collected here so the warning cannot surface in a later test.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed file", ResourceWarning)
        theirs = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}
        decoded = next(iter(wds.WebDataset(urls[:1], shardshuffle=False).decode()))
        gc.collect()
    ours = _ours(tiny_dataset)
    assert list(theirs) == list(ours)
    for key, sample in ours.items():
        assert theirs[key]["jpg"] == sample["jpg"] and theirs[key]["json"] == sample["json"]
    assert decoded["json"]["key"] == decoded["__key__"]


# pycocotools 2.0.x calls np.array(..., copy=False) internally; numpy 2 warns about it. Only that warning is
# tolerated, and only here, where plain pycocotools.mask.decode is the point of the test.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_masks_decode_with_plain_pycocotools(tiny_dataset: Path) -> None:
    for sample in open_dataset(tiny_dataset):
        rles = sample["json"]["segments"]["rles"]
        masks = mask_utils.decode(rles)  # (H, W, K) uint8
        labels = label_map(sample)
        assert masks.shape == (*labels.shape, len(rles))
        assert (masks.sum(axis=2) == 1).all()  # a partition: every pixel in exactly one segment
        np.testing.assert_array_equal(np.argmax(masks, axis=2), labels)
        assert mask_utils.area(rles).tolist() == sample["json"]["segments"]["areas"]
        assert mask_utils.toBbox(rles).astype(int).tolist() == sample["json"]["segments"]["bboxes"]


# Ray Data warns about its own deprecated settings when it builds its context; nothing of ours is involved.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_ray_data_reads_the_shards_without_project_code(tiny_dataset: Path, ray_local) -> None:
    import ray.data

    # The folder also holds .parquet indexes and manifest.json: only the tars are WebDataset shards.
    rows = ray.data.read_webdataset(str(tiny_dataset), file_extensions=["tar"], decoder=None).take_all()
    theirs = {r["__key__"]: r for r in rows}
    ours = _ours(tiny_dataset)
    assert sorted(theirs) == sorted(ours)
    for key, sample in ours.items():
        assert bytes(theirs[key]["jpg"]) == sample["jpg"] and bytes(theirs[key]["json"]) == sample["json"]


def _expected_rgb(sample: dict) -> np.ndarray:
    return decode_image(sample[sample["json"]["image"]["field"]]).rgb


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_ray_dataset_gives_rgb_images_keys_labels_and_json(tiny_dataset: Path, ray_local) -> None:
    from regionshards.builder import ray_dataset

    ours = list(open_dataset(tiny_dataset))
    rows = ray_dataset(tiny_dataset).take_all()
    assert [r["__key__"] for r in rows] == [s["__key__"] for s in ours]  # one task per shard, order kept
    modes = set()
    for row, sample in zip(rows, ours, strict=True):
        meta = sample["json"]
        modes.add(meta["image"]["mode"])
        assert row["image"].dtype == np.uint8 and row["image"].shape == (meta["image"]["height"],
                                                                         meta["image"]["width"], 3)
        np.testing.assert_array_equal(row["image"], _expected_rgb(sample))
        assert row["label"] == meta["source"]["class_index"] and row["class_name"] == meta["source"]["class_name"]
        assert row["json"] == meta and row["__url__"] == sample["__url__"]
    assert modes == {"L", "RGB"}  # grey and colour in one tensor column: Ray's default decoder cannot do this
    raw = ray_dataset(tiny_dataset, decode=False, verify_sha256=True).take(1)[0]
    assert "image" not in raw and bytes(raw["image_bytes"]) == ours[0]["jpg"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_ray_dataset_reads_coco_builds_and_refuses_damaged_shards(tmp_path: Path, ray_local) -> None:
    from fixtures.tiny_build import build_dataset, coco_inputs
    from regionshards.builder import ray_dataset
    from regionshards.shards import ShardError

    out = tmp_path / "coco"
    build_dataset(out, coco_inputs(("chelsea", "coins")), shard_size=1)
    rows = ray_dataset(out).take_all()
    assert [r["json"]["source"]["image_id"] for r in rows] == [3, 5]
    assert all(r["label"] is None and r["json"]["ground_truth"]["category_ids"] for r in rows)
    shard = sorted(out.glob("*.tar"))[1]
    data = bytearray(shard.read_bytes())
    data[600] ^= 1  # one bit of the first member's data: only the checksum can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256") as info:
        ray_dataset(out, verify_sha256=True).take_all()
    assert isinstance(info.value, ShardError) or "ShardError" in str(info.value)
    with pytest.raises(FileNotFoundError, match="manifest"):
        ray_dataset(tmp_path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_ray_dataset_mixes_formats_and_modes_in_one_shard(tmp_path: Path, ray_local) -> None:
    import io

    from PIL import Image

    from fixtures.tiny_build import TinyInput, build_dataset, jpeg_bytes, small_photo
    from regionshards.builder import ray_dataset
    from regionshards.shards import Source

    def png(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    inputs = [TinyInput(Source("a/colour.jpg", None, 0, "a"), jpeg_bytes(small_photo("chelsea"))),
              TinyInput(Source("a/grey.png", None, 0, "a"), png(small_photo("coins"))),
              TinyInput(Source("a/alpha.png", None, 0, "a"), png(small_photo("coffee").convert("RGBA")))]
    out = tmp_path / "mixed"
    build_dataset(out, inputs, shard_size=3)
    ours = {s["__key__"]: s for s in open_dataset(out)}
    rows = ray_dataset(out).take_all()
    assert {r["json"]["image"]["mode"] for r in rows} == {"RGB", "L", "RGBA"}
    for row in rows:
        np.testing.assert_array_equal(row["image"], _expected_rgb(ours[row["__key__"]]))
    raw = ray_dataset(out, decode=False).take_all()
    assert {bytes(r["image_bytes"])[:4] for r in raw} == {b"\xff\xd8\xff\xe0", b"\x89PNG"}


def test_importing_the_shards_package_does_not_import_ray() -> None:
    code = "import sys, regionshards.shards; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.stdout.strip() == "False"


def test_webdataset_webloader_decodes_rgb_for_grey_and_colour(tiny_dataset: Path) -> None:
    import webdataset as wds

    pytest.importorskip("torch", reason="WebLoader is a torch DataLoader (the train extra)")

    urls = sorted(str(p) for p in tiny_dataset.glob("*.tar"))
    expected = {s["__key__"]: (_expected_rgb(s), s["json"]) for s in open_dataset(tiny_dataset)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed file", ResourceWarning)
        dataset = wds.WebDataset(urls, shardshuffle=False).decode("torchrgb8").to_tuple("__key__", "jpg", "json")
        got = list(wds.WebLoader(dataset, batch_size=None, num_workers=2))
        gc.collect()
    assert sorted(k for k, _, _ in got) == sorted(expected)
    for key, chw, meta in got:  # (3, H, W) uint8 tensors; PIL's RGB conversion replicates grey, like ours
        np.testing.assert_array_equal(chw.permute(1, 2, 0).numpy(), expected[key][0])
        assert meta == expected[key][1]


def test_hugging_face_datasets_loads_the_shards(tiny_dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets", reason="datasets is in the test extra")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    urls = sorted(str(p) for p in tiny_dataset.glob("*.tar"))
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    ours = {s["__key__"]: s for s in open_dataset(tiny_dataset)}
    assert sorted(ds["__key__"]) == sorted(ours)
    for row in ds:
        sample = ours[row["__key__"]]
        assert row["jpg"].mode == sample["json"]["image"]["mode"]
        np.testing.assert_array_equal(np.asarray(row["jpg"].convert("RGB")), _expected_rgb(sample))
        assert row["json"] == sample["json"]
