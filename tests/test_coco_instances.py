"""Real COCO: every usable instance keeps its box in the sample's ``instances``; masks where a segmentation is
valid; unusable annotations are named in the index note; readers refuse inconsistent instances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from build_inputs import FAST, photo
from fixtures.tampering import reseal
from regionshards.builder import list_source, make_config, run_build
from regionshards.builder.worker import process_shard
from regionshards.proposals.groundtruth import coco_box, image_instances
from regionshards.shards import ShardError, iter_shard, open_dataset, verify


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_source(root: Path) -> tuple[Path, Path, int, int]:
    """One image holding every kind of instance a real COCO export has, usable or not."""
    images = root / "images"
    images.mkdir(parents=True)
    img = photo("chelsea", 64).convert("RGB")
    w, h = img.size
    img.save(images / "a.jpg", quality=90)
    rle_mask = np.zeros((h, w), bool)
    rle_mask[30:h - 2, 40:60] = True
    crowd = np.zeros((h, w), bool)
    crowd[0:6, 50:64] = True
    anns = [
        {"id": 10, "bbox": [2.5, 3.2, 10, 8], "category_id": 1, "iscrowd": 0},  # detection only
        {"id": 11, "segmentation": [[4, 14, 30, 14, 30, 30, 4, 30]], "bbox": [4, 14, 26, 16], "category_id": 2,
         "iscrowd": 0},  # polygon
        {"id": 12, "segmentation": _rle(rle_mask), "bbox": [40, 30, 20, h - 32], "category_id": 3,
         "iscrowd": 0},  # RLE
        {"id": 13, "segmentation": _rle(crowd), "bbox": [50, 0, 14, 6], "category_id": 1, "iscrowd": 1},  # crowd
        {"id": 14, "segmentation": [[1, 1, 5, 1, 5, 5]], "bbox": [1, float("nan"), 4, 4], "category_id": 1,
         "iscrowd": 0},  # NaN box: dropped
        {"id": 15, "bbox": [w + 5, 0, 10, 10], "category_id": 1, "iscrowd": 0},  # outside: dropped
        {"id": 16, "segmentation": [[33, 2, 45, 2, 45, 10, 33, 10]], "category_id": 2, "iscrowd": 0},  # no bbox
        {"id": 17, "bbox": [-5, -5, 10, 10], "segmentation": [], "category_id": 1, "iscrowd": 0},  # clipped
        {"id": 18, "bbox": [1, 1, 0, 5], "category_id": 1, "iscrowd": 0},  # empty box: dropped
    ]
    for a in anns:
        a["image_id"] = 1
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}], "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    ann = root / "instances.json"
    ann.write_text(json.dumps(data, allow_nan=True))
    return images, ann, w, h


def _config():
    return make_config(**FAST, proposals="none", layout="coco", shard_size=10)


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_local) -> tuple[Path, int, int]:
    root = tmp_path_factory.mktemp("coco")
    images, ann, w, h = coco_source(root)
    listing = list_source(images, ann)
    config = make_config(**FAST, proposals="none", layout="coco", shard_size=10, classes=listing.classes)
    run_build(listing, root / "out", config, progress=False)
    return root / "out", w, h


def test_every_usable_instance_keeps_its_box(built) -> None:
    out, w, h = built
    (sample,) = list(open_dataset(out))
    inst = sample["json"]["instances"]
    assert inst["annotation_ids"] == [10, 11, 12, 13, 16, 17]
    assert inst["category_ids"] == [1, 2, 3, 1, 2, 1]
    assert inst["iscrowd"] == [0, 0, 0, 1, 0, 0]
    assert inst["has_mask"] == [0, 1, 1, 0, 1, 0]  # no segmentation, crowd (not painted): no mask
    # without a bbox, the box is pycocotools' own box of the rasterised polygon (the reference)
    rle = mask_utils.frPyObjects([[33, 2, 45, 2, 45, 10, 33, 10]], h, w)
    mask_box = [int(v) for v in mask_utils.toBbox(mask_utils.merge(rle)).tolist()]
    assert mask_box == [33, 2, 12, 8]
    assert inst["bboxes"] == [[2, 3, 11, 9], [4, 14, 26, 16], [40, 30, 20, h - 32], [50, 0, 14, 6], mask_box,
                              [0, 0, 5, 5]]
    gt = sample["json"]["ground_truth"]
    assert sorted(i for i in gt["annotation_ids"] if i != -1) == [11, 12, 16]
    row = pq.read_table(out / "shard-000000.parquet").to_pylist()[0]
    note = row["note"]
    assert "annotation 10: missing or empty segmentation (box kept, no mask)" in note
    assert "annotation 14: bbox is not 4 finite numbers" in note
    assert "annotation 15: bbox" in note and "outside" in note
    assert "annotation 17: missing or empty segmentation (box kept, no mask)" in note
    assert "annotation 18: bbox size 0x5 is not positive" in note
    assert "annotation 11" not in note and "annotation 12" not in note and "annotation 13" not in note
    report = verify(out)
    assert report.ok, [str(f) for f in report.findings]


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    images, ann, _, _ = coco_source(tmp_path / "src")
    listing = list_source(images, ann)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        process_shard(0, listing.refs, _config(), str(out))
        outs.append(out)
    for member in ("shard-000000.tar", "shard-000000.parquet"):
        assert (outs[0] / member).read_bytes() == (outs[1] / member).read_bytes()
    (sample,) = list(iter_shard(str(outs[0] / "shard-000000.tar")))
    assert len(sample["json"]["instances"]["annotation_ids"]) == 6


def _tampered(built, tmp_path: Path, old: bytes, new: bytes) -> Path:
    """A copy of the built dataset whose sample JSON has ``old`` replaced by ``new`` (same length: offsets and
    headers stay valid), resealed as a forger would."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(built[0], out)
    tar = out / "shard-000000.tar"
    raw = tar.read_bytes()
    assert len(old) == len(new) and raw.count(old) == 1, old
    tar.write_bytes(raw.replace(old, new))
    reseal(out)
    return out


