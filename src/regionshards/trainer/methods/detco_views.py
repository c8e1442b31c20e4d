"""One shard sample → DetCo's views (Xie et al. 2021, Sec. 3.2): two global views and two jigsaw patch sets.
Images only: the sample needs no segments or proposals (a build with ``--segments none --proposals none`` trains).

Per sample, with the batch's generator (draw order fixed): the crops of the query and key global views, then of
the query and key jigsaw crops (all ``detco.view``: MoCo v2's random resized crop, area [0.2, 1], and flip);
the image is decoded once (DCT scaling when every view allows it). Global views are resized to ``image_size``;
each jigsaw crop is resized to ``jigsaw`` (255 at 224 px), cut into ``grid`` x ``grid`` cells (85 px) and a
random ``patch`` (64 px) square taken from each cell, row by row. Then colour: the two global views, then the
9 query patches, then the 9 key patches, **each patch augmented on its own** (MoCo v2: jitter p 0.8
(0.4, 0.4, 0.4, 0.1), grayscale p 0.2, blur p 0.5).

Batch (``make_batch``): ``view0``/``view1`` uint8 (B, 3, S, S) (query, key) and ``local0``/``local1``
uint8 (B, G², 3, P, P) patches (query, key), channels_last strides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig, ViewConfig
from ..decode import DecodedImage, sample_meta
from ..transforms import colour_augment, sample_crop


def detco_view(cfg: TrainConfig) -> ViewConfig:
    """MoCo v2's augmentations as a ``ViewConfig`` (from ``detco.view``)."""
    return ViewConfig(**cfg.detco.view)


@dataclass
class DetCoBuffers:
    """Preallocated batch arrays: ``images`` (2, B, S, S, 3) and ``patches`` (2, B, G², P, P, 3) uint8 RGB."""

    images: np.ndarray
    patches: np.ndarray


def jigsaw_offsets(rng: np.random.Generator, grid: int, cell: int, patch: int) -> np.ndarray:
    """(G², 2) int64 top-left (row, column) of each cell's random patch in the jigsaw crop, cells row by row."""
    cells = np.arange(grid * grid)
    corner = np.stack([cells // grid, cells % grid], axis=1) * cell
    return corner + rng.integers(0, cell - patch + 1, size=(grid * grid, 2))


def make_detco_sample(sample: dict[str, Any], cfg: TrainConfig, rng: np.random.Generator, out: DetCoBuffers,
                      i: int) -> None:
    """Fill slot ``i`` of ``out`` from one ``iter_shard`` sample (see the module docstring)."""
    view = detco_view(cfg)
    _, field, height, width = sample_meta(sample)
    size = cfg.image_size
    jigsaw, patch = cfg.detco.sizes(size)
    grid = cfg.detco.grid
    crops = [sample_crop(rng, height, width, view) for _ in range(4)]  # global q, k; jigsaw q, k
    image = DecodedImage(sample[field], field, height, width, crops, [size, size, jigsaw, jigsaw])
    for v in range(2):
        out.images[v, i] = image.view(image.grid_crop(crops[v]), size)
    for v in range(2):
        big = image.view(image.grid_crop(crops[2 + v]), jigsaw)
        for c, (y, x) in enumerate(jigsaw_offsets(rng, grid, jigsaw // grid, patch)):
            out.patches[v, i, c] = big[y : y + patch, x : x + patch]
    if cfg.colour:
        for v in range(2):
            out.images[v, i] = colour_augment(out.images[v, i], rng, view)
        for v in range(2):
            for c in range(grid * grid):
                out.patches[v, i, c] = colour_augment(out.patches[v, i, c], rng, view)


def make_batch(samples: Sequence[dict[str, Any]], cfg: TrainConfig, rng: np.random.Generator
                     ) -> dict[str, Any]:
    """Decode and augment a batch (keys in the module docstring); tensors own torch memory."""
    n, size = len(samples), cfg.image_size
    _, patch = cfg.detco.sizes(size)
    cells = cfg.detco.grid ** 2
    images = torch.empty((2, n, size, size, 3), dtype=torch.uint8)
    patches = torch.empty((2, n, cells, patch, patch, 3), dtype=torch.uint8)
    buf = DetCoBuffers(images.numpy(), patches.numpy())
    for i, sample in enumerate(samples):
        try:
            make_detco_sample(sample, cfg, rng, buf, i)
        except ValueError as exc:
            raise ValueError(f"{sample.get('__url__')}: sample {sample.get('__key__')!r}: {exc}") from exc
    views = images.permute(0, 1, 4, 2, 3)
    local = patches.permute(0, 1, 2, 5, 3, 4)
    return {"view0": views[0], "view1": views[1], "local0": local[0], "local1": local[1]}
