"""Proposal boxes through SoCo's views: conventions, the view map, jitter, K-sampling and FPN level assignment.

numpy only (loader workers). **Conventions.** Shards store whole-number ``[x, y, w, h]`` boxes covering pixels
(format §4). Here a box is a float64 row ``[x0, y0, x1, y1]`` of *continuous* pixel coordinates in which stored
pixel (row i, column j) is the unit square ``[j, j + 1) x [i, i + 1)``, so a stored box is exactly
``[x, y, x + w, y + h]`` (no one-pixel question), its size is ``(x1 - x0, y1 - y0)``, and these are the
coordinates ``torchvision.ops.roi_align(..., aligned=True)`` expects (it samples at pixel centres ``j + 0.5``).

**The view map.** A view is a crop ``(y, x, h, w)`` of the image decoded at 1/``scale`` (libjpeg's DCT scaling:
decoded pixel j covers stored pixels ``[s j, s (j + 1))``, so the stored point X is the decoded point X/s),
resized to ``size`` x ``size`` and mirrored when ``flip``. A stored point (X, Y) goes to

    u = (X / s - x) * size / w,   v = (Y / s - y) * size / h,   and u → size - u when flipped.

This is the map under which view pixel u samples the stored point ``s (x + (u + 1/2) w / size)`` (what
``transforms.resize_image`` interpolates around and ``transforms.mask_positions`` samples), so **a view pixel's
centre lies in a transformed box exactly when the stored point it samples lies in the box**: a box's pixels go
where their image pixels go. Boxes are clipped to the crop before mapping, so view boxes lie in ``[0, size]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..transforms import Crop

NO_ID = -1  # id of a box that is not a stored proposal (the whole image, or a view intersection)


def xywh_to_corners(boxes: np.ndarray | Sequence) -> np.ndarray:
    """(N, 4) float64 ``[x0, y0, x1, y1]`` of (N, 4) stored ``[x, y, w, h]`` pixel-covering boxes."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def whole_image(height: int, width: int) -> np.ndarray:
    """(1, 4) float64 ``[0, 0, W, H]``: every pixel of the image."""
    return np.array([[0.0, 0.0, float(width), float(height)]])


def crop_corners(crop: Crop, scale: int = 1) -> np.ndarray:
    """(4,) float64 corners of a crop given on the 1/``scale`` grid, in stored pixels."""
    return np.array([crop.x, crop.y, crop.x + crop.w, crop.y + crop.h], dtype=np.float64) * scale


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """(4,) corners of the overlap of two (4,) rectangles, None when it has no area."""
    out = np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])])
    return out if out[2] > out[0] and out[3] > out[1] else None


