"""``regionshards show --views``: what DetCon's augmentation yields for a stored sample. The pictures are drawn
out of plain arrays that the caller's ``augment`` callable returns; the CLI passes the trainer's own
(``trainer.preview.views_augmenter``, i.e. ``make_pair`` and its ``transforms`` / ``masks``), so the picture is
what training sees. This module never imports the trainer (nor torch).

One picture per sample, top to bottom:

* the original image with the two crops as rectangles (in stored pixels, after snapping to the grid of the
  reduced JPEG decode), labelled 1 and 2 (``f`` when the view is flipped);
* one row per view: the augmented view (as the caller gives it: the trainer's is normalised as in training, then
  de-normalised for display), its segment map (the view's label map in the overlays' stable colours with white
  outlines) and the feature grid (e.g. 7x7) of majority ids, each cell showing its id; cells whose id is among the
  K sampled ids are bright, others faded;
* a caption: sizes, crop boxes, flips, decode scale, the ids present on each grid and the ids sampled.

``augment(key, meta, image_bytes, seed)`` returns an object with the arrays ``boxes`` (2, 4) int ``[x, y, w, h]``
in stored pixels, ``flips`` (two bools), ``scale`` (int, the decode scale), ``images`` (2, S, S, 3) uint8,
``labels`` (2, S, S) int, ``grids`` (2, G, G) int, ``ids`` (2, K) int; S, G and K for the caption come from these
shapes, the method's name from ``method``.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw

from ..images import decode_image
from .dataset import ReportSample, naming
from .overlay import (
    CAPTION_LINE,
    GAP,
    _font,
    boxes_panel,
    display_image,
    draw_caption,
    pick_samples,
    segment_colours,
    segments_panel,
)


class ViewPair(Protocol):
    """The two views of one sample as plain arrays (shapes in the module docstring)."""

    boxes: np.ndarray
    flips: Sequence[bool]
    scale: int
    images: np.ndarray
    labels: np.ndarray
    grids: np.ndarray
    ids: np.ndarray


Augment = Callable[[str, dict[str, Any], bytes, int], ViewPair]
"""``augment(key, meta, image_bytes, seed)`` → the sample's two views; raises ValueError for a sample it cannot
augment (e.g. no partition to draw masks from)."""

MIN_PANEL = 160  # views smaller than this are enlarged by a whole factor (nearest) for display
FADED = 0.65  # how much white covers grid cells whose id was not sampled


def grid_panel(grid: np.ndarray, sampled: np.ndarray, side: int) -> Image.Image:
    """(side, side) picture of a (G, G) id grid: cells in the segment colours with white outlines between ids,
    faded unless their id is in ``sampled``, each labelled with its id."""
    g = grid.shape[0]
    cell = side // g
    up = np.kron(grid, np.ones((cell, cell), np.int64))
    rgb = segments_panel(np.full((*up.shape, 3), 255, np.uint8), up).astype(np.float64)
    faded = ~np.isin(up, sampled)
    rgb[faded] = rgb[faded] * (1 - FADED) + 255 * FADED
    panel = Image.new("RGB", (side, side), (255, 255, 255))
    panel.paste(Image.fromarray(rgb.astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(panel)
    font = _font(max(8, min(13, cell // 2)))
    for r in range(g):
        for c in range(g):
            colour = (150, 150, 150) if faded[r * cell, c * cell] else (0, 0, 0)
            draw.text((c * cell + 2, r * cell + 1), str(int(grid[r, c])), fill=colour, font=font)
    return panel


def _ids_text(ids: Sequence[int]) -> str:
    values, counts = np.unique(np.asarray(ids), return_counts=True)
    return " ".join(f"{v}" + (f"x{n}" if n > 1 else "") for v, n in zip(values.tolist(), counts.tolist(),
                                                                         strict=True))


def render_views(sample: ReportSample, augment: Augment, seed: int = 0, method: str = "DetCon") -> Image.Image:
    """The views picture of one sample (see the module docstring) as an RGB PIL image; ``augment`` draws the
    views with ``seed``, ``method`` names them in the caption."""
    pair = augment(sample.key, sample.meta, sample.image, seed)
    s = pair.images.shape[1]
    panel = s * (math.ceil(MIN_PANEL / s) if s < MIN_PANEL else 1)
    width = 3 * panel + 2 * GAP
    rgb = decode_image(sample.image).rgb
    h, w = rgb.shape[:2]
    shown, scale, _, _ = display_image(rgb, width, panel)
    if shown.shape[0] > 2 * panel:  # tall images: keep the original at most two panels high
        shown, scale, _, _ = display_image(rgb, max(1, int(2 * panel * max(h, w) / h)), panel)
    top = boxes_panel(shown, pair.boxes, scale)
    draw = ImageDraw.Draw(top)
    colours = segment_colours(2)  # boxes_panel draws box i in colour i
    for v, (x, y, _, _) in enumerate(pair.boxes.tolist()):
        label = f"{v + 1}" + ("f" if pair.flips[v] else "")
        draw.text((round(x * scale) + 3, round(y * scale) + 2), label, fill=tuple(colours[v].tolist()),
                  font=_font(14))
    g = pair.grids.shape[1]
    lines = [f"{sample.key}  {w}x{h}  {method} views, seed {seed}: {s}x{s} images, {g}x{g} grid, "
             f"K={pair.ids.shape[1]}, decoded at 1/{pair.scale}",
             "rows: view 1, view 2; columns: augmented view (de-normalised), its segment map, majority grid "
             "(sampled ids bright)"]
    for v in range(2):
        x, y, bw, bh = pair.boxes[v].tolist()
        present = np.unique(pair.grids[v]).tolist()
        text = (f"view {v + 1}: crop x={x} y={y} w={bw} h={bh}, flip {'yes' if pair.flips[v] else 'no'}; "
                f"ids present ({len(present)}): {' '.join(map(str, present))}; sampled: {_ids_text(pair.ids[v])}")
        lines.append(text)
    lines = [part for line in lines for part in textwrap.wrap(line, max(40, width // 7), subsequent_indent="  ")]
    top_h = top.height
    body = top_h + GAP + 2 * (panel + GAP)
    canvas = Image.new("RGB", (width, body + CAPTION_LINE * len(lines) + 4), (255, 255, 255))
    canvas.paste(top, (0, 0))
    f = panel // s
    for v in range(2):
        row = top_h + GAP + v * (panel + GAP)
        image = np.repeat(np.repeat(pair.images[v], f, axis=0), f, axis=1)
        labels = np.repeat(np.repeat(pair.labels[v], f, axis=0), f, axis=1)
        canvas.paste(Image.fromarray(image), (0, row))
        canvas.paste(Image.fromarray(segments_panel(image, labels)), (panel + GAP, row))
        canvas.paste(grid_panel(pair.grids[v], pair.ids[v], panel), (2 * (panel + GAP), row))
    draw_caption(canvas, lines, body)
    return canvas


def views_png(sample: ReportSample, augment: Augment, seed: int = 0, method: str = "DetCon") -> bytes:
    """``render_views`` as PNG bytes (no metadata: the same sample, augmentation and seed give the same bytes)."""
    buf = io.BytesIO()
    render_views(sample, augment, seed, method).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def show_views(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, keys: Sequence[str] = (),
               n: int = 6, seed: int = 0, augment: Augment, method: str = "DetCon") -> list[Path]:
    """Write ``<key>-views.png`` pictures into ``out_dir`` (samples by key, else ``n`` drawn with ``seed``, which
    also seeds ``augment``); returns the paths.

    Raises:
        ``overlay.pick_samples``' errors; ValueError: a sample ``augment`` cannot draw views of.
    """
    samples = pick_samples(path, keys, n, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in samples:
        target = out / f"{sample.key}-views.png"
        with naming(sample):
            target.write_bytes(views_png(sample, augment, seed, method))
        paths.append(target)
    return paths
