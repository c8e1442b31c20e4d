"""``regionshards eval``: proposals and segments of built datasets against COCO instance annotations.

Matching: a sample belongs to the annotation image with its ``source.image_id`` (COCO builds), else to the one
whose ``file_name`` equals its ``source.path`` or, failing that, has the same base name (a base name shared by
two annotation images is an error). A sample and its image must have the same width and height.

Ground truth: the image's annotations without ``iscrowd`` (crowd regions are excluded everywhere). Boxes are the
annotations' ``bbox``; masks are rasterised with ``proposals.annotation_to_mask`` (pycocotools' polygons, no
``mask.decode``).

Per method and selection (rows): the proposal variant (``soco`` ...) with all proposals and with each recorded
filter's stored selection (fallbacks included; a "whole-image" selection is the whole-image box, which is what
the SoCo loader uses, so it counts as one proposal):

* recall at IoU 0.5 / 0.7: found ground-truth boxes over all ground-truth boxes of the matched images (pooled,
  so every object weighs the same), a box is found when its best proposal IoU is >= the threshold;
* ABO: the mean over the same boxes of their best proposal IoU;
* proposals per image: over the matched images.

Per segments method (``fh``, ``gt``): the best IoU of each ground-truth mask over the stored segments (the label
map decoded from the sample's RLEs): mean, fraction >= 0.5, nearest-rank quartiles (within 0.5 % relative,
``sketch.py``) and a 10-bin histogram. IoUs equal ``pycocotools.mask.iou`` (boxes and RLEs).
Annotated images with no sample (e.g. inputs that failed in the build) are listed and left out of every number.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..proposals import annotation_to_mask, best_overlap, decode_segments, mask_best_iou
from ..shards._fs import file_problem, read_regular
from ..shards.checks import printable_values
from ..shards.validate import Limits, load_json
from .dataset import iter_samples, open_report_dataset, recorded_filters
from .sketch import Sketch

THRESHOLDS = (0.5, 0.7)
MAX_ANNOTATION_BYTES = 4 << 30  # COCO train2017 instances: 448 MB
ALL = "all"


@dataclass(frozen=True)
class Annotations:
    """A parsed COCO instances file: images by id, annotations by image id, lookups by file name."""

    path: str
    images: dict[int, dict[str, Any]]
    by_image: dict[int, list[dict[str, Any]]]
    by_file: dict[str, int]
    by_base: dict[str, list[int]]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Annotations:
        """Read ``path`` (JSON only, a regular file within ``MAX_ANNOTATION_BYTES`` and the JSON depth limit).

        Raises:
            FileNotFoundError / ValueError naming the file and the problem (including any image or annotation
            entry without the COCO fields used here).
        """
        p = Path(path)
        if file_problem(p) == "missing":
            raise FileNotFoundError(f"annotations file {path} does not exist")
        try:
            data = load_json(read_regular(p, MAX_ANNOTATION_BYTES), Limits(max_json_bytes=MAX_ANNOTATION_BYTES))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a COCO instances file ({exc})") from None
        problem = _coco_problem(data)
        if problem:
            raise ValueError(f"{path}: not a COCO instances file ({problem})")
        images = {img["id"]: img for img in data["images"]}
        by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
        for ann in data.get("annotations", []):
            if ann.get("image_id") not in by_image:
                raise ValueError(f"{path}: annotation {ann.get('id')} names unknown image_id {ann.get('image_id')}")
            by_image[ann["image_id"]].append(ann)
        by_base: dict[str, list[int]] = {}
        for i, img in images.items():
            by_base.setdefault(PurePosixPath(img["file_name"]).name, []).append(i)
        return cls(os.fspath(path), images, by_image, {img["file_name"]: i for i, img in images.items()}, by_base)

    def match(self, meta: dict[str, Any]) -> int | None:
        """The annotation image id of a sample (see the module docstring), None when it has none."""
        src = meta["source"]
        if src.get("image_id") is not None and int(src["image_id"]) in self.images:
            return int(src["image_id"])
        path = src.get("path")
        if path is None:
            return None
        if path in self.by_file:
            return self.by_file[path]
        ids = self.by_base.get(PurePosixPath(path).name, [])
        if len(ids) > 1:
            names = [self.images[i]["file_name"] for i in ids[:2]]
            raise ValueError(f"{self.path}: sample {meta['key']!r} ({path}) matches several images by name: {names}")
        return ids[0] if ids else None


def _coco_problem(data: Any) -> str | None:
    """What keeps parsed JSON from being a COCO instances file as used here, None when it is one."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return "a JSON object with an 'images' list is expected"
    for img in data["images"]:
        if not (isinstance(img, dict) and _is_int(img.get("id")) and isinstance(img.get("file_name"), str)):
            return f"image entry {str(img)[:60]!r} lacks an integer id or a file_name"
        if any(k in img and not _is_int(img[k]) for k in ("width", "height")):
            return f"image {img['id']}: width and height must be integers"
    anns = data.get("annotations", [])
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        return "'annotations' must be a list of objects"
    for a in anns:
        box = a.get("bbox")
        if box is not None and not (isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
            return f"annotation {str(a.get('id'))[:20]}: bbox must be 4 finite numbers"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class BoxTally:
    """Pooled box numbers of one (dataset, method, selection)."""

    images: int = 0
    proposals: int = 0
    gt: int = 0
    found: dict[float, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLDS, 0))
    best_sum: float = 0.0

    def add(self, n_proposals: int, best: np.ndarray) -> None:
        """One image: its number of proposals and the best IoU of each of its ground-truth boxes."""
        self.images += 1
        self.proposals += n_proposals
        self.gt += best.size
        self.best_sum += float(best.sum())
        for t in THRESHOLDS:
            self.found[t] += int(np.count_nonzero(best >= t))

    def row(self) -> dict[str, Any]:
        recall = {f"recall@{t}": (self.found[t] / self.gt if self.gt else None) for t in THRESHOLDS}
        return {"images": self.images, "gt_boxes": self.gt,
                "proposals_per_image": self.proposals / self.images if self.images else None,
                **recall, "abo": self.best_sum / self.gt if self.gt else None}


