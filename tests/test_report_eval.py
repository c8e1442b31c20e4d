"""`regionshards eval`: a tiny case computed by hand, and a real build checked against pycocotools' IoU."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

from fixtures.tiny_build import SAMPLE, build_dataset, coco_inputs
from regionshards.cli.main import main
from regionshards.report.evaluate import Annotations, evaluate, format_eval, score_sample
from regionshards.shards import (
    FilterKeep,
    InputRecord,
    ProposalsData,
    SegmentsData,
    Source,
    config_hash,
    open_dataset,
    write_manifest,
    write_shard,
)

HAND_CONFIG = {"filters": ["ratio3size0308", "ratio3"], "hand": True}


def _png(h: int = 20, w: int = 20) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _props(boxes: list[list[int]], filters: dict[str, tuple[str, list[int]]]) -> ProposalsData:
    b = np.asarray(boxes, np.int64)
    keeps = {name: FilterKeep(used, np.asarray(keep, np.int64)) for name, (used, keep) in filters.items()}
    return ProposalsData("selective_search", {"variant": "soco"}, b, np.full(len(b), -1), np.full(len(b), -1), keeps)


def hand_dataset(tmp: Path) -> tuple[Path, Path]:
    """Three 20x20 samples and a COCO file; every expected number below is worked out in the test's comments."""
    halves = np.where(np.arange(20)[None, :] < 10, 0, 1).repeat(20, axis=0)  # id 0: x < 10, id 1: x >= 10
    image = _png()
    records = [
        InputRecord("sub_a", Source("sub/a.png"), image=image, image_format="PNG", image_mode="RGB", width=20,
                    height=20, segments=SegmentsData.from_labels(halves, "fh", {}),
                    proposals=_props([[0, 0, 10, 20], [0, 0, 20, 20], [5, 5, 5, 5], [10, 0, 10, 18]],
                                     {"ratio3": ("ratio3", [1, 2]), "ratio3size0308": ("whole-image", [])})),
        InputRecord("000000000008", Source(None, 8), image=image, image_format="PNG", image_mode="RGB", width=20,
                    height=20, segments=SegmentsData.from_labels(np.zeros((20, 20), np.int32), "fh", {}),
                    proposals=_props([[0, 0, 20, 20]], {"ratio3": ("ratio3", [0]),
                                                        "ratio3size0308": ("ratio3size0308", [0])})),
        InputRecord("other_b", Source("other/b.png"), image=image, image_format="PNG", image_mode="RGB", width=20,
                    height=20, segments=SegmentsData.from_labels(halves, "fh", {}), proposals=_props([[0, 0, 4, 4]], {
                        "ratio3": ("whole-image", []), "ratio3size0308": ("whole-image", [])})),
    ]
    out = tmp / "hand"
    out.mkdir()
    write_manifest(out, HAND_CONFIG, [write_shard(out, 0, records, config_hash=config_hash(HAND_CONFIG))])
    square = np.zeros((20, 20), bool)
    square[:10, :10] = True  # A: top-left 10x10
    right = np.zeros((20, 20), bool)
    right[:, 10:] = True  # B: the right half
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 20, "height": 20},
                   {"id": 8, "file_name": "c.png", "width": 20, "height": 20},
                   {"id": 9, "file_name": "missing.png", "width": 20, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0,
             "segmentation": _rle(square)},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [10, 0, 10, 20], "iscrowd": 0,
             "segmentation": _rle(right)},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 10, 10, 10], "iscrowd": 1,
             "segmentation": _rle(~right)},
            {"id": 4, "image_id": 8, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 0,
             "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]},
            {"id": 5, "image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0,
             "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    ann = tmp / "instances.json"
    ann.write_text(json.dumps(coco))
    return out, ann


def test_hand_computed_case(tmp_path: Path) -> None:
    ds, ann = hand_dataset(tmp_path)
    result = evaluate([ds], ann)
    assert result["datasets"] == [{"dataset": str(ds), "images_matched": 2, "samples_unmatched": 1,
                                   "annotated_images_missing": 1, "missing_examples": ["missing.png"],
                                   "crowd_excluded": 1}]
    rows = {r["filter"]: r for r in result["proposals"]}
    assert [r["filter"] for r in result["proposals"]] == ["all", "ratio3size0308", "ratio3"]
    # Ground truth: A [0,0,10,10], B [10,0,10,20] (image 7, crowd C left out), D [0,0,20,20] (image 8).
    # all: A best 0.5 ([0,0,10,20]: 100/200), B best 0.9 ([10,0,10,18]: 180/200), D 1.0; 4 + 1 proposals.
    assert rows["all"] == {"dataset": str(ds), "method": "soco", "filter": "all", "images": 2, "gt_boxes": 3,
                           "proposals_per_image": 2.5, "recall@0.5": 1.0, "recall@0.7": pytest.approx(2 / 3),
                           "abo": pytest.approx(2.4 / 3)}
    # ratio3 keeps [0,0,20,20] and [5,5,5,5] in image 7: A 0.25 (100/400 and 25/100), B 0.5 (200/400); D 1.0.
    assert (rows["ratio3"]["recall@0.5"], rows["ratio3"]["recall@0.7"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert rows["ratio3"]["abo"] == pytest.approx(1.75 / 3) and rows["ratio3"]["proposals_per_image"] == 1.5
    # ratio3size0308 fell back to the whole image in image 7: one box [0,0,20,20], the same IoUs as above.
    assert rows["ratio3size0308"]["abo"] == pytest.approx(1.75 / 3)
    assert rows["ratio3size0308"]["proposals_per_image"] == 1.0
    # Masks: A over the left half 100/200 = 0.5, B is the right half 1.0, D the single segment 1.0.
    (seg,) = result["segments"]
    best = seg["best_iou"]
    assert (seg["method"], seg["images"], seg["gt_masks"], seg["segments_per_image"]) == ("fh", 2, 3, 1.5)
    assert best["mean"] == pytest.approx(2.5 / 3) and best["fraction>=0.5"] == 1.0
    assert best["min"] == 0.5 and best["max"] == 1.0 and best["median"] == pytest.approx(1.0, rel=0.005)
    assert best["histogram"]["counts"] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    text = format_eval(result)
    assert "1 samples without annotations, 1 annotated images not in the dataset (e.g. missing.png)" in text
    assert "soco         ratio3size0308        2      3        1.0   0.667   0.333   0.583" in text


def _reference_rle(ann: dict, h: int, w: int) -> dict:
    segm = ann["segmentation"]
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    return mask_utils.frPyObjects(segm, h, w) if isinstance(segm["counts"], list) else segm


@pytest.fixture(scope="module")
def coco_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coco") / "ds"
    build_dataset(out, coco_inputs(("chelsea", "coins", "coffee")), shard_size=2)
    return out


def test_ious_equal_pycocotools_on_a_real_build(coco_build: Path) -> None:
    ann = Annotations.load(SAMPLE / "coco" / "instances.json")
    pooled: dict[str, list[np.ndarray]] = {}
    masks = []
    for sample in open_dataset(coco_build):
        meta = sample["json"]
        h, w = meta["image"]["height"], meta["image"]["width"]
        anns = ann.by_image[ann.match(meta)]
        objects = [a for a in anns if not a.get("iscrowd")]
        scores = score_sample(meta, anns, ["ratio3", "ratio3size0308"])
        gt_rles = [_reference_rle(a, h, w) for a in objects]
        ref = mask_utils.iou(meta["segments"]["rles"], gt_rles, [0] * len(gt_rles)).max(axis=0)
        np.testing.assert_array_equal(scores.mask_best, ref)
        masks.append(ref)
        boxes = np.asarray(meta["proposals"]["boxes"], np.float64)
        gt_boxes = [a["bbox"] for a in objects]
        for name, sel in [("all", boxes), *((n, boxes[f["keep"]]) for n, f in meta["proposals"]["filters"].items())]:
            ref = mask_utils.iou(sel.tolist(), gt_boxes, [0] * len(gt_boxes)).max(axis=0)
            np.testing.assert_array_equal(scores.boxes[name][1], ref)
            pooled.setdefault(name, []).append(ref)
    result = evaluate([coco_build], SAMPLE / "coco" / "instances.json")
    for row in result["proposals"]:
        best = np.concatenate(pooled[row["filter"]])
        assert row["recall@0.5"] == np.mean(best >= 0.5) and row["recall@0.7"] == np.mean(best >= 0.7)
        assert row["abo"] == pytest.approx(best.mean(), rel=1e-12)
    all_masks = np.concatenate(masks)
    (seg,) = result["segments"]
    assert seg["gt_masks"] == all_masks.size == 6  # cat, 3 coins (the crowd region excluded), cup, spoon
    assert seg["best_iou"]["mean"] == pytest.approx(all_masks.mean(), rel=1e-12)
    assert result["datasets"][0]["crowd_excluded"] == 1 and result["datasets"][0]["annotated_images_missing"] == 3


def test_errors_name_the_input(tmp_path: Path) -> None:
    ds, ann = hand_dataset(tmp_path)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"id": 1, "file_name": "zz.png", "width": 20, "height": 20}],
                                 "annotations": []}))
    with pytest.raises(ValueError, match=f"{other}: none of its 1 images matches a sample of {ds}"):
        evaluate([ds], other)
    with pytest.raises(FileNotFoundError, match="annotations file .*nope.json does not exist"):
        evaluate([ds], tmp_path / "nope.json")
    other.write_text("{not json")
    with pytest.raises(ValueError, match="not a COCO instances file"):
        evaluate([ds], other)
    data = json.loads(ann.read_text())
    data["images"][0]["width"] = 21
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sample 'sub_a' is 20x20 but .* declares a.png as 21x20"):
        evaluate([ds], other)
    data = json.loads(ann.read_text())
    data["images"].append({"id": 10, "file_name": "elsewhere/a.png", "width": 20, "height": 20})
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'sub_a' .* matches several images by name"):
        evaluate([ds], other)


def test_eval_command_table_json_and_several_datasets(tmp_path: Path) -> None:
    ds, ann = hand_dataset(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(ds), "--annotations", str(ann)])
    assert result.exit_code == 0, result.output
    assert "R@0.5" in result.output and "best-IoU histogram (0.1 bins): 0 0 0 0 0 1 0 0 0 2" in result.output
    result = runner.invoke(main, ["eval", str(ds), str(ds), "--annotations", str(ann), "--json"])
    assert result.exit_code == 0, result.output
    j = json.loads(result.output)
    assert len(j["proposals"]) == 6 and len(j["segments"]) == 2 and len(j["datasets"]) == 2
    result = runner.invoke(main, ["eval", str(tmp_path / "none"), "--annotations", str(ann)])
    assert result.exit_code == 1 and "does not exist" in result.output
