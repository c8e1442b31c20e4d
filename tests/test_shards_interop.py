"""The shards read by tools that know nothing of regionshards: tar, webdataset, Ray Data, pycocotools."""

from __future__ import annotations

import gc
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from regionshards.shards import label_map, open_dataset


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

    urls = sorted(str(p) for p in tiny_dataset.glob("*.tar"))
    rows = ray.data.read_webdataset(urls, decoder=None).take_all()
    theirs = {r["__key__"]: r for r in rows}
    ours = _ours(tiny_dataset)
    assert sorted(theirs) == sorted(ours)
    for key, sample in ours.items():
        assert bytes(theirs[key]["jpg"]) == sample["jpg"] and bytes(theirs[key]["json"]) == sample["json"]
