"""The algorithms: FH segments, selective-search proposals, SoCo filters, the COCO-RLE codec, ground-truth
segments from COCO annotations and proposal quality. Arrays in, arrays out; no I/O."""

from __future__ import annotations

# Imported on first use (PEP 562): `from regionshards.proposals import NAMED_FILTERS` must not compile or load
# the numba kernels, so that light callers (the CLI's --help, the readers) start fast.
_LAZY = {
    "BACKENDS": "fh",
    "BoxFilter": "filters",
    "NAMED_FILTERS": "filters",
    "Proposals": "ss",
    "VARIANTS": "ss",
    "annotation_to_mask": "groundtruth",
    "annotations_to_labels": "groundtruth",
    "annotations_to_rles": "groundtruth",
    "apply_filter": "filters",
    "area_and_bbox": "rle",
    "average_best_overlap": "quality",
    "best_overlap": "quality",
    "box_iou": "quality",
    "box_recall": "quality",
    "counts_to_string": "rle",
    "decode_mask": "rle",
    "decode_segments": "rle",
    "dedupe_boxes": "filters",
    "encode_segments": "rle",
    "felzenszwalb": "fh",
    "felzenszwalb_many": "fh",
    "filter_boxes": "filters",
    "mask_best_iou": "quality",
    "named_filter": "filters",
    "relabel_raster_order": "fh",
    "rle_to_counts": "rle",
    "segment_areas": "rle",
    "segment_bboxes": "rle",
    "segments_and_proposals": "ss",
    "selective_search": "ss",
    "whole_image_box": "filters",
}


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
    "felzenszwalb_many",
    "filter_boxes",
    "mask_best_iou",
    "named_filter",
    "relabel_raster_order",
    "rle_to_counts",
    "segment_areas",
    "segment_bboxes",
    "segments_and_proposals",
    "selective_search",
    "whole_image_box",
]


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every numba kernel by running each public function once on a
    tiny image: ≈ 12 s the first time on a machine, ≈ 0.4 s once cached. Call it once per process before
    timing anything, or in a driver before starting workers so that they find the cache filled."""
    import numpy as np

    from .fh import felzenszwalb
    from .rle import area_and_bbox, decode_segments, encode_segments
    from .ss import selective_search

    rgb = np.random.default_rng(0).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    labels = felzenszwalb(rgb, 50, 0.8, 10)
    decode_segments(encode_segments(labels))
    area_and_bbox(labels)
    selective_search(rgb, 50, 0.8, 10)


__all__ += ["warm_up"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