@dataclass
class MaskTally:
    """Best IoU per ground-truth mask of one (dataset, segments method), streamed."""

    images: int = 0
    segments: int = 0
    sketch: Sketch = field(default_factory=Sketch)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(10, np.int64))

    def add(self, best: np.ndarray, n_segments: int) -> None:
        self.images += 1
        self.segments += n_segments
        self.sketch.add(best)
        self.histogram += np.bincount(np.minimum((best * 10).astype(np.int64), 9), minlength=10)

    def row(self) -> dict[str, Any]:
        n = self.sketch.count
        best = {"mean": self.sketch.mean if n else None,
                "fraction>=0.5": int(self.histogram[5:].sum()) / n if n else None,
                **{name: (self.sketch.quantile(q) if n else None)
                   for name, q in (("min", 0.0), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("max", 1.0))},
                "histogram": {"edges": [round(0.1 * i, 1) for i in range(11)], "counts": self.histogram.tolist()}}
        return {"images": self.images, "gt_masks": n,
                "segments_per_image": self.segments / self.images if self.images else None, "best_iou": best}


def _gt(anns: list[dict[str, Any]], key: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    objects = [a for a in anns if not a.get("iscrowd", 0)]
    for a in objects:
        if "bbox" not in a:
            raise ValueError(f"annotation {a.get('id')} of sample {key!r} has no bbox")
    boxes = np.asarray([a["bbox"] for a in objects], np.float64).reshape(-1, 4)
    return boxes, [a for a in objects if a.get("segmentation")]


def _selections(meta: dict[str, Any], order: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    props = meta["proposals"]
    boxes = np.asarray(props["boxes"], np.float64).reshape(-1, 4)
    out = [(ALL, boxes)]
    filters = props.get("filters", {})
    for name in [*[f for f in order if f in filters], *sorted(set(filters) - set(order))]:
        f = filters[name]
        if f["used"] == "whole-image":
            out.append((name, np.array([[0, 0, meta["image"]["width"], meta["image"]["height"]]], np.float64)))
        else:
            out.append((name, boxes[np.asarray(f["keep"], np.int64)]))
    return out


@dataclass
class SampleScores:
    """One sample against its annotations.

    Attributes:
        variant: proposal variant (None without proposals); boxes: selection → (number of proposals, (M,) best
        IoU of each non-crowd ground-truth box); segments: segments method (None without segments), n_segments,
        mask_best: (G,) best IoU of each non-crowd ground-truth mask over the segments.
    """

    variant: str | None = None
    boxes: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)
    segments: str | None = None
    n_segments: int = 0
    mask_best: np.ndarray = field(default_factory=lambda: np.zeros(0))


def score_sample(meta: dict[str, Any], anns: list[dict[str, Any]], order: Sequence[str] = ()) -> SampleScores:
    """Best box IoUs per selection and best mask IoUs of one sample (JSON ``meta``) against its image's COCO
    annotations ``anns`` (crowd ones are dropped here); ``order`` orders the filter selections."""
    h, w = meta["image"]["height"], meta["image"]["width"]
    gt_boxes, with_masks = _gt(anns, meta["key"])
    out = SampleScores()
    if meta.get("proposals"):
        out.variant = str(meta["proposals"].get("params", {}).get("variant", meta["proposals"]["method"]))
        out.boxes = {name: (len(sel), best_overlap(sel, gt_boxes)) for name, sel in _selections(meta, order)}
    if meta.get("segments"):
        labels = decode_segments(meta["segments"]["rles"])
        masks = np.stack([annotation_to_mask(a, h, w) for a in with_masks]) if with_masks else \
            np.zeros((0, h, w), np.uint8)
        out.segments, out.n_segments = meta["segments"]["method"], int(labels.max()) + 1
        out.mask_best = mask_best_iou(labels, masks)
    return out


def evaluate_dataset(path: str | os.PathLike[str], ann: Annotations) -> dict[str, Any]:
    """One dataset against ``ann``: ``{"dataset", "matching", "proposals": [rows], "segments": [rows]}``.

    Raises:
        FileNotFoundError: no such dataset; ValueError: no sample matches an annotation image (naming both files),
        a size mismatch or an ambiguous name (naming the sample).
    """
    ds = open_report_dataset(path)
    order = recorded_filters(ds)
    boxes: dict[tuple[str, str], BoxTally] = {}
    masks: dict[str, MaskTally] = {}
    matched: set[int] = set()
    unmatched = crowd = 0
    for sample in iter_samples(ds):
        meta = sample.meta
        image_id = ann.match(meta)
        if image_id is None:
            unmatched += 1
            continue
        img, (h, w) = ann.images[image_id], (meta["image"]["height"], meta["image"]["width"])
        if (img.get("height", h), img.get("width", w)) != (h, w):
            raise ValueError(f"sample {sample.key!r} is {w}x{h} but {ann.path} declares {img.get('file_name')} "
                             f"as {img.get('width')}x{img.get('height')}")
        matched.add(image_id)
        anns = ann.by_image[image_id]
        crowd += sum(1 for a in anns if a.get("iscrowd", 0))
        scores = score_sample(meta, anns, order)
        for name, (n, best) in scores.boxes.items():
            boxes.setdefault((str(scores.variant), name), BoxTally()).add(n, best)
        if scores.segments is not None:
            masks.setdefault(scores.segments, MaskTally()).add(scores.mask_best, scores.n_segments)
    if not matched:
        raise ValueError(f"{ann.path}: none of its {len(ann.images)} images matches a sample of {path} "
                         "(by source.image_id or file name)")
    missing = sorted(set(ann.images) - matched)
    name = os.fspath(path)
    return {
        "dataset": name,
        "matching": {"images_matched": len(matched), "samples_unmatched": unmatched,
                     "annotated_images_missing": len(missing),
                     "missing_examples": [ann.images[i]["file_name"] for i in missing[:5]],
                     "crowd_excluded": crowd},
        "proposals": [{"dataset": name, "method": m, "filter": f, **t.row()} for (m, f), t in boxes.items()],
        "segments": [{"dataset": name, "method": m, **t.row()} for m, t in masks.items()],
    }


def evaluate(paths: Sequence[str | os.PathLike[str]], annotations: str | os.PathLike[str]) -> dict[str, Any]:
    """Every dataset of ``paths`` against one COCO instances file; rows of all datasets together."""
    ann = Annotations.load(annotations)
    results = [evaluate_dataset(p, ann) for p in paths]
    return {
        "annotations": os.fspath(annotations),
        "datasets": [{"dataset": r["dataset"], **r["matching"]} for r in results],
        "proposals": [row for r in results for row in r["proposals"]],
        "segments": [row for r in results for row in r["segments"]],
    }


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_eval(result: dict[str, Any]) -> str:
    """The tables a person reads: matching per dataset, then proposal rows, then segment rows (every string from
    the dataset or the annotations with its control characters escaped)."""
    result = printable_values(result)
    several = len(result["datasets"]) > 1
    lines = [f"annotations {result['annotations']}"]
    for d in result["datasets"]:
        lines.append(f"{d['dataset']}: {d['images_matched']} images matched, {d['samples_unmatched']} samples without "
                     f"annotations, {d['annotated_images_missing']} annotated images not in the dataset"
                     + (f" (e.g. {', '.join(d['missing_examples'])})" if d["missing_examples"] else "")
                     + f"; {d['crowd_excluded']} crowd annotations excluded")
    ds_col = lambda r: f"{Path(r['dataset']).name[:20]:<21}" if several else ""  # noqa: E731
    if result["proposals"]:
        lines += ["", "proposals: box recall pooled over ground-truth objects; a whole-image fallback counts as "
                  "one box"]
        head = (f"{'dataset':<21}" if several else "") + (
            f"{'method':<12} {'filter':<16} {'images':>6} {'gt':>6} {'props/img':>10} {'R@0.5':>7} {'R@0.7':>7}"
            f" {'ABO':>7}")
        lines += [head, "-" * len(head)]
        for r in result["proposals"]:
            lines.append(ds_col(r) + f"{r['method']:<12} {r['filter']:<16} {r['images']:>6} {r['gt_boxes']:>6} "
                         f"{_f(r['proposals_per_image'], 1):>10} {_f(r['recall@0.5']):>7} {_f(r['recall@0.7']):>7}"
                         f" {_f(r['abo']):>7}")
    if result["segments"]:
        lines += ["", "segments: best IoU of each ground-truth mask over the stored segments"]
        head = (f"{'dataset':<21}" if several else "") + (
            f"{'method':<12} {'images':>6} {'masks':>6} {'segs/img':>9} {'mean':>6} {'>=0.5':>6} {'min':>6}"
            f" {'p25':>6} {'median':>6} {'p75':>6} {'max':>6}")
        lines += [head, "-" * len(head)]
        for r in result["segments"]:
            b = r["best_iou"]
            cells = " ".join(f"{_f(b[k]):>6}" for k in ("mean", "fraction>=0.5", "min", "p25", "median", "p75", "max"))
            lines.append(ds_col(r) + f"{r['method']:<12} {r['images']:>6} {r['gt_masks']:>6} "
                         f"{_f(r['segments_per_image'], 1):>9} {cells}")
            counts = b["histogram"]["counts"]
            lines.append((" " * 21 if several else "") + "  best-IoU histogram (0.1 bins): "
                         + " ".join(str(c) for c in counts))
    return "\n".join(lines)