def overlapping(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """(N,) bool: which (N, 4) boxes overlap the (4,) rectangle with positive area."""
    return ((boxes[:, 0] < rect[2]) & (rect[0] < boxes[:, 2]) & (boxes[:, 1] < rect[3]) & (rect[1] < boxes[:, 3]))


def clip(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """(N, 4) boxes intersected with the (4,) rectangle; a box outside it becomes a zero-area box on its border."""
    low = np.clip(boxes[:, :2], rect[:2], rect[2:])
    return np.concatenate([low, np.clip(boxes[:, 2:], low, rect[2:])], axis=1)


def to_decoded(boxes: np.ndarray, scale: int, image_size: tuple[int, int] | None) -> np.ndarray:
    """(N, 4) stored-pixel corners → the 1/``scale`` grid: X / s, except that an edge on the image's right or
    bottom border goes to the grid's border ``ceil(W / s)`` (a partial last DCT block holds the last stored
    pixels, which ``transforms.sample_positions`` reads for every position past ``W / s``)."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale
    if scale > 1 and image_size is not None:
        height, width = image_size
        for cols, limit in (([0, 2], width), ([1, 3], height)):
            edge = out[:, cols] * scale >= limit
            out[:, cols] = np.where(edge, -(-limit // scale), out[:, cols])
    return out


def to_view(boxes: np.ndarray, crop: Crop, scale: int, size: int,
            image_size: tuple[int, int] | None = None) -> np.ndarray:
    """(N, 4) stored-pixel boxes → the view's pixels (see the module docstring), clipped to the crop first.

    Args:
        boxes: (N, 4) float corners in stored pixels.
        crop: the view's crop on the 1/``scale`` decoded grid (``transforms.snap`` of the drawn crop).
        scale: DCT decode scale (1, 2, 4, 8); size: the view's side.
        image_size: stored (H, W); with it, edges on the image border follow a partial last DCT block
            (``to_decoded``). Needed for exactness when ``scale`` > 1 and H or W is not a multiple of it.

    Returns:
        (N, 4) float64 corners in ``[0, size]``, ``x0 < x1`` whenever the box overlaps the crop.
    """
    b = clip(to_decoded(boxes, scale, image_size), crop_corners(crop))
    sx, sy = size / crop.w, size / crop.h
    out = np.empty_like(b)
    out[:, [0, 2]] = (b[:, [0, 2]] - crop.x) * sx
    out[:, [1, 3]] = (b[:, [1, 3]] - crop.y) * sy
    if crop.flip:
        out[:, [0, 2]] = size - out[:, [2, 0]]
    return np.clip(out, 0.0, float(size))  # only rounding can leave [0, size]


def from_view(boxes: np.ndarray, crop: Crop, scale: int, size: int) -> np.ndarray:
    """Inverse of ``to_view`` (without ``image_size``) for boxes inside the crop: view → stored-pixel corners."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    if crop.flip:
        b[:, [0, 2]] = size - b[:, [2, 0]]
    out = np.empty_like(b)
    out[:, [0, 2]] = (b[:, [0, 2]] * crop.w / size + crop.x) * scale
    out[:, [1, 3]] = (b[:, [1, 3]] * crop.h / size + crop.y) * scale
    return out


def jitter(boxes: np.ndarray, rng: np.random.Generator, p: float, ratio: float) -> np.ndarray:
    """SoCo's box jitter, each box with probability ``p``: ``x' = x + a w, y' = y + b h, w' = w (1 + c),
    h' = h (1 + d)`` with a, b, c, d ~ U(-ratio, ratio). Returns new (N, 4) corners.

    Draws ``N`` uniforms and ``N x 4`` offsets whether or not a box is jittered (fixed draw count).
    """
    apply = rng.random(len(boxes)) < p
    a, b, c, d = rng.uniform(-ratio, ratio, size=(len(boxes), 4)).T
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x0, y0 = boxes[:, 0] + a * w, boxes[:, 1] + b * h
    moved = np.stack([x0, y0, x0 + w * (1 + c), y0 + h * (1 + d)], axis=1)
    return np.where(apply[:, None], moved, boxes)


def sample_boxes(candidates: np.ndarray, ids: np.ndarray, region: np.ndarray | None, k: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """K proposals for one view pair: drawn without replacement among the candidates overlapping ``region``
    (the two views' intersection), padded to K with duplicates drawn uniformly from those drawn.

    With no candidate overlapping, the region itself (or, when the views do not overlap, the first candidate)
    is the only box, with id ``NO_ID``. Always draws one permutation and K indices (fixed draw count).

    Args:
        candidates: (N, 4) stored-pixel corners; ids: (N,) int64 their indices in the sample's proposals.
        region: (4,) corners of V1 ∩ Vj in stored pixels, or None.

    Returns:
        ((K, 4) float64 corners, (K,) int64 ids); duplicates share an id.
    """
    inside = np.flatnonzero(overlapping(candidates, region)) if region is not None else np.zeros(0, np.int64)
    order = rng.permutation(max(len(inside), 1))
    pad = rng.integers(0, max(min(len(inside), k), 1), size=k)
    if len(inside) == 0:
        box = region if region is not None else candidates[0]
        return np.repeat(box[None].astype(np.float64), k, axis=0), np.full(k, NO_ID, np.int64)
    chosen = inside[order[:k]]
    picks = np.concatenate([np.arange(len(chosen)), pad[: k - len(chosen)]])
    return candidates[chosen[picks]].astype(np.float64), ids[chosen[picks]].astype(np.int64)


def assign_levels(boxes: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(N,) int64 FPN level index (0 = P2 … 3 = P5) of (N, 4) view-pixel corners: the first level whose
    threshold is >= ``sqrt(w h)`` (SoCo: P2 <= 48, P3 <= 96, P4 <= 192, P5 <= 224); larger boxes go to the last.
    """
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    s = np.sqrt(w * h)
    return np.minimum(np.searchsorted(np.asarray(thresholds, np.float64), s, side="left"),
                      len(thresholds) - 1).astype(np.int64)


def box_size(boxes: np.ndarray) -> np.ndarray:
    """(N,) ``sqrt(w h)`` of (N, 4) corners (0 for empty boxes)."""
    return np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))


def candidate_boxes(proposals: dict | None, name: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The proposals a named filter keeps in a sample's ``proposals`` JSON object, as corners.

    Uses the build's stored ``keep`` and ``used`` (SoCo's post fallbacks are already applied there); ``used ==
    "whole-image"`` (or an empty keep) gives one whole-image box with id ``NO_ID``.

    Returns:
        ((M, 4) float64 corners, (M,) int64 ids = indices into ``boxes``, the filter used).

    Raises:
        ValueError: no proposals, or the filter was not recorded by the build.
    """
    if not proposals:
        raise ValueError("the sample has no proposals (SoCo needs a build with --proposals soco)")
    filters = proposals.get("filters") or {}
    if name not in filters:
        raise ValueError(f"the sample has no proposal filter {name!r} (recorded: {sorted(filters)}); "
                         f"build with --filter {name} or set soco.proposal_filter")
    entry = filters[name]
    keep = np.asarray(entry.get("keep", []), dtype=np.int64)
    if entry.get("used") == "whole-image" or keep.size == 0:
        return whole_image(height, width), np.array([NO_ID], np.int64), "whole-image"
    boxes = xywh_to_corners(proposals["boxes"])
    if keep.max() >= len(boxes) or keep.min() < 0:
        raise ValueError(f"filter {name!r} keeps index {int(keep.max())} of {len(boxes)} proposals")
    return boxes[keep], keep, str(entry.get("used", name))



def cutout_in_boxes(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, p: float,
                    ratio: tuple[float, float], fill: np.ndarray) -> np.ndarray:
    """SoCo's box cutout (hologerry/SoCo ``RandomCutoutInBbox``): for each box, with probability ``p``, a square
    of area ``U(ratio) x`` the box's area, centred on a random pixel inside the box, is set to ``fill``.

    As in the reference, the square's side is ``round(sqrt(area))`` and it covers ``side // 2`` pixels on each
    side of its centre (clipped to the view), so it may reach past the box's border but its centre never lies
    outside the box. Draws per box: one uniform for the coin, then (when applied) one for the ratio and two for
    the centre.

    Args:
        image: (S, S, 3) uint8 view, changed in place and returned.
        boxes: (K, 4) float view-pixel corners ``[x0, y0, x1, y1]`` (duplicates are cut independently, as the
            reference cuts every padded box).
        fill: (3,) uint8 colour (the normalisation mean, so that the normalised pixels are 0 as in the reference,
            which zeroes the normalised tensor).
    """
    size_y, size_x = image.shape[:2]
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64):
        if rng.random() >= p:
            continue
        area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
        half = int(round(np.sqrt(rng.uniform(*ratio) * area))) // 2
        # a pixel whose centre lies inside the box (at least the one holding the box's corner)
        cx = int(rng.integers(int(np.floor(x0)), max(int(np.ceil(x1)), int(np.floor(x0)) + 1)))
        cy = int(rng.integers(int(np.floor(y0)), max(int(np.ceil(y1)), int(np.floor(y0)) + 1)))
        image[max(cy - half, 0): min(cy + half + 1, size_y), max(cx - half, 0): min(cx + half + 1, size_x)] = fill
    return image


def enough_overlap(candidates: np.ndarray, regions: Sequence[np.ndarray | None], k: int, least: int) -> bool:
    """Whether every view pair's region overlaps at least ``min(k, least)`` candidates (SoCo's re-draw test:
    ``select_props`` keeps ``min(k, overlapping)`` proposals and needs ``least_common`` of them)."""
    for region in regions:
        n = 0 if region is None else int(np.count_nonzero(overlapping(candidates, region)))
        if min(n, k) < least:
            return False
    return True