@pytest.mark.parametrize(("old", "new", "code"), [
    (b'"bboxes":[[2,3,11,9]', b'"bboxes":[[2,3,99,9]', "box-outside-image"),
    (b'"iscrowd":[0,0,', b'"iscrowd":[0  ,', "length-mismatch"),
    (b'"has_mask":[0,1,', b'"has_mask":[1,1,', "instance-mismatch"),
    (b'"has_mask":[0,1,', b'"has_mask":[0,2,', "schema"),
])
def test_readers_refuse_inconsistent_instances(built, tmp_path: Path, old, new, code) -> None:
    out = _tampered(built, tmp_path, old, new)
    report = verify(out)
    found = [f for f in report.findings if f.code == code]
    assert found and found[0].shard == "shard-000000.tar" and found[0].member == "000000000001.json", \
        [str(f) for f in report.findings]
    with pytest.raises(ShardError) as err:
        list(open_dataset(out))
    assert err.value.code == code and "shard-000000.tar" in str(err.value)


def test_instances_without_ground_truth_are_refused() -> None:
    from regionshards.shards.shape import ShapeError, check_shape

    meta = {"format_version": 1, "key": "k", "config_hash": "0" * 64,
            "source": {"path": None, "image_id": 1, "class_index": None, "class_name": None},
            "image": {"field": "jpg", "format": "JPEG", "mode": "RGB", "width": 4, "height": 4, "bytes": 9,
                      "exif_orientation": "ignored"},
            "segments": None, "proposals": None, "ground_truth": None,
            "instances": {"annotation_ids": [], "category_ids": [], "bboxes": [], "iscrowd": [], "has_mask": []}}
    with pytest.raises(ShapeError, match="without ground_truth"):
        check_shape(meta)


