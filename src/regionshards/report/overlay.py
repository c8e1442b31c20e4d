"""``regionshards show``: overlay pictures of stored samples (PIL + numpy).

Each picture has two panels over the original image and a caption with the counts:

* left, the segments: each segment id filled in its own colour at 50 % opacity, with a 1-pixel white outline
  wherever the label changes between horizontal or vertical neighbours. Colours are a fixed function of the id
  (``segment_colours``: golden-ratio hue steps with three saturation/value levels), so id k has the same colour
  in every picture and neighbouring ids differ clearly;
* right, the proposals: every box (or those a named filter keeps, with its fallbacks; a "whole-image" fallback
  draws the whole image) as a semi-transparent outline, more transparent the more boxes there are.

Pictures are scaled so the longer side is at most ``max_side`` pixels (tiny images are enlarged by a whole
factor, nearest neighbour, so their pixels stay visible); masks and boxes are scaled with the image.

The ``--views`` mode (the two augmented views the trainer yields) lives in ``views``, built on these helpers.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..images import decode_image
from ..proposals import decode_segments
from ..shards.checks import printable
from .dataset import ReportSample, check_filter, choose_samples, find_samples, naming, open_report_dataset

GOLDEN = 0.6180339887498949
_SAT = np.array([0.80, 0.55, 0.95])
_VAL = np.array([0.95, 0.75, 0.60])
SEGMENT_ALPHA = 0.5
CAPTION_LINE = 17  # caption line height and the gap between panels, in pixels
GAP = 6


def segment_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours of segment ids 0..n-1: hue ``k * golden ratio mod 1``, saturation cycling over 3
    levels with ``k``, value over 3 levels with ``k // 3``; the same for every image and run."""
    k = np.arange(n)
    h, s, v = (k * GOLDEN) % 1.0, _SAT[k % 3], _VAL[(k // 3) % 3]
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [np.stack(c, axis=1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    rgb = np.select([i[:, None] == j for j in range(6)], choices) if n else np.zeros((0, 3))
    return np.rint(rgb * 255).astype(np.uint8)


def _font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _scale(height: int, width: int, max_side: int, min_side: int) -> float:
    long = max(height, width)
    if long > max_side:
        return max_side / long
    if long < min_side:
        return float(math.ceil(min_side / long))
    return 1.0


def _resample_index(n: int, scale: float, size: int) -> np.ndarray:
    return np.minimum((np.arange(n) / scale).astype(np.int64), size - 1)


def display_image(rgb: np.ndarray, max_side: int, min_side: int) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """``rgb`` at display size: ``(shown, scale, rows, cols)``, where ``rows`` / ``cols`` index a same-size label
    map nearest (reduced with Lanczos above ``max_side``, enlarged by a whole factor below ``min_side``)."""
    h, w = rgb.shape[:2]
    s = _scale(h, w, max_side, min_side)
    dh, dw = max(1, round(h * s)), max(1, round(w * s))
    rows, cols = _resample_index(dh, s, h), _resample_index(dw, s, w)
    if s < 1:
        shown = np.asarray(Image.fromarray(rgb).resize((dw, dh), Image.Resampling.LANCZOS))
    else:
        shown = rgb[rows][:, cols]
    return shown, s, rows, cols


def draw_caption(canvas: Image.Image, lines: Sequence[str], top: int) -> None:
    """Write ``lines`` (``CAPTION_LINE`` pixels apart) on ``canvas`` from ``top``, dark grey on its background."""
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for i, line in enumerate(lines):
        draw.text((4, top + i * CAPTION_LINE), line, fill=(20, 20, 20), font=font)


def segments_panel(rgb: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """(h, w, 3) uint8: ``rgb`` with each label's colour blended in and white outlines where labels change.

    Args:
        rgb: (h, w, 3) uint8 image at display size; labels: (h, w) int label map at the same size, or None.
    """
    if labels is None:
        return rgb.copy()
    colours = segment_colours(int(labels.max()) + 1)
    out = (rgb * (1 - SEGMENT_ALPHA) + colours[labels] * SEGMENT_ALPHA).astype(np.uint8)
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    out[edge] = 255
    return out


def boxes_panel(rgb: np.ndarray, boxes: np.ndarray, scale: float) -> Image.Image:
    """The image with ``boxes`` ((N, 4) pixel-covering ``[x, y, w, h]`` in stored-image pixels) drawn as
    semi-transparent outlines in the segment colour sequence; opacity falls as N grows."""
    base = Image.fromarray(rgb).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    n = len(boxes)
    alpha = 220 if n <= 20 else max(60, int(220 * math.sqrt(20 / n)))
    width = 2 if min(base.size) >= 200 else 1
    for colour, (x, y, w, h) in zip(segment_colours(n), np.asarray(boxes).reshape(-1, 4), strict=True):
        x0, y0 = int(round(x * scale)), int(round(y * scale))
        x1, y1 = int(round((x + w) * scale)) - 1, int(round((y + h) * scale)) - 1
        draw.rectangle((x0, y0, max(x0, x1), max(y0, y1)), outline=(*colour.tolist(), alpha), width=width)
    return Image.alpha_composite(base, layer).convert("RGB")


def selected_boxes(meta: dict, filter_name: str | None) -> tuple[np.ndarray, str]:
    """The boxes to draw and a caption fragment: all proposals, or those ``filter_name`` keeps (with fallbacks;
    the whole image when its selection is "whole-image")."""
    props = meta.get("proposals")
    if not props:
        return np.zeros((0, 4), np.int64), "no proposals stored"
    boxes = np.asarray(props["boxes"], np.int64).reshape(-1, 4)
    variant = props.get("params", {}).get("variant", props["method"])
    if filter_name is None:
        return boxes, f"all {len(boxes)} proposals ({variant})"
    f = props["filters"].get(filter_name)
    if f is None:
        known = sorted(props["filters"])
        raise ValueError(f"sample {meta['key']!r} records no filter {filter_name!r} (it has {known})")
    if f["used"] == "whole-image":
        whole = np.array([[0, 0, meta["image"]["width"], meta["image"]["height"]]], np.int64)
        return whole, f"0 of {len(boxes)} proposals ({variant}) pass {filter_name}: whole-image fallback"
    kept = boxes[np.asarray(f["keep"], np.int64)]
    via = "" if f["used"] == filter_name else f" via fallback {f['used']}"
    return kept, f"{len(kept)} of {len(boxes)} proposals ({variant}) kept by {filter_name}{via}"


def render_overlay(sample: ReportSample, filter_name: str | None = None, *, max_side: int = 640,
                   min_side: int = 256) -> Image.Image:
    """The overlay picture of one sample (segments left, boxes right, caption below) as an RGB PIL image."""
    meta = sample.meta
    rgb = decode_image(sample.image).rgb
    h, w = rgb.shape[:2]
    shown, s, rows, cols = display_image(rgb, max_side, min_side)
    dh, dw = shown.shape[:2]
    seg = meta.get("segments")
    labels = decode_segments(seg["rles"])[rows][:, cols] if seg else None
    left = segments_panel(shown, labels)
    boxes, box_text = selected_boxes(meta, filter_name)
    right = boxes_panel(shown, boxes, s)
    seg_text = f"{len(seg['rles'])} segments ({seg['method']})" if seg else "no segments stored"
    lines = [f"{sample.key}  {w}x{h}" + (f"  {meta['source']['path']}" if meta["source"].get("path") else ""),
             f"left: {seg_text}", f"right: {box_text}"]
    canvas = Image.new("RGB", (2 * dw + GAP, dh + GAP + CAPTION_LINE * len(lines) + 4), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, 0))
    canvas.paste(right, (dw + GAP, 0))
    draw_caption(canvas, [printable(line) for line in lines], dh + GAP)  # dataset strings: escaped
    return canvas


def overlay_png(sample: ReportSample, filter_name: str | None = None, **options: int) -> bytes:
    """``render_overlay`` as PNG bytes (no metadata: the same sample gives the same bytes)."""
    buf = io.BytesIO()
    render_overlay(sample, filter_name, **options).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def pick_samples(path: str | os.PathLike[str], keys: Sequence[str] = (), n: int = 6, seed: int = 0,
                 filter_name: str | None = None) -> list[ReportSample]:
    """The samples named by ``keys``, else ``n`` drawn with ``seed`` (see ``dataset.choose_samples``).

    Raises:
        FileNotFoundError: no such dataset; KeyError: an unknown or failed key; ValueError: an unknown filter.
    """
    ds = open_report_dataset(path)
    check_filter(ds, filter_name)
    return find_samples(ds, keys) if keys else choose_samples(ds, n, seed)


def show(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, keys: Sequence[str] = (), n: int = 6,
         seed: int = 0, filter_name: str | None = None) -> list[Path]:
    """Write ``<key>.png`` (``<key>-<filter>.png`` with a filter) overlays into ``out_dir``; returns the paths.

    Pictures of the trainer's augmented views (``--views``) are ``views.show_views``.
    """
    samples = pick_samples(path, keys, n, seed, filter_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in samples:
        target = out / (f"{sample.key}-{filter_name}.png" if filter_name else f"{sample.key}.png")
        with naming(sample):
            target.write_bytes(overlay_png(sample, filter_name))
        paths.append(target)
    return paths
