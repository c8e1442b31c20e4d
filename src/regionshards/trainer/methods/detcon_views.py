"""Shard samples → DetCon's batches: per sample parse the segments, decode the image (reduced when the crops
allow), crop/flip/resize image and mask together, colour-augment, and reduce each view mask to the feature grid
with K sampled ids. numpy/cv2 only; randomness comes from the caller's ``numpy.random.Generator``.

Batch (``make_batch``): ``view0``/``view1`` uint8 (B, 3, S, S) in channels_last layout, ``grid0``/``grid1``
int64 (B, G, G) majority segment ids, ``ids0``/``ids1`` int64 (B, K) sampled ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...proposals.rle import segment_runs
from ..config import TrainConfig
from ..decode import decode_for_crops, parse_partition
from ..transforms import Crop, colour_augment, dct_scale, mask_positions, resize_image, sample_crop, snap
from .detcon_masks import runs_grid, sample_ids


@dataclass
class PairBuffers:
    """Preallocated batch arrays the sample pipeline writes into (index ``i`` = sample in the batch).

    images: (2, B, S, S, 3) uint8 RGB; grids: (2, B, G, G) int64 majority ids; ids: (2, B, K) int64 sampled ids.
    """

    images: np.ndarray
    grids: np.ndarray
    ids: np.ndarray


def make_pair(sample: dict[str, Any], cfg: TrainConfig, rng: np.random.Generator, out: PairBuffers, i: int) -> None:
    """Fill slot ``i`` of ``out`` with the two views of a shard sample (its JSON parsed and validated, as
    ``shards.validated_sample`` gives it; raw JSON bytes are parsed here).

    Draw order (fixed, so a batch is reproducible from its generator): crop+flip of view 0, of view 1, colour of
    view 0, of view 1, ids of view 0, of view 1.
    """
    meta = sample["json"]
    part = meta[cfg.mask_source] if isinstance(meta, dict) else parse_partition(meta, cfg.mask_source)
    if not part or not part.get("rles"):
        raise ValueError(f"sample {sample.get('__key__')!r} has no {cfg.mask_source}")
    field = next(f for f in sample if not f.startswith("__") and f != "json")
    height, width = (int(v) for v in part["rles"][0]["size"])
    size = cfg.image_size
    crops = [sample_crop(rng, height, width, cfg.views[v]) for v in range(2)]
    image, scale = decode_for_crops(sample[field], field, height, width, dct_scale(crops, size))
    starts, segs, _, _ = segment_runs(part["rles"])  # the map's runs, checked to tile it; never painted
    for v, crop in enumerate(crops):
        grid_crop: Crop = snap(crop, scale, image.shape[0], image.shape[1])
        resize_image(image, grid_crop, size, out=out.images[v, i])
        rows, cols = mask_positions(grid_crop, scale, (height, width), size)
        out.grids[v, i] = runs_grid(starts, segs, height, width, rows, cols, cfg.feature_stride,
                                    len(part["rles"]))
    if cfg.colour:
        for v in range(2):
            out.images[v, i] = colour_augment(out.images[v, i], rng, cfg.views[v])
    for v in range(2):
        out.ids[v, i] = sample_ids(out.grids[v, i], cfg.num_masks, rng)


def make_batch(samples: Sequence[dict[str, Any]], cfg: TrainConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Decode and augment a batch (keys in the module docstring); tensors own torch memory, so loader workers
    hand them over through shared memory."""
    n, s, g, k = len(samples), cfg.image_size, cfg.grid_size, cfg.num_masks
    images = torch.empty((2, n, s, s, 3), dtype=torch.uint8)
    grids = torch.empty((2, n, g, g), dtype=torch.int64)
    ids = torch.empty((2, n, k), dtype=torch.int64)
    buf = PairBuffers(images.numpy(), grids.numpy(), ids.numpy())
    for i, sample in enumerate(samples):
        try:
            make_pair(sample, cfg, rng, buf, i)
        except ValueError as exc:
            raise ValueError(f"{sample.get('__url__')}: sample {sample.get('__key__')!r}: {exc}") from exc
    views = images.permute(0, 1, 4, 2, 3)  # (2, B, 3, S, S) with channels_last strides
    return {"view0": views[0], "view1": views[1], "grid0": grids[0], "grid1": grids[1], "ids0": ids[0],
            "ids1": ids[1]}
