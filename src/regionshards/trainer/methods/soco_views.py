"""One shard sample → SoCo's (or SoCo*'s) views and their matched proposal boxes, and whole batches (Wei et
al. 2021, Sec. 3.1; hologerry/SoCo ``contrast/data/transform.py`` and ``contrast/data/dataset.py``).

Per sample, with a generator of the batch (draw order fixed, so a batch is reproducible from its seed):

1. crops: V1 = the whole image (flip p ``views[0].flip_p``), V2 and V3 random resized crops (area
   ``soco.crop_scale``, aspect ``soco.crop_ratio``, flip p ``views[1].flip_p``); SoCo*: V4 = V2's crop with a
   flip of its own. The image is decoded once (JPEG DCT scaling when every view allows it).
2. boxes, per pair (V1, V2), (V1, V3): K = ``soco.num_boxes`` proposals among the filter's kept boxes that
   overlap V1 ∩ Vj (``boxes.sample_boxes``: without replacement, padded with duplicates), the V1 copies jittered
   (``boxes.jitter``; duplicates share their jitter, as SoCo jitters before padding); each side clipped to its
   crop and carried into its view's pixels (``boxes.to_view``); an FPN level per box and view
   (``boxes.assign_levels``). SoCo*'s pair (V1, V4) reuses pair (V1, V2)'s boxes, as the reference does.
3. colour: V1 with ``views[0]`` (BYOL view 1: blur 1.0, no solarize), the others with ``views[1]``.

Batch (``make_batch``): ``view0`` … ``view{V-1}`` uint8 (B, 3, S_v, S_v) channels_last (S_v from
``SoCoConfig.view_sizes``), ``boxes`` float32 (P, 2, B, K, 4) view-pixel corners ``[x0, y0, x1, y1]`` (pair p:
side 0 in V1, side 1 in view p + 1), ``levels`` int64 (P, 2, B, K) (0 = P2 … 3 = P5) and ``box_ids`` int64
(P, 2, B, K), per side (the proposal's index in the sample, -1 for a whole-image or intersection box; equal ids
across the two sides are the positives of the loss).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig, ViewConfig
from ..decode import DecodedImage, sample_meta
from ..transforms import Crop, colour_augment, sample_crop
from . import method_spec
from .soco_boxes import (
    assign_levels,
    candidate_boxes,
    clip,
    crop_corners,
    cutout_in_boxes,
    enough_overlap,
    intersection,
    jitter,
    sample_boxes,
    to_view,
    whole_image,
)


def is_star(cfg: TrainConfig) -> bool:
    """SoCo*'s four views (the method table's ``star`` option)."""
    return bool(method_spec(cfg.method).option("star"))


def is_c4(cfg: TrainConfig) -> bool:
    """SoCo-C4's two views (the method table's ``c4`` option)."""
    return bool(method_spec(cfg.method).option("c4"))


def view_sizes(cfg: TrainConfig) -> tuple[int, ...]:
    """Output side of each view (V1, V2[, V3[, V4]])."""
    sizes = cfg.soco.view_sizes(cfg.image_size, is_star(cfg))
    return sizes[:2] if is_c4(cfg) else sizes


def pair_views(cfg: TrainConfig) -> tuple[int, ...]:
    """The view paired with V1 in each pair: (1, 2) for SoCo, (1, 2, 3) for SoCo*, (1,) for SoCo-C4."""
    if is_c4(cfg):
        return (1,)
    return (1, 2, 3) if is_star(cfg) else (1, 2)


def cut_views(cfg: TrainConfig) -> tuple[int, ...]:
    """The pairs whose second view gets box cutout: V2 and V3 (SoCo-C4: V2; never SoCo*'s V4, whose recipe
    has no cutout)."""
    return tuple(p for p, v in enumerate(pair_views(cfg)) if not (is_star(cfg) and v == 3))


def crop_view_config(cfg: TrainConfig) -> ViewConfig:
    """``views[1]`` with SoCo's crop area and aspect ranges."""
    return dataclasses.replace(cfg.views[1], crop_scale=tuple(cfg.soco.crop_scale),
                               crop_ratio=tuple(cfg.soco.crop_ratio))


@dataclass
class SoCoBuffers:
    """Preallocated batch arrays (index i = sample): ``images[v]`` (B, S_v, S_v, 3) uint8 RGB; ``boxes``
    (P, 2, B, K, 4) float32; ``levels`` (P, 2, B, K) int64; ``ids`` (P, B, K) int64."""

    images: list[np.ndarray]
    boxes: np.ndarray
    levels: np.ndarray
    ids: np.ndarray


def draw_crops(rng: np.random.Generator, height: int, width: int, cfg: TrainConfig) -> list[Crop]:
    """The stored-pixel crops of V1 (whole image), V2, V3 (not SoCo-C4) and, for SoCo*, V4 (V2's crop, own
    flip)."""
    crop_cfg = crop_view_config(cfg)
    crops = [Crop(0, 0, height, width, bool(rng.random() < cfg.views[0].flip_p))]
    crops += [sample_crop(rng, height, width, crop_cfg) for _ in range(1 if is_c4(cfg) else 2)]
    if is_star(cfg):
        v2 = crops[1]
        crops.append(Crop(v2.y, v2.x, v2.h, v2.w, bool(rng.random() < crop_cfg.flip_p)))
    return crops


