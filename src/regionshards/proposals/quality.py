"""How well proposals cover ground truth: box IoU, best overlap, recall, ABO and mask IoU.

Boxes are COCO ``[x, y, w, h]`` with an exclusive extent: a box covers ``x <= u < x + w`` and
``y <= v < y + h``, so ``[0, 0, 2, 2]`` and ``[2, 0, 2, 2]`` touch but do not overlap. IoUs are float64 and
bit-identical to ``pycocotools.mask.iou`` (boxes with ``iscrowd=0``, and RLE masks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_boxes(boxes: np.ndarray | Sequence[Sequence[float]], name: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must be an (N, 4) array of [x, y, w, h] boxes, got shape {arr.shape}")
    return arr


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of ``[x, y, w, h]`` boxes.

    Args:
        a: (N, 4) boxes, any real dtype.
        b: (M, 4) boxes.

    Returns:
        (N, M) float64 IoU, 0 where boxes do not overlap (also for empty boxes); equal to
        ``pycocotools.mask.iou(a, b, [0] * M)``.
    """
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    # Same operations in the same order as pycocotools' bbIou, so the results agree to the last bit.
    w = np.minimum(a[:, None, 2] + a[:, None, 0], b[None, :, 2] + b[None, :, 0]) - np.maximum(
        a[:, None, 0], b[None, :, 0]
    )
    h = np.minimum(a[:, None, 3] + a[:, None, 1], b[None, :, 3] + b[None, :, 1]) - np.maximum(
        a[:, None, 1], b[None, :, 1]
    )
    overlap = (w > 0) & (h > 0)
    inter = np.where(overlap, w * h, 0.0)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=overlap)


def best_overlap(proposals: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Best IoU of each ground-truth box over all proposals.

    Args:
        proposals: (N, 4) ``[x, y, w, h]`` boxes; N may be 0.
        gt_boxes: (M, 4) ``[x, y, w, h]`` boxes.

    Returns:
        (M,) float64, 0 for every box when there are no proposals.
    """
    proposals = _as_boxes(proposals, "proposals")
    gt_boxes = _as_boxes(gt_boxes, "gt_boxes")
    if len(proposals) == 0:
        return np.zeros(len(gt_boxes))
    return box_iou(proposals, gt_boxes).max(axis=0)


def box_recall(
    proposals: np.ndarray, gt_boxes: np.ndarray, thresholds: Sequence[float] = (0.5, 0.7)
) -> dict[float, float]:
    """Fraction of ground-truth boxes whose best proposal IoU is at least each threshold.

    Args:
        proposals: (N, 4) ``[x, y, w, h]`` boxes.
        gt_boxes: (M, 4) ``[x, y, w, h]`` boxes.
        thresholds: IoU thresholds; a box with best IoU exactly equal to a threshold counts as found.

    Returns:
        ``{threshold: recall}``; recall is NaN when M == 0 (undefined), so that averaging over images
        with ``np.nanmean`` skips images without ground truth.
    """
    best = best_overlap(proposals, gt_boxes)
    if best.size == 0:
        return {float(t): float("nan") for t in thresholds}
    return {float(t): float(np.count_nonzero(best >= t)) / best.size for t in thresholds}


def average_best_overlap(proposals: np.ndarray, gt_boxes: np.ndarray) -> float:
    """ABO (Uijlings et al., selective search): mean over ground-truth boxes of the best proposal IoU.

    Args:
        proposals: (N, 4) ``[x, y, w, h]`` boxes.
        gt_boxes: (M, 4) ``[x, y, w, h]`` boxes.

    Returns:
        The mean as a float, NaN when M == 0.
    """
    best = best_overlap(proposals, gt_boxes)
    return float(best.mean()) if best.size else float("nan")


def mask_best_iou(labels: np.ndarray, gt_masks: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Best IoU of each ground-truth mask over the segments of a label map.

    The segment × mask intersection table comes from a single ``bincount`` over the masked pixels (no
    per-segment masks); it holds G × (max id + 1) int64 counts.

    Args:
        labels: (H, W) non-negative integer label map (ids need not be dense; absent ids score 0).
        gt_masks: (G, H, W) array or a list of G (H, W) arrays; non-zero means inside.

    Returns:
        (G,) float64 best IoU, 0 for an empty mask; equal to ``pycocotools.mask.iou(segment_rles,
        gt_rles, [0] * G).max(axis=0)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty 2-D integer array, got {labels.dtype} {labels.shape}")
    if isinstance(gt_masks, np.ndarray):
        masks = gt_masks
    else:
        masks = np.stack([np.asarray(m) for m in gt_masks]) if len(gt_masks) else np.zeros((0, *labels.shape))
    if masks.ndim != 3 or masks.shape[1:] != labels.shape:
        raise ValueError(
            f"gt_masks must be (G, {labels.shape[0]}, {labels.shape[1]}), got shape {masks.shape}"
        )
    if labels.min() < 0:
        raise ValueError(f"labels must be non-negative, found {labels.min()}")
    n_gt = masks.shape[0]
    if n_gt == 0:
        return np.zeros(0)
    flat = labels.ravel().astype(np.int64)
    n_ids = int(flat.max()) + 1
    gt_index, pixel = np.nonzero(masks.reshape(n_gt, -1))
    inter = np.bincount(gt_index * n_ids + flat[pixel], minlength=n_gt * n_ids).reshape(n_gt, n_ids)
    seg_area = np.bincount(flat, minlength=n_ids)
    gt_area = inter.sum(axis=1)  # every pixel carries exactly one label
    union = seg_area[None, :] + gt_area[:, None] - inter
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=inter > 0)
    return iou.max(axis=1)
