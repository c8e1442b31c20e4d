"""One shard sample → DetCon's two views: parse the segments, decode the image (reduced when the crops allow),
crop/flip/resize image and mask together, colour-augment, and reduce each view mask to the feature grid with
K sampled ids. numpy/cv2 only; randomness comes from the caller's ``numpy.random.Generator``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..images import decode_image
from ..proposals import decode_segments
from .config import TrainConfig
from .masks import sample_ids, view_grid
from .transforms import Crop, colour_augment, dct_scale, mask_positions, resize_image, sample_crop, snap

_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}
_DECODER = json.JSONDecoder()
_SOURCE_TAIL = ',"source":'


def parse_partition(raw: bytes | str, which: str = "segments") -> dict[str, Any]:
    """The ``segments`` (or ``ground_truth``) object of a sample JSON member, parsing as little as possible.

    Sample JSON is canonical (format §3: compact, keys sorted), so the top-level ``"segments":`` is the last
    occurrence of that text (``"`` inside strings is escaped, and only ``source`` follows it). The fast path
    parses just that value and checks that the rest of the document is exactly ``,"source":{...}}``; anything
    else (non-canonical JSON, a nested key of the same name) falls back to parsing the whole document.

    Raises:
        ValueError: invalid JSON, or the sample has no such partition (e.g. built with ``--segments none``).
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    needle = f'"{which}":'
    part: Any = None
    found = False
    at = text.rfind(needle) if which == "segments" else -1
    if at >= 0:
        try:
            part, end = _DECODER.raw_decode(text, at + len(needle))
            if text.startswith(_SOURCE_TAIL, end):
                tail = json.loads("{" + text[end + 1 :])
                found = isinstance(tail, dict) and list(tail) == ["source"]
        except json.JSONDecodeError:
            found = False
    if not found:
        meta = json.loads(text)
        part = meta.get(which) if isinstance(meta, dict) else None
    if not isinstance(part, dict) or not part.get("rles"):
        raise ValueError(f"the sample has no {which} (DetCon needs a segment partition)")
    return part


def decode_for_crops(data: bytes, field: str, height: int, width: int, scale: int) -> tuple[np.ndarray, int, bool]:
    """Decode image bytes for crops that allow DCT scale ``scale``.

    Returns ``(image, scale_used, bgr)``: an (h, w, 3) uint8 array of ``ceil(height / s) x ceil(width / s)``
    pixels. JPEG goes through OpenCV (``IMREAD_REDUCED_COLOR_s``, EXIF orientation ignored as the format
    requires, BGR order); anything else, or a JPEG OpenCV cannot read at the expected size, through
    ``regionshards.images.decode_image`` at full size (RGB).

    Raises:
        ValueError: the decoded size differs from the segments' size.
    """
    if field == "jpg":
        flags = _REDUCED_FLAGS[scale] | cv2.IMREAD_IGNORE_ORIENTATION
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        expected = (math.ceil(height / scale), math.ceil(width / scale))
        if image is not None and image.ndim == 3 and image.shape[:2] == expected and image.shape[2] == 3:
            return image, scale, True
    rgb = decode_image(data).rgb
    if rgb.shape[:2] != (height, width):
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but its segments are {width}x{height}")
    return rgb, 1, False


@dataclass
class PairBuffers:
    """Preallocated batch arrays the sample pipeline writes into (index ``i`` = sample in the batch).

    images: (2, B, S, S, 3) uint8 RGB; grids: (2, B, G, G) int64 majority ids; ids: (2, B, K) int64 sampled ids.
    """

    images: np.ndarray
    grids: np.ndarray
    ids: np.ndarray


def make_pair(sample: dict[str, Any], cfg: TrainConfig, rng: np.random.Generator, out: PairBuffers, i: int) -> None:
    """Fill slot ``i`` of ``out`` with the two views of a shard sample (``iter_shard(parse_json=False)`` dict).

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
    image, scale, bgr = decode_for_crops(sample[field], field, height, width, dct_scale(crops, size))
    labels = decode_segments(part["rles"])
    for v, crop in enumerate(crops):
        grid_crop: Crop = snap(crop, scale, image.shape[0], image.shape[1])
        view = resize_image(image, grid_crop, size)
        if bgr:
            view = cv2.cvtColor(view, cv2.COLOR_BGR2RGB)
        out.images[0 if v == 0 else 1, i] = view
        rows, cols = mask_positions(grid_crop, scale, labels.shape, size)
        out.grids[v, i] = view_grid(labels, rows, cols, cfg.feature_stride, len(part["rles"]))
    if cfg.colour:
        for v in range(2):
            out.images[v, i] = colour_augment(out.images[v, i], rng, cfg.views[v])
    for v in range(2):
        out.ids[v, i] = sample_ids(out.grids[v, i], cfg.num_masks, rng)
