"""The shard writer's input: one plain-data record per input image, ok or failed.

A build worker (or a test) fills these from already-computed results; nothing here reads files. Arrays keep
the conventions of ``regionshards.proposals``: boxes are ``[x, y, w, h]`` covering the pixels
(``w = max_x - min_x + 1``), segment k of an RLE list is label id k, RLEs are COCO compressed
``{"size": [H, W], "counts": str}``. The constructors ``from_labels``/``from_rles``/``from_proposals``/
``from_annotations`` compute the derived fields (areas, boxes, keep lists) so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import proposals as algorithms  # lazy (PEP 562): numba loads on first use, not on import

STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass(frozen=True)
class Source:
    """Where an input came from: a path relative to the source root and/or a COCO image id, and its class."""

    path: str | None = None
    image_id: int | None = None
    class_index: int | None = None
    class_name: str | None = None

    def describe(self) -> str:
        """A short human name for error messages: the path, else ``image id N``."""
        if self.path is not None:
            return self.path
        return f"image id {self.image_id}" if self.image_id is not None else "<unknown source>"


@dataclass(frozen=True)
class SegmentsData:
    """A partition of the image into K >= 1 segments.

    Attributes:
        method: e.g. ``"fh"``; params: the parameters that produced it (JSON-native values).
        rles: K COCO compressed RLEs ``{"size": [H, W], "counts": str}``, entry k = id k.
        areas: (K,) int64 pixel counts; bboxes: (K, 4) int64 ``[x, y, w, h]``.
    """

    method: str
    params: Mapping[str, Any]
    rles: Sequence[Mapping[str, Any]]
    areas: np.ndarray
    bboxes: np.ndarray

    @classmethod
    def from_labels(cls, labels: np.ndarray, method: str, params: Mapping[str, Any]) -> SegmentsData:
        """From an (H, W) dense integer label map (ids 0..K-1)."""
        areas, boxes = algorithms.area_and_bbox(labels)
        rles = algorithms.encode_segments(labels)
        return cls(method, dict(params), rles, areas.astype(np.int64), boxes.astype(np.int64))

    @classmethod
    def from_rles(cls, rles: Sequence[Mapping[str, Any]], method: str, params: Mapping[str, Any]) -> SegmentsData:
        """From COCO compressed RLEs (areas and boxes computed from the runs)."""
        rles = [{"size": [int(v) for v in r["size"]], "counts": _counts_text(r["counts"])} for r in rles]
        areas, boxes = algorithms.segment_areas(rles), algorithms.segment_bboxes(rles).astype(np.int64)
        return cls(method, dict(params), rles, areas, boxes)


def _counts_text(counts: Any) -> str:
    if isinstance(counts, bytes | bytearray):
        return bytes(counts).decode("ascii")
    if not isinstance(counts, str):
        raise ValueError("shards store compressed RLE counts (str or bytes), not uncompressed count lists")
    return counts


@dataclass(frozen=True)
class GroundTruthData:
    """Ground-truth segments of a COCO image: a dense partition like ``SegmentsData`` plus, per segment, the
    annotation id and category id shown (-1 and -1 for the background segment)."""

    rles: Sequence[Mapping[str, Any]]
    areas: np.ndarray
    bboxes: np.ndarray
    annotation_ids: Sequence[int]
    category_ids: Sequence[int]
    method: str = "coco-instances"

    @classmethod
    def from_annotations(
        cls, annotations: Sequence[Mapping[str, Any]], height: int, width: int, *, include_crowd: bool = False
    ) -> GroundTruthData:
        """From one image's COCO annotation dicts (see ``proposals.annotations_to_labels`` for the painting)."""
        rles, ann_ids = algorithms.annotations_to_rles(list(annotations), height, width,
                                                       include_crowd=include_crowd)
        category = {a["id"]: int(a.get("category_id", -1)) for a in annotations}
        cats = [category[i] if i != -1 else -1 for i in ann_ids]
        areas, boxes = algorithms.segment_areas(rles), algorithms.segment_bboxes(rles).astype(np.int64)
        return cls(rles, areas, boxes, list(ann_ids), cats)


