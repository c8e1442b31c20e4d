"""The algorithms: FH segments, selective-search proposals, SoCo filters, the COCO-RLE codec, ground-truth
segments from COCO annotations and proposal quality. Arrays in, arrays out; no I/O."""

from .fh import BACKENDS, felzenszwalb, relabel_raster_order
from .filters import (
    NAMED_FILTERS,
    BoxFilter,
    apply_filter,
    dedupe_boxes,
    filter_boxes,
    named_filter,
    whole_image_box,
)
from .groundtruth import annotation_to_mask, annotations_to_labels, annotations_to_rles
from .quality import average_best_overlap, best_overlap, box_iou, box_recall, mask_best_iou
from .rle import (
    area_and_bbox,
    counts_to_string,
    decode_mask,
    decode_segments,
    encode_segments,
    rle_to_counts,
    segment_areas,
    segment_bboxes,
)
from .ss import VARIANTS, Proposals, selective_search

__all__ = [
    "BACKENDS",
    "NAMED_FILTERS",
    "VARIANTS",
    "BoxFilter",
    "Proposals",
    "annotation_to_mask",
    "annotations_to_labels",
    "annotations_to_rles",
    "apply_filter",
    "area_and_bbox",
    "average_best_overlap",
    "best_overlap",
    "box_iou",
    "box_recall",
    "counts_to_string",
    "decode_mask",
    "decode_segments",
    "dedupe_boxes",
    "encode_segments",
    "felzenszwalb",
    "filter_boxes",
    "mask_best_iou",
    "named_filter",
    "relabel_raster_order",
    "rle_to_counts",
    "segment_areas",
    "segment_bboxes",
    "selective_search",
    "whole_image_box",
]


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every numba kernel by running each public function once on a
    tiny image: ≈ 12 s the first time on a machine, ≈ 0.4 s once cached. Call it once per process before
    timing anything, or in a driver before starting workers so that they find the cache filled."""
    import numpy as np

    rgb = np.random.default_rng(0).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    labels = felzenszwalb(rgb, 50, 0.8, 10)
    decode_segments(encode_segments(labels))
    area_and_bbox(labels)
    selective_search(rgb, 50, 0.8, 10)


__all__ += ["warm_up"]