@pytest.mark.parametrize(("bbox", "want"), [
    ([2.5, 3.2, 10, 8], [2, 3, 11, 9]),
    ([0, 0, 64, 43], [0, 0, 64, 43]),
    ([-1e308, -1e308, 1e308, 1e308], None),  # ends at 0: nothing inside
    ([1e308, 0, 1e308, 5], None),
    ([-10, 40, 1e308, 1e308], [0, 40, 64, 3]),
    ([63.5, 42.5, 0.25, 0.25], [63, 42, 1, 1]),
    ([64, 0, 3, 3], None),
    ([1, 1, -2, 3], None),
    ([1, 1, 2], None),
    ([1, True, 2, 3], None),
    ("1,1,2,3", None),
])
def test_coco_box_rounds_outwards_and_clips(bbox, want) -> None:
    box, problem = coco_box(bbox, 43, 64)
    assert box == want and (problem is None) == (want is not None)


def test_an_annotation_without_bbox_or_mask_is_dropped() -> None:
    instances, notes = image_instances([{"id": 1, "category_id": 1}], 10, 10)
    assert instances == [] and notes == ["annotation 1: no bbox and missing or empty segmentation"]


@pytest.mark.parametrize("compressed", [True, False])
def test_a_box_from_an_rle_without_bbox_is_pycocotools_box(compressed) -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[3:9, 5:17] = 1
    mask[12, 2] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    want = [int(v) for v in mask_utils.toBbox(rle).tolist()]
    if compressed:
        segm = {"size": [20, 30], "counts": rle["counts"].decode("ascii")}
    else:  # column-major runs, as COCO's uncompressed crowd RLEs
        flat = mask.ravel(order="F")
        change = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
        segm = {"size": [20, 30], "counts": ([0] if flat[0] else []) + runs}
    instances, notes = image_instances([{"id": 1, "category_id": 1, "segmentation": segm, "iscrowd": 1}], 20, 30)
    assert notes == [] and instances[0].bbox == want == [2, 3, 15, 10] and instances[0].segmentation_ok


def test_both_schema_validators_agree_on_instances(built) -> None:
    import copy

    import jsonschema

    from regionshards.shards.sample import sample_schema, schema_errors

    (sample,) = list(open_dataset(built[0]))
    meta = sample["json"]
    reference = jsonschema.Draft7Validator(sample_schema())
    bad = []
    for change in (lambda m: m.update(ground_truth=None), lambda m: m["instances"].pop("iscrowd"),
                   lambda m: m["instances"]["has_mask"].__setitem__(0, True),
                   lambda m: m["instances"]["iscrowd"].__setitem__(0, 2),
                   lambda m: m["instances"]["bboxes"].__setitem__(0, [0, 0, 0, 1]),
                   lambda m: m["instances"].update(extra=[])):
        m = copy.deepcopy(meta)
        change(m)
        bad.append(m)
    assert reference.is_valid(meta) and schema_errors(meta) == []
    for m in bad:
        assert not reference.is_valid(m) and schema_errors(m), m["instances"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=4, max_size=4),
       st.integers(1, 50), st.integers(1, 50))
def test_coco_box_is_inside_the_image_and_covers_the_clipped_box(bbox, h, w) -> None:
    box, problem = coco_box(bbox, h, w)
    if box is None:
        assert problem
        return
    x, y, bw, bh = bbox
    assert all(np.isfinite(bbox)) and bw > 0 and bh > 0
    assert 0 <= box[0] and 0 <= box[1] and box[2] >= 1 and box[3] >= 1
    assert box[0] + box[2] <= w and box[1] + box[3] <= h
    # the pixel box contains the COCO box clipped to the image
    assert box[0] <= max(x, 0) and min(x + bw, w) <= box[0] + box[2]
    assert box[1] <= max(y, 0) and min(y + bh, h) <= box[1] + box[3]