def draw_overlapping_crops(rng: np.random.Generator, height: int, width: int, cfg: TrainConfig,
                           candidates: np.ndarray) -> list[Crop]:
    """``draw_crops`` again, up to ``soco.max_tries`` draws in all, until every pair's V1 ∩ Vj overlaps enough
    proposals (SoCo's loader: ``least_common`` = max(K // 2, 1), halved after each failed try; the last draw is
    kept when none passes)."""
    sc = cfg.soco
    least = max(sc.num_boxes // 2, 1)
    for _ in range(sc.max_tries):
        crops = draw_crops(rng, height, width, cfg)
        v1 = crop_corners(crops[0])
        regions = [intersection(v1, crop_corners(crops[v])) for v in pair_views(cfg) if not (is_star(cfg) and v == 3)]
        if enough_overlap(candidates, regions, sc.num_boxes, least):
            break
        least = max(least // 2, 1)
    return crops


def _pad_again(boxes: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """V1's copies of a pair's K boxes with their padding drawn anew: the distinct proposals come first
    (``sample_boxes``), the rest are duplicates drawn uniformly from them — independently of the other view's,
    as SoCo's ``pad_bboxs_with_common`` pads each view on its own."""
    unique = len(np.unique(ids))
    if unique >= len(ids):
        return boxes, ids
    order = np.concatenate([np.arange(unique), rng.integers(0, unique, size=len(ids) - unique)])
    return boxes[order], ids[order]


def _shared_jitter(boxes: np.ndarray, ids: np.ndarray, rng: np.random.Generator, p: float,
                   ratio: float) -> np.ndarray:
    """Jitter (K, 4) boxes so that duplicates (equal ids) share one jitter."""
    moved = jitter(boxes, rng, p, ratio)
    first = np.array([int(np.argmax(ids == i)) for i in ids])
    return moved[first]


def make_soco_sample(sample: dict[str, Any], cfg: TrainConfig, rng: np.random.Generator, out: SoCoBuffers,
                     i: int) -> None:
    """Fill slot ``i`` of ``out`` from one ``iter_shard`` sample (see the module docstring for the steps)."""
    sc = cfg.soco
    meta, field, height, width = sample_meta(sample)
    sizes = view_sizes(cfg)
    candidates, ids, _ = candidate_boxes(meta.get("proposals"), sc.proposal_filter, height, width)
    crops = draw_overlapping_crops(rng, height, width, cfg, candidates)
    image = DecodedImage(sample[field], field, height, width, crops, sizes)
    grid = [image.grid_crop(c) for c in crops]
    frame = whole_image(height, width)[0]
    first_pair: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    for p, v in enumerate(pair_views(cfg)):
        if is_star(cfg) and v == 3:
            assert first_pair is not None
            boxes_v1, boxes_v, ids_v1, box_ids = first_pair  # SoCo*: V4 is V2 resized, with V2's boxes
        else:
            region = intersection(crop_corners(grid[0], image.scale), crop_corners(grid[v], image.scale))
            boxes_v, box_ids = sample_boxes(candidates, ids, region, sc.num_boxes, rng)
            boxes_v1 = _shared_jitter(boxes_v, box_ids, rng, sc.jitter_p, sc.jitter_ratio)
            clipped = clip(boxes_v1, frame)
            empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
            boxes_v1 = np.where(empty[:, None], boxes_v, clipped)
            ids_v1 = box_ids
            if sc.pad_independently:
                boxes_v1, ids_v1 = _pad_again(boxes_v1, box_ids, rng)
            if p == 0:
                first_pair = (boxes_v1, boxes_v, ids_v1, box_ids)
        for side, (view, b) in enumerate(((0, boxes_v1), (v, boxes_v))):
            mapped = to_view(b, grid[view], image.scale, sizes[view], (height, width))
            out.boxes[p, side, i] = mapped
            out.levels[p, side, i] = assign_levels(mapped, sc.level_thresholds)
        out.ids[p, 0, i] = ids_v1
        out.ids[p, 1, i] = box_ids
    for v, crop in enumerate(grid):
        out.images[v][i] = image.view(crop, sizes[v])
    if cfg.colour:
        for v in range(len(grid)):
            out.images[v][i] = colour_augment(out.images[v][i], rng, cfg.views[0 if v == 0 else 1])
    if sc.cutout_p > 0:  # after colour, on the flipped view boxes, as the reference
        fill = np.round(np.asarray(cfg.mean) * 255).astype(np.uint8)
        for p in cut_views(cfg):
            view = pair_views(cfg)[p]
            cutout_in_boxes(out.images[view][i], out.boxes[p, 1, i], rng, sc.cutout_p, sc.cutout_ratio, fill)


def make_batch(samples: Sequence[dict[str, Any]], cfg: TrainConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Decode and augment a batch (see the module docstring for the keys); tensors own torch memory."""
    n, k = len(samples), cfg.soco.num_boxes
    sizes, pairs = view_sizes(cfg), len(pair_views(cfg))
    images = [torch.empty((n, s, s, 3), dtype=torch.uint8) for s in sizes]
    boxes = torch.empty((pairs, 2, n, k, 4), dtype=torch.float32)
    levels = torch.empty((pairs, 2, n, k), dtype=torch.int64)
    ids = torch.empty((pairs, 2, n, k), dtype=torch.int64)
    buf = SoCoBuffers([im.numpy() for im in images], boxes.numpy(), levels.numpy(), ids.numpy())
    for i, sample in enumerate(samples):
        try:
            make_soco_sample(sample, cfg, rng, buf, i)
        except ValueError as exc:
            raise ValueError(f"{sample.get('__url__')}: sample {sample.get('__key__')!r}: {exc}") from exc
    batch: dict[str, Any] = {f"view{v}": im.permute(0, 3, 1, 2) for v, im in enumerate(images)}
    batch.update(boxes=boxes, levels=levels, box_ids=ids)
    return batch
