"""Segments and proposals for a handful of image files, with quality against COCO annotations when given.

This is the quick look a person takes before a build: the same computation a shard build does per image,
on files named directly, written as JSON Lines and summarised in a readable table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..images import DEFAULT_MAX_PIXELS, ImageError, decode_image
from ..proposals import (
    NAMED_FILTERS,
    annotations_to_labels,
    apply_filter,
    average_best_overlap,
    box_recall,
    decode_segments,
    encode_segments,
    felzenszwalb,
    mask_best_iou,
    segment_areas,
    segment_bboxes,
    selective_search,
)
from ..proposals.groundtruth import annotation_to_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class ProposalConfig:
    """What to compute per image; defaults are the papers' (DetCon FH, SoCo selective search)."""

    segments: str = "fh"  # fh | gt | none
    fh_scale: float = 1000
    fh_sigma: float = 0.8
    fh_min_size: int = 1000
    fh_backend: str = "exact"
    proposals: str = "soco"  # soco | alpacadb | opencv-fast | opencv-quality | none
    ss_scale: float = 300
    ss_sigma: float = 0.9
    ss_min_size: int = 100
    filters: tuple[str, ...] = ("ratio3size0308",)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def validate(self) -> None:
        if self.segments not in ("fh", "gt", "none"):
            raise ValueError(f"segments must be fh, gt or none; got {self.segments!r}")
        if self.proposals not in ("soco", "alpacadb", "opencv-fast", "opencv-quality", "none"):
            raise ValueError(f"unknown proposals {self.proposals!r}")
        for name in self.filters:
            if name not in NAMED_FILTERS:
                raise ValueError(f"unknown filter {name!r}; choose from {sorted(NAMED_FILTERS)}")


@dataclass
class Summary:
    inputs: int = 0
    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    segments_per_image: list[int] = field(default_factory=list)
    proposals_per_image: list[int] = field(default_factory=list)
    kept_per_image: dict[str, list[int]] = field(default_factory=dict)
    recall_05: list[float] = field(default_factory=list)
    recall_07: list[float] = field(default_factory=list)
    abo: list[float] = field(default_factory=list)
    mask_best_iou: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def find_images(paths: Iterable[Path]) -> list[Path]:
    """Image files named directly or found under folders, in sorted order; a missing path raises."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return found


def load_annotations(path: Path) -> dict[str, tuple[dict, list[dict]]]:
    """COCO instances JSON → {file_name: (image entry, [annotations])} (JSON only, never pickle)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    by_id = {img["id"]: (img, []) for img in data.get("images", [])}
    for ann in data.get("annotations", []):
        if ann["image_id"] not in by_id:
            raise ValueError(f"{path}: annotation {ann.get('id')} names unknown image_id {ann['image_id']}")
        by_id[ann["image_id"]][1].append(ann)
    return {img["file_name"]: (img, anns) for img, anns in by_id.values()}


