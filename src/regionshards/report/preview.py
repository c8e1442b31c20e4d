"""Segments and proposals for a handful of image files, with quality against COCO annotations when given.

This is the quick look a person takes before a build: each image is computed by the build's own per-image
function with the build's own config (handed in by the command, since report/ does not import builder/), on files
named directly, written as JSON Lines and summarised in a readable table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..proposals import average_best_overlap, box_recall, decode_segments, mask_best_iou
from ..proposals.groundtruth import annotation_to_mask, usable_annotations
from ..shards.records import InputRecord

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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


def record_json(record: InputRecord) -> dict[str, Any]:
    """An ok ``InputRecord`` (what the build stores) as the JSON-ready dict of one preview line."""
    out: dict[str, Any] = {"width": record.width, "height": record.height}
    if record.segments is not None:
        seg = record.segments
        out["segments"] = {"method": seg.method, "rles": [dict(r) for r in seg.rles], "areas": seg.areas.tolist(),
                           "bboxes": seg.bboxes.tolist()}
    if record.proposals is not None:
        props = record.proposals
        out["proposals"] = {"variant": props.params.get("variant"), "boxes": props.boxes.tolist(),
                            "sizes": props.sizes.tolist(), "levels": props.levels.tolist()}
        out["filters"] = {name: {"used": f.used, "keep": f.keep.tolist()} for name, f in props.filters.items()}
    return out


def _valid_box(box: Any) -> bool:
    if not isinstance(box, list | tuple) or len(box) != 4:
        return False
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
        return False
    return bool(np.all(np.isfinite(box))) and box[2] >= 0 and box[3] >= 0


def evaluate(record: dict[str, Any], annotations: list[dict]) -> dict[str, Any]:
    """Box recall at IoU 0.5/0.7 and ABO of the proposals, and best IoU per ground-truth mask of the segments."""
    gt = [a for a in annotations if isinstance(a, dict) and not a.get("iscrowd", 0)]
    boxed = [a["bbox"] for a in gt if _valid_box(a.get("bbox"))]
    result: dict[str, Any] = {"gt_boxes": len(boxed)}
    if "proposals" in record and boxed:
        boxes = np.asarray(record["proposals"]["boxes"], dtype=np.float64).reshape(-1, 4)
        gt_boxes = np.asarray(boxed, dtype=np.float64)
        recall = box_recall(boxes, gt_boxes, (0.5, 0.7))
        result.update(recall_05=recall[0.5], recall_07=recall[0.7], abo=average_best_overlap(boxes, gt_boxes))
    if "segments" in record and record["segments"]["method"] == "fh":
        labels = decode_segments(record["segments"]["rles"])
        h, w = labels.shape
        masked, _ = usable_annotations(gt, h, w)  # validated before pycocotools sees them
    else:
        masked = []
    if masked:
        gt_masks = np.stack([annotation_to_mask(a, h, w) for a in masked])
        result["mask_best_iou"] = mask_best_iou(labels, gt_masks).tolist()
    return result


# The build's own per-image function, handed in by the caller (report/ never imports builder/): path and that
# image's annotations (None when not annotated) → (ok or failed InputRecord, a note, seconds per stage).
Compute = Callable[[Path, "list[dict] | None"], "tuple[InputRecord, str | None, dict[str, float]]"]


def preview(
    paths: Iterable[Path], compute: Compute, annotations: Path | None = None
) -> Iterator[tuple[dict[str, Any], Summary]]:
    """Yield ``(record, running summary)`` per image file, each computed by ``compute`` exactly as a build
    computes it; failures are records with a reason, never dropped."""
    anns = load_annotations(annotations) if annotations else {}
    summary = Summary()
    for path in find_images(paths):
        summary.inputs += 1
        record: dict[str, Any] = {"path": str(path)}
        image_anns = anns[path.name][1] if path.name in anns else None
        result, note, seconds = compute(path, image_anns)
        if not result.ok:
            summary.failed[result.reason] = summary.failed.get(result.reason, 0) + 1
            record.update(status="failed", reason=result.reason, detail=result.detail)
            yield record, summary
            continue
        record.update(status="ok", format=result.image_format, mode=result.image_mode, **record_json(result))
        if note:
            record["note"] = note
        summary.ok += 1
        for stage, s in seconds.items():
            summary.seconds[stage] = summary.seconds.get(stage, 0.0) + s
        if "segments" in record:
            summary.segments_per_image.append(len(record["segments"]["rles"]))
        if "proposals" in record:
            summary.proposals_per_image.append(len(record["proposals"]["boxes"]))
            for name, f in record["filters"].items():
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
