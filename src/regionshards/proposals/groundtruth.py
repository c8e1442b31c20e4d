"""COCO instance annotations → binary masks, label maps and per-segment RLEs.

Inputs are already-parsed COCO annotation dicts (``{"id", "segmentation", "iscrowd", ...}``) for one image
of known size; nothing here reads files. Masks follow ``pycocotools.coco.COCO.annToMask``: polygons are
rasterised by ``pycocotools.mask.frPyObjects`` (the reference definition of a COCO polygon) and the parts
of a multi-polygon are unioned, RLEs are decoded as given. Decoding goes through :mod:`.rle` because
``pycocotools.mask.decode`` warns under numpy 2; the pixels are the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .rle import decode_mask, encode_segments, rle_to_counts, segment_areas


def _name(ann: dict[str, Any]) -> str:
    return f"annotation {ann.get('id', '<no id>')}"


def _polygons(segm: list[Any], ann: dict[str, Any]) -> list[list[float]]:
    polys = []
    for part in segm:
        if isinstance(part, str | bytes | dict) or not isinstance(part, Sequence | np.ndarray):
            raise ValueError(f"{_name(ann)}: a polygon must be a flat list of x, y coordinates")
        try:
            coords = np.asarray(part, dtype=np.float64).ravel().tolist()
        except (TypeError, ValueError):
            raise ValueError(f"{_name(ann)}: polygon coordinates must be numbers") from None
        # frPyObjects would read a 4-number "polygon" as a box and silently drop an odd trailing coordinate.
        if len(coords) < 6 or len(coords) % 2:
            raise ValueError(
                f"{_name(ann)}: a polygon needs at least 3 (x, y) points, got {len(coords)} coordinates"
            )
        polys.append(coords)
    return polys


# Polygon coordinates are accepted up to one image size beyond each border: COCO's own polygons stray a pixel or
# two outside, while pycocotools rasterises at 5x resolution along every edge and allocates accordingly (a vertex
# at 1e8 costs > 4 GB; a NaN one crashes it). Further out is an absurd coordinate, not a mask.
_MARGIN = 1.0


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _finite_numbers(values: Any) -> list[float] | None:
    """The values as floats if they are a flat sequence of finite real numbers, else None."""
    if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence):
        return None
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in values):
        return None
    out = [float(v) for v in values]
    return out if all(math.isfinite(v) for v in out) else None


def _polygon_problem(segm: list[Any], height: int, width: int) -> str | None:
    for part in segm:
        coords = _finite_numbers(part)
        if coords is None:
            return "polygon coordinates are not finite numbers"
        if len(coords) < 6 or len(coords) % 2:
            return f"a polygon needs at least 3 (x, y) points, got {len(coords)} coordinates"
        xs, ys = coords[0::2], coords[1::2]
        if (min(xs) < -_MARGIN * width or max(xs) > (1 + _MARGIN) * width
                or min(ys) < -_MARGIN * height or max(ys) > (1 + _MARGIN) * height):
            return f"polygon coordinates far outside the {width}x{height} image"
    return None


def _rle_problem(segm: dict[str, Any], height: int, width: int) -> str | None:
    if "size" not in segm or "counts" not in segm:
        return "an RLE segmentation needs 'size' and 'counts'"
    size, counts = segm.get("size"), segm.get("counts")
    if not isinstance(size, list | tuple) or len(size) != 2 or not all(_is_int(v) for v in size):
        return f"RLE size must be [H, W] integers, got {size!r}"[:120]
    if [int(v) for v in size] != [height, width]:
        return f"RLE size {[int(v) for v in size]} does not match the image size {[height, width]}"
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "RLE counts are not ASCII"
    if isinstance(counts, list):
        if not all(_is_int(v) and 0 <= v < 2**32 for v in counts):
            return "uncompressed RLE counts must be integers in 0..2**32-1"
    elif not isinstance(counts, str) or not counts.isascii():
        return "RLE counts must be a string or a list of integers"
    try:
        total = int(rle_to_counts({"size": list(size), "counts": counts}).astype(np.int64).sum())
    except ValueError as err:
        return f"malformed RLE counts ({err})"
    if total != height * width:
        return f"RLE runs sum to {total} pixels, expected {height}*{width}"
    return None


def segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    """Why a COCO ``segmentation`` value cannot be rasterised for a ``height`` x ``width`` image, or None."""
    if segm is None or (isinstance(segm, list | tuple | dict) and len(segm) == 0):
        return "missing or empty segmentation"
    if isinstance(segm, list | tuple):
        if all(isinstance(v, Real) for v in segm):
            return "polygons must be a list of coordinate lists, got a flat list"
        return _polygon_problem(list(segm), height, width)
    if isinstance(segm, dict):
        return _rle_problem(segm, height, width)
    return f"segmentation of type {type(segm).__name__}"


def coco_box(bbox: Any, height: int, width: int) -> tuple[list[int] | None, str | None]:
    """A COCO ``bbox`` ``[x, y, w, h]`` (continuous coordinates, pixel i covering [i, i+1)) as the format's
    whole-number pixel-covering box clipped to the image, or ``(None, problem)``.

    The box covers pixels ``floor(x) .. ceil(x + w) - 1`` (for a box from ``pycocotools.mask.toBbox`` of a mask
    this is exact: its values are whole), clipped to the ``width`` x ``height`` image. Refused: not 4 finite
    numbers, ``w`` or ``h`` not positive, nothing left inside the image.
    """
    box = _finite_numbers(bbox)
    if box is None or len(box) != 4:
        return None, "bbox is not 4 finite numbers [x, y, w, h]"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return None, f"bbox size {w:g}x{h:g} is not positive"
    # clip in floating point first: x + w may overflow to inf, and ceil(inf) raises
    x0, y0 = math.floor(max(0.0, min(x, width))), math.floor(max(0.0, min(y, height)))
    x1, y1 = math.ceil(max(0.0, min(x + w, width))), math.ceil(max(0.0, min(y + h, height)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None, f"bbox [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {width}x{height} image"
    return [x0, y0, x1 - x0, y1 - y0], None


def _identity_problem(ann: Any) -> str | None:
    if not isinstance(ann, dict):
        return "not a JSON object"
    if not _is_int(ann.get("id")):
        return "no integer 'id'"
    if not _is_int(ann.get("category_id")):
        return f"category_id {ann.get('category_id')!r} is not an integer"[:120]
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd", 0), bool | float):
        return f"iscrowd {ann.get('iscrowd')!r} is not 0 or 1"[:120]
    return None


@dataclass(frozen=True)
class Instance:
    """One usable COCO annotation of an image: its dict, its pixel-covering ``[x, y, w, h]`` box inside the
    image, and whether its segmentation is valid (a mask can be rasterised from it)."""

    annotation: dict[str, Any]
    bbox: list[int]
    segmentation_ok: bool


def image_instances(anns: Sequence[Any], height: int, width: int) -> tuple[list[Instance], list[str]]:
    """Sort one image's annotations into usable instances and a note per problem, before pycocotools sees any.

    An annotation is an instance when its ``id``, ``category_id`` and ``iscrowd`` are valid and it has a box:
    its ``bbox`` (``coco_box``), or, without a ``bbox`` key, the box of its valid segmentation. A valid
    segmentation (``segmentation_problem``) makes it a mask as well; an instance with an unusable one keeps its
    box and gets a note ending in ``(box kept, no mask)`` (detection-only exports). Everything else is dropped
    with a note. Notes are ``"annotation <id>: <why>"`` (deterministic text: ids, numbers and sizes only).
    """
    instances, notes = [], []
    for i, ann in enumerate(anns):
        ident = ann.get("id") if isinstance(ann, dict) and _is_int(ann.get("id")) else f"at position {i}"
        problem = _identity_problem(ann)
        if problem is not None:
            notes.append(f"annotation {ident}: {problem}")
            continue
        segm_problem = segmentation_problem(ann.get("segmentation"), height, width)
        if "bbox" in ann:
            box, problem = coco_box(ann["bbox"], height, width)
        elif segm_problem is None:
            box = _mask_box(annotation_to_mask(ann, height, width))
            problem = None if box is not None else "no bbox and the segmentation covers no pixel of the image"
        else:
            box, problem = None, f"no bbox and {segm_problem}"
        if box is None:
            notes.append(f"annotation {ident}: {problem}")
            continue
        if segm_problem is not None:
            notes.append(f"annotation {ident}: {segm_problem} (box kept, no mask)")
        instances.append(Instance(ann, box, segm_problem is None))
    return instances, notes


def _mask_box(mask: np.ndarray) -> list[int] | None:
    """Pixel-covering ``[x, y, w, h]`` of an (H, W) 0/1 mask (``pycocotools.mask.toBbox``'s box), None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def usable_annotations(
    anns: Sequence[Any], height: int, width: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """The annotations that give a mask (valid identity, box and segmentation; input order) and the notes of
    ``image_instances`` (one per dropped annotation or lost mask)."""
    instances, notes = image_instances(anns, height, width)
    return [inst.annotation for inst in instances if inst.segmentation_ok], notes


def _annotation_rle(ann: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """The annotation's mask as an RLE dict of size [height, width] (compressed, or uncompressed as given)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    segm = ann.get("segmentation") if isinstance(ann, dict) else None
    problem = segmentation_problem(segm, height, width)
    if problem is not None:  # never hand pycocotools a NaN, a huge coordinate or malformed counts
        raise ValueError(f"{_name(ann) if isinstance(ann, dict) else 'annotation'}: {problem}")
    if isinstance(segm, list | tuple) and len(segm) > 0 and not isinstance(segm[0], Real):
        polygon_rles = mask_utils.frPyObjects(_polygons(list(segm), ann), height, width)
        return mask_utils.merge(polygon_rles)
    if isinstance(segm, list | tuple) and len(segm) > 0:
        raise ValueError(f"{_name(ann)}: polygons must be a list of coordinate lists, got a flat list")
    if not isinstance(segm, dict) or not segm:
        raise ValueError(f"{_name(ann)}: missing or empty segmentation")
    if "size" not in segm or "counts" not in segm:
        raise ValueError(f"{_name(ann)}: an RLE segmentation needs 'size' and 'counts'")
    size = [int(v) for v in segm["size"]]
    if size != [height, width]:
        raise ValueError(f"{_name(ann)}: RLE size {size} does not match the image size {[height, width]}")
    try:
        total = int(rle_to_counts(segm).astype(np.int64).sum())
    except ValueError as err:
        raise ValueError(f"{_name(ann)}: {err}") from None
    if total != height * width:
        raise ValueError(f"{_name(ann)}: RLE runs sum to {total} pixels, expected {height}*{width}")
    return segm


def annotation_to_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Rasterise one COCO annotation.

    Args:
        ann: annotation dict whose ``segmentation`` is a list of polygons ``[[x0, y0, x1, y1, ...], ...]``
            (pixel coordinates, at least 3 points each), an uncompressed RLE ``{"size": [H, W], "counts":
            list[int]}`` or a compressed RLE (``counts`` str or bytes).
        height, width: image size; an RLE must have exactly this size.

    Returns:
        (H, W) uint8 mask of 0/1, pixel-identical to ``COCO.annToMask(ann)``.

    Raises:
        ValueError: naming the annotation id when the segmentation is missing, a polygon has fewer than
            3 points, or an RLE has the wrong size or malformed counts.
    """
    return decode_mask(_annotation_rle(ann, height, width))


def annotations_to_labels(
    anns: Sequence[dict[str, Any]], height: int, width: int, *, include_crowd: bool = False
) -> tuple[np.ndarray, list[int]]:
    """Paint the instances of one image into a dense label map.

    Instances are painted largest mask area first, ties by ascending annotation id, so a smaller object
    lying on a larger one stays visible (and of two equal-area instances the higher id wins the shared
    pixels). Ids are then made dense: an instance left with no visible pixel gets no id.

    Args:
        anns: annotation dicts of one image, each with an ``id``; ``iscrowd`` ones are skipped unless
            ``include_crowd``.
        height, width: image size.

    Returns:
        ``(labels, ann_ids)``: (H, W) int32 label map with dense ids 0..n-1, and a list of n annotation ids
        with ``ann_ids[label]`` the annotation shown by that label and -1 for background. Id 0 is the
        background (pixels covered by no instance) whenever there is any; instances follow in painting
        order. If instances cover every pixel there is no background and the list holds no -1.

    Raises:
        ValueError: naming the annotation id of a malformed annotation, or an annotation without ``id``.
    """
    chosen = [ann for ann in anns if include_crowd or not ann.get("iscrowd", 0)]
    for i, ann in enumerate(chosen):
        if not isinstance(ann, dict) or "id" not in ann:
            raise ValueError(f"annotation at position {i} has no 'id'")
    rles = [_annotation_rle(ann, height, width) for ann in chosen]
    areas = segment_areas(rles) if rles else np.zeros(0, np.int64)
    order = sorted(range(len(chosen)), key=lambda i: (-int(areas[i]), chosen[i]["id"]))
    painted = np.zeros((height, width), np.int32)
    for rank, i in enumerate(order, start=1):
        painted[decode_mask(rles[i]).view(bool)] = rank
    present = np.bincount(painted.ravel(), minlength=len(order) + 1) > 0
    dense_id = np.cumsum(present, dtype=np.int32) - 1
    ann_ids = [-1] + [chosen[i]["id"] for i in order]
    return dense_id[painted], [ann_ids[r] for r in np.flatnonzero(present)]


def annotations_to_rles(
    anns: Sequence[dict[str, Any]], height: int, width: int, *, include_crowd: bool = False
) -> tuple[list[dict[str, Any]], list[int]]:
    """``annotations_to_labels`` encoded with :func:`.rle.encode_segments`.

    Returns:
        ``(rles, ann_ids)``: one compressed RLE ``{"size": [H, W], "counts": str}`` per dense label and
        the matching annotation ids (-1 for background).
    """
    labels, ann_ids = annotations_to_labels(anns, height, width, include_crowd=include_crowd)
    return encode_segments(labels), ann_ids