@dataclass(frozen=True)
class InstancesData:
    """Every usable COCO instance of an image, masked or not, in annotation id order.

    Attributes:
        annotation_ids, category_ids: (N,) ints, COCO ``id`` and ``category_id``.
        bboxes: (N, 4) whole-number pixel-covering ``[x, y, w, h]`` inside the image (COCO ``bbox`` rounded
            outwards and clipped: ``proposals.groundtruth.coco_box``).
        iscrowd: (N,) 0/1, COCO's ``iscrowd``.
        has_mask: (N,) 0/1: 1 when the instance shows in the ground-truth partition (its id is among
            ``GroundTruthData.annotation_ids``); 0 without a valid segmentation, for crowds (not painted) and for
            instances fully hidden by smaller ones.
    """

    annotation_ids: Sequence[int]
    category_ids: Sequence[int]
    bboxes: np.ndarray
    iscrowd: Sequence[int]
    has_mask: Sequence[int]

    @classmethod
    def from_instances(cls, instances: Sequence[Any], ground_truth: GroundTruthData) -> InstancesData:
        """From ``proposals.groundtruth.image_instances``'s instances and the image's ground truth."""
        shown = {int(i) for i in ground_truth.annotation_ids if i != -1}
        anns = [inst.annotation for inst in instances]
        return cls(
            [int(a["id"]) for a in anns],
            [int(a["category_id"]) for a in anns],
            np.asarray([inst.bbox for inst in instances], np.int64).reshape(-1, 4),
            [int(a.get("iscrowd", 0)) for a in anns],
            [int(int(a["id"]) in shown) for a in anns],
        )


@dataclass(frozen=True)
class FilterKeep:
    """Which proposals a named filter keeps: ``keep`` (M,) int64 ascending indices; ``used`` the filter that
    produced them (the name itself, a fallback, or ``"whole-image"`` when nothing survived)."""

    used: str
    keep: np.ndarray


@dataclass(frozen=True)
class ProposalsData:
    """Proposals in hierarchy order.

    Attributes:
        method: e.g. ``"selective_search"``; params: incl. the variant (JSON-native values).
        boxes: (N, 4) whole-number ``[x, y, w, h]``; sizes: (N,) int region sizes (-1 unknown);
        levels: (N,) int hierarchy levels (-1 unknown); filters: name → ``FilterKeep``.
    """

    method: str
    params: Mapping[str, Any]
    boxes: np.ndarray
    sizes: np.ndarray
    levels: np.ndarray
    filters: Mapping[str, FilterKeep] = field(default_factory=dict)

    @classmethod
    def from_proposals(
        cls,
        proposals: algorithms.Proposals,
        filters: Sequence[str],
        method: str = "selective_search",
        params: Mapping[str, Any] | None = None,
    ) -> ProposalsData:
        """From a ``proposals.Proposals`` and the named filters to record (``apply_filter`` with fallbacks)."""
        kept = {}
        for name in filters:
            mask, used = algorithms.apply_filter(proposals.boxes, proposals.image_size, name)
            kept[name] = FilterKeep(used, np.flatnonzero(mask).astype(np.int64))
        return cls(method, dict(params or {}), proposals.boxes, proposals.sizes, proposals.levels, kept)


@dataclass(frozen=True)
class InputRecord:
    """One input assigned to a shard.

    An ``ok`` record carries the original image bytes, the sniffed PIL format (``"JPEG"``, ``"PNG"``, ...),
    the stored PIL mode, the stored width/height, and whatever was computed; a ``failed`` record carries a
    short ``reason`` code and a human ``detail`` (and no image).
    """

    key: str
    source: Source
    status: str = STATUS_OK
    reason: str | None = None
    detail: str | None = None
    image: bytes | None = None
    image_format: str | None = None
    image_mode: str | None = None
    width: int | None = None
    height: int | None = None
    segments: SegmentsData | None = None
    proposals: ProposalsData | None = None
    ground_truth: GroundTruthData | None = None
    instances: InstancesData | None = None

    @classmethod
    def failed(cls, key: str, source: Source, reason: str, detail: str) -> InputRecord:
        """A failed input: it gets an index row with the reason and no sample in the tar."""
        return cls(key, source, STATUS_FAILED, reason, detail)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


__all__ = [
    "STATUS_FAILED",
    "STATUS_OK",
    "FilterKeep",
    "GroundTruthData",
    "InputRecord",
    "InstancesData",
    "ProposalsData",
    "SegmentsData",
    "Source",
]
