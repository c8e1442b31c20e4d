"""COCO annotations → masks and label maps, checked against pycocotools' COCO API."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from regionshards.proposals.groundtruth import (
    annotation_to_mask,
    annotations_to_labels,
    annotations_to_rles,
)
from regionshards.proposals.rle import decode_segments

H, W = 40, 50


def column_major_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a 0/1 mask, written independently of the package."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], edges])).tolist()


def disk(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def compressed(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask))


DISK_A, DISK_B, DISK_C, CROWD = disk(20, 25, 6.5), disk(10, 40, 4), disk(30, 8, 5), disk(25, 30, 12)
ANNOTATIONS = [
    {"id": 1, "segmentation": [[4.5, 3.2, 30.7, 5.0, 10.0, 33.3]]},
    {"id": 2, "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10], [30, 20, 45, 20, 45, 38, 30, 38]]},
    {"id": 3, "segmentation": {"size": [H, W], "counts": column_major_counts(DISK_A)}},
    {"id": 4, "segmentation": {"size": [H, W], "counts": compressed(DISK_B)["counts"].decode("ascii")}},
    {"id": 5, "segmentation": compressed(DISK_C)},  # counts as bytes
    {"id": 6, "segmentation": {"size": [H, W], "counts": column_major_counts(CROWD)}, "iscrowd": 1},
    {"id": 7, "segmentation": [[-5, -5, 20, -5, 20, 15, -5, 15]]},  # clipped at the border
    {"id": 8, "segmentation": [[40, 2, 48, 4, 47, 12, 41.5, 13, 38, 7]]},
]


@pytest.fixture(scope="module")
def coco() -> COCO:
    api = COCO()
    anns = [
        {"image_id": 1, "category_id": 1, "iscrowd": 0, "area": 0.0, "bbox": [0, 0, 1, 1]} | ann
        for ann in ANNOTATIONS
    ]
    api.dataset = {
        "images": [{"id": 1, "height": H, "width": W}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }
    api.createIndex()
    return api


def assert_same_pixels(mask: np.ndarray, reference_rle: dict) -> None:
    # COCO.annToMask is decode(annToRLE(ann)); pycocotools.mask.decode warns under numpy 2, so compare the
    # pixel sets through RLE algebra instead: A == B exactly when |A| == |B| == |A ∩ B|.
    ours = compressed(mask)
    both = mask_utils.merge([ours, reference_rle], intersect=True)
    assert mask_utils.area(ours) == mask_utils.area(reference_rle) == mask_utils.area(both)


@pytest.mark.parametrize("ann_id", [a["id"] for a in ANNOTATIONS])
def test_annotation_to_mask_matches_ann_to_mask(coco: COCO, ann_id: int) -> None:
    mask = annotation_to_mask(coco.anns[ann_id], H, W)
    assert mask.dtype == np.uint8 and mask.shape == (H, W)
    assert set(np.unique(mask)) == {0, 1}
    assert_same_pixels(mask, coco.annToRLE(coco.anns[ann_id]))


def test_rle_annotations_decode_to_their_masks() -> None:
    by_id = {a["id"]: a for a in ANNOTATIONS}
    for ann_id, expected in [(3, DISK_A), (4, DISK_B), (5, DISK_C), (6, CROWD)]:
        np.testing.assert_array_equal(annotation_to_mask(by_id[ann_id], H, W), expected)


def test_polygon_parts_are_unioned(coco: COCO) -> None:
    ann = coco.anns[2]
    mask = annotation_to_mask(ann, H, W)
    parts = [annotation_to_mask({"id": 2, "segmentation": [poly]}, H, W) for poly in ann["segmentation"]]
    np.testing.assert_array_equal(mask, parts[0] | parts[1])
    assert mask[5, 5] == 1 and mask[30, 40] == 1 and mask[20, 20] == 0


def test_labels_hand_built_case() -> None:
    def rle(rows: slice, cols: slice) -> dict:
        mask = np.zeros((4, 6), np.uint8)
        mask[rows, cols] = 1
        return compressed(mask)

    anns = [
        {"id": 7, "segmentation": rle(slice(0, 2), slice(4, 6))},  # area 4, hidden by its twin id 8
        {"id": 10, "segmentation": rle(slice(0, 4), slice(0, 4))},  # area 16, painted first
        {"id": 9, "segmentation": rle(slice(0, 4), slice(0, 6)), "iscrowd": 1},  # area 24
        {"id": 8, "segmentation": rle(slice(0, 2), slice(4, 6))},  # area 4, same pixels as id 7
        {"id": 3, "segmentation": rle(slice(1, 3), slice(1, 3))},  # area 4, inside id 10
    ]
    expected = np.array(
        [
            [1, 1, 1, 1, 3, 3],
            [1, 2, 2, 1, 3, 3],
            [1, 2, 2, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
        ]
    )
    labels, ids = annotations_to_labels(anns, 4, 6)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, expected)
    assert ids == [-1, 10, 3, 8]
    # With the crowd region (largest, painted first) no pixel is background: id 0 is the crowd.
    labels, ids = annotations_to_labels(anns, 4, 6, include_crowd=True)
    np.testing.assert_array_equal(labels, expected)
    assert ids == [9, 10, 3, 8]
    # The order of the input list does not matter.
    labels, ids = annotations_to_labels(anns[::-1], 4, 6)
    np.testing.assert_array_equal(labels, expected)
    assert ids == [-1, 10, 3, 8]


def test_labels_consistent_with_masks(coco: COCO) -> None:
    anns = list(coco.anns.values())
    for include_crowd in (False, True):
        labels, ids = annotations_to_labels(anns, H, W, include_crowd=include_crowd)
        assert ids[0] == -1 and sorted(set(ids)) == sorted(ids)
        assert np.array_equal(np.unique(labels), np.arange(len(ids)))
        masks = {a["id"]: annotation_to_mask(a, H, W).astype(bool) for a in anns}
        chosen = [i for i in masks if include_crowd or not coco.anns[i]["iscrowd"]]
        assert (6 in ids) == include_crowd
        np.testing.assert_array_equal(labels == 0, ~np.logical_or.reduce([masks[i] for i in chosen]))
        for label, ann_id in enumerate(ids[1:], start=1):
            assert masks[ann_id][labels == label].all()
        # The smallest instance is painted last, so all of it is visible.
        smallest = min(chosen, key=lambda i: (masks[i].sum(), -i))
        np.testing.assert_array_equal(labels == ids.index(smallest), masks[smallest])


def test_annotations_to_rles_round_trip(coco: COCO) -> None:
    anns = list(coco.anns.values())
    rles, ids = annotations_to_rles(anns, H, W)
    labels, ids2 = annotations_to_labels(anns, H, W)
    assert ids == ids2 and len(rles) == len(ids)
    assert all(isinstance(r["counts"], str) and r["size"] == [H, W] for r in rles)
    np.testing.assert_array_equal(decode_segments(rles), labels)


def test_no_annotations_is_all_background() -> None:
    labels, ids = annotations_to_labels([], 3, 4)
    np.testing.assert_array_equal(labels, np.zeros((3, 4)))
    assert ids == [-1]
    rles, ids = annotations_to_rles([{"id": 1, "segmentation": [[0, 0, 1, 0, 0, 1]], "iscrowd": 1}], 3, 4)
    assert ids == [-1] and rles == [{"size": [3, 4], "counts": "0<"}]


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        (None, "missing"),
        ([], "missing"),
        ({}, "missing"),
        ([[1, 1, 5, 5]], "at least 3"),
        ([[1, 1, 5, 5, 9, 1, 4]], "at least 3"),
        ([[1, 1, 5, 5, 9, 1], [2, 2]], "at least 3"),
        ([1, 1, 5, 5, 9, 1], "flat list"),
        ([["a", "b", "c", "d", "e", "f"]], "numbers"),
        ({"size": [H, W]}, "'size' and 'counts'"),
        ({"size": [H + 1, W], "counts": [H * W + W]}, r"RLE size \[41, 50\]"),
        ({"size": [W, H], "counts": compressed(DISK_A.T.copy())["counts"]}, "does not match"),
        ({"size": [H, W], "counts": [5, 7]}, "sum to 12"),
        ({"size": [H, W], "counts": "0d"}, "malformed"),
    ],
)
def test_malformed_annotations_name_the_id(segmentation: object, message: str) -> None:
    ann = {"id": 42, "segmentation": segmentation}
    if segmentation is None:
        del ann["segmentation"]
    with pytest.raises(ValueError, match=f"annotation 42: .*{message}"):
        annotation_to_mask(ann, H, W)
    with pytest.raises(ValueError, match="annotation 42"):
        annotations_to_labels([{"id": 1, "segmentation": [[0, 0, 5, 0, 0, 5]]}, ann], H, W)


def test_annotation_without_id_rejected() -> None:
    with pytest.raises(ValueError, match="position 0 has no 'id'"):
        annotations_to_labels([{"segmentation": [[0, 0, 5, 0, 0, 5]]}], H, W)