def process_image(
    rgb: np.ndarray, config: ProposalConfig, annotations: list[dict] | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Segments, proposals and filter selections of one (H, W, 3) uint8 image, as a JSON-ready dict."""
    h, w = rgb.shape[:2]
    out: dict[str, Any] = {"width": w, "height": h}
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    labels = None
    if config.segments == "fh":
        labels = felzenszwalb(rgb, config.fh_scale, config.fh_sigma, config.fh_min_size, backend=config.fh_backend)
    elif config.segments == "gt":
        if annotations is None:
            raise ValueError("segments 'gt' needs COCO annotations for the image")
        labels, _ = annotations_to_labels(annotations, h, w)
    if labels is not None:
        rles = encode_segments(labels)
        out["segments"] = {
            "method": config.segments,
            "rles": rles,
            "areas": segment_areas(rles).tolist(),
            "bboxes": segment_bboxes(rles).tolist(),
        }
    seconds["segments"] = time.perf_counter() - t
    t = time.perf_counter()
    if config.proposals != "none":
        params = {} if config.proposals.startswith("opencv") else {
            "scale": config.ss_scale, "sigma": config.ss_sigma, "min_size": config.ss_min_size}
        props = selective_search(rgb, variant=config.proposals, **params)  # type: ignore[arg-type]
        out["proposals"] = {
            "variant": config.proposals,
            "boxes": props.boxes.tolist(),
            "sizes": props.sizes.tolist(),
            "levels": props.levels.tolist(),
        }
        out["filters"] = {}
        for name in config.filters:
            keep, used = apply_filter(props.boxes, (h, w), name)
            out["filters"][name] = {"used": used, "keep": np.flatnonzero(keep).tolist()}
    seconds["proposals"] = time.perf_counter() - t
    return out, seconds


def evaluate(record: dict[str, Any], annotations: list[dict]) -> dict[str, Any]:
    """Box recall at IoU 0.5/0.7 and ABO of the proposals, and best IoU per ground-truth mask of the segments."""
    gt = [a for a in annotations if not a.get("iscrowd", 0)]
    result: dict[str, Any] = {"gt_boxes": len(gt)}
    if "proposals" in record and gt:
        boxes = np.asarray(record["proposals"]["boxes"], dtype=np.float64).reshape(-1, 4)
        gt_boxes = np.asarray([a["bbox"] for a in gt], dtype=np.float64)
        recall = box_recall(boxes, gt_boxes, (0.5, 0.7))
        result.update(recall_05=recall[0.5], recall_07=recall[0.7], abo=average_best_overlap(boxes, gt_boxes))
    masked = [a for a in gt if a.get("segmentation")]
    if "segments" in record and record["segments"]["method"] == "fh" and masked:
        labels = decode_segments(record["segments"]["rles"])
        h, w = labels.shape
        gt_masks = np.stack([annotation_to_mask(a, h, w) for a in masked])
        result["mask_best_iou"] = mask_best_iou(labels, gt_masks).tolist()
    return result


def preview(
    paths: Iterable[Path], config: ProposalConfig, annotations: Path | None = None
) -> Iterator[tuple[dict[str, Any], Summary]]:
    """Yield ``(record, running summary)`` per image file; failures are records with a reason, never dropped."""
    config.validate()
    if config.segments == "gt" and annotations is None:
        raise ValueError("segments 'gt' needs --annotations (a COCO instances JSON)")
    anns = load_annotations(annotations) if annotations else {}
    summary = Summary()
    for path in find_images(paths):
        summary.inputs += 1
        record: dict[str, Any] = {"path": str(path)}
        image_anns = anns[path.name][1] if path.name in anns else None
        try:
            if config.segments == "gt" and image_anns is None:
                raise ImageError("not-annotated", f"{path.name} is not an image of {annotations}")
            t = time.perf_counter()
            decoded = decode_image(path.read_bytes(), config.max_pixels)
            decode_s = time.perf_counter() - t
            result, seconds = process_image(decoded.rgb, config, image_anns)
            seconds["decode"] = decode_s
        except ImageError as exc:
            summary.failed[exc.reason] = summary.failed.get(exc.reason, 0) + 1
            record.update(status="failed", reason=exc.reason, detail=exc.detail)
            yield record, summary
            continue
        record.update(status="ok", format=decoded.format, mode=decoded.mode, **result)
        summary.ok += 1
        for stage, s in seconds.items():
            summary.seconds[stage] = summary.seconds.get(stage, 0.0) + s
        if "segments" in result:
            summary.segments_per_image.append(len(result["segments"]["rles"]))
        if "proposals" in result:
            summary.proposals_per_image.append(len(result["proposals"]["boxes"]))
            for name, f in result["filters"].items():
                summary.kept_per_image.setdefault(name, []).append(len(f["keep"]))
        if image_anns is not None:
            ev = evaluate(record, image_anns)
            record["eval"] = ev
            for key in ("recall_05", "recall_07", "abo"):
                if key in ev:
                    getattr(summary, key).append(ev[key])
            summary.mask_best_iou.extend(ev.get("mask_best_iou", []))
        yield record, summary


def summary_dict(summary: Summary) -> dict[str, Any]:
    return asdict(summary)
