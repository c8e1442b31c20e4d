"""Proposal quality: hand-computed cases and pycocotools cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from skimage import data
from skimage.segmentation import felzenszwalb

from regionshards.proposals.quality import (
    average_best_overlap,
    best_overlap,
    box_iou,
    box_recall,
    mask_best_iou,
)
from regionshards.proposals.rle import encode_segments


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 2, 2], [1, 1, 2, 2], 1 / 7),  # 1 px shared, 4 + 4 - 1 = 7 in the union
        ([0, 0, 10, 10], [5, 0, 10, 10], 50 / 150),
        ([0, 0, 4, 4], [1, 1, 2, 2], 4 / 16),  # contained
        ([3, 4, 5, 6], [3, 4, 5, 6], 1.0),
        ([0, 0, 2, 2], [2, 0, 2, 2], 0.0),  # touching edges do not overlap (exclusive extent)
        ([0, 0, 2, 2], [5, 5, 1, 1], 0.0),
        ([1, 1, 0, 0], [0, 0, 2, 2], 0.0),  # empty box
        ([0.5, 0, 1, 1], [0, 0, 1, 1], 0.5 / 1.5),
    ],
)
def test_box_iou_hand_computed(a: list[float], b: list[float], expected: float) -> None:
    iou = box_iou(np.array([a]), np.array([b]))
    assert iou.shape == (1, 1) and iou.dtype == np.float64
    assert iou[0, 0] == pytest.approx(expected, abs=1e-15)
    assert box_iou(np.array([b]), np.array([a]))[0, 0] == pytest.approx(expected, abs=1e-15)


def test_box_iou_matches_pycocotools() -> None:
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 50, (40, 2)), rng.uniform(0, 30, (40, 2))], axis=1)
    b = np.concatenate([rng.uniform(0, 50, (25, 2)), rng.uniform(0, 30, (25, 2))], axis=1)
    a[:5, 2:] = np.round(a[:5, 2:])
    b[:3] = a[:3]  # exact duplicates
    b[3, 2] = 0.0  # empty box
    ours = box_iou(a, b)
    assert ours.shape == (40, 25)
    np.testing.assert_array_equal(ours, mask_utils.iou(a, b, [0] * len(b)))
    assert (ours > 0).any() and (ours == 0).any()


def test_box_iou_empty_inputs() -> None:
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    assert box_iou(np.ones((2, 4)), []).shape == (2, 0)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou(np.ones((2, 3)), np.ones((2, 4)))


PROPOSALS = np.array([[0, 0, 10, 10], [20, 20, 10, 10], [0, 0, 5, 10]], dtype=np.float32)
GT = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 10, 12], [50, 50, 5, 5]])
# Best IoU per ground-truth box, by hand:
#   [0, 0, 10, 10]  exact match of proposal 0                                  → 1
#   [5, 0, 10, 10]  proposal 0: 5*10 / (100 + 100 - 50) = 1/3; proposal 2: 0    → 1/3
#   [20, 20, 10, 12] proposal 1: 100 / (100 + 120 - 100)                        → 5/6
#   [50, 50, 5, 5]  nothing nearby                                              → 0
EXPECTED_BEST = np.array([1.0, 1 / 3, 5 / 6, 0.0])


def test_best_overlap_hand_computed() -> None:
    np.testing.assert_allclose(best_overlap(PROPOSALS, GT), EXPECTED_BEST, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(best_overlap(np.zeros((0, 4)), GT), np.zeros(4))
    assert best_overlap(PROPOSALS, np.zeros((0, 4))).shape == (0,)


def test_box_recall_hand_computed() -> None:
    recall = box_recall(PROPOSALS, GT, thresholds=(0.3, 0.5, 0.7, 0.9))
    assert recall == {0.3: 0.75, 0.5: 0.5, 0.7: 0.5, 0.9: 0.25}
    assert box_recall(PROPOSALS, GT) == {0.5: 0.5, 0.7: 0.5}
    # Proposal [0, 0, 5, 10] has IoU exactly 0.5 with [0, 0, 10, 10]: a box at the threshold is found.
    assert box_recall(PROPOSALS[2:], GT[:1], thresholds=(0.5,)) == {0.5: 1.0}
    assert box_recall(np.zeros((0, 4)), GT) == {0.5: 0.0, 0.7: 0.0}
    assert all(math.isnan(v) for v in box_recall(PROPOSALS, np.zeros((0, 4))).values())


def test_average_best_overlap_hand_computed() -> None:
    # (1 + 1/3 + 5/6 + 0) / 4 = 13/24
    assert average_best_overlap(PROPOSALS, GT) == pytest.approx(13 / 24, abs=1e-15)
    assert average_best_overlap(np.zeros((0, 4)), GT) == 0.0
    assert math.isnan(average_best_overlap(PROPOSALS, np.zeros((0, 4))))


def test_mask_best_iou_hand_computed() -> None:
    labels = np.array(
        [
            [0, 0, 1, 1],
            [0, 0, 1, 1],
            [2, 2, 2, 2],
        ]
    )
    masks = np.zeros((4, 3, 4), bool)
    masks[0, :2, :3] = True  # segment 0: 4 / (4 + 6 - 4) = 2/3; segment 1: 2 / (4 + 6 - 2) = 1/4
    masks[1, 2, :] = True  # exactly segment 2
    # masks[2] stays empty → 0
    masks[3, 2, 0] = True  # one pixel of segment 2: 1 / 4
    expected = [2 / 3, 1.0, 0.0, 0.25]
    np.testing.assert_allclose(mask_best_iou(labels, masks), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        mask_best_iou(labels, list(masks.astype(np.uint8))), expected, rtol=0, atol=1e-15
    )
    assert mask_best_iou(labels, []).shape == (0,)


def test_mask_best_iou_matches_pycocotools() -> None:
    image = data.coffee()[::4, ::4]
    labels = felzenszwalb(image, scale=200, sigma=0.8, min_size=30)
    h, w = labels.shape
    yy, xx = np.mgrid[:h, :w]
    masks = np.stack(
        [
            (yy - 40) ** 2 + (xx - 60) ** 2 < 20**2,
            (yy > 10) & (yy < 70) & (xx > 5) & (xx < 50),
            labels == 3,
            labels <= 1,
            (xx + yy) % 7 == 0,
        ]
    )
    ours = mask_best_iou(labels, masks)
    gt_rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    reference = mask_utils.iou(encode_segments(labels), gt_rles, [0] * len(gt_rles)).max(axis=0)
    np.testing.assert_array_equal(ours, reference)
    assert ours[2] == 1.0


def test_mask_best_iou_rejects_bad_input() -> None:
    labels = np.zeros((3, 4), np.int64)
    with pytest.raises(ValueError, match="gt_masks"):
        mask_best_iou(labels, np.zeros((2, 4, 3), bool))
    with pytest.raises(ValueError, match="non-negative"):
        mask_best_iou(labels - 1, np.zeros((1, 3, 4), bool))
    with pytest.raises(ValueError, match="2-D integer"):
        mask_best_iou(labels.astype(float), np.zeros((1, 3, 4), bool))
