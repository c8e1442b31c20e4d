"""``regionshards show --views``: what DetCon's augmentation yields for a stored sample, drawn with the trainer's
own code (``trainer.samples.make_pair`` and its ``transforms`` / ``masks``), so the picture is what training sees.

One picture per sample, top to bottom:

* the original image with the two crops as rectangles (in stored pixels, after snapping to the grid of the
  reduced JPEG decode), labelled 1 and 2 (``f`` when the view is flipped);
* one row per view: the augmented ``image_size`` view (normalised as in training with ``trainer.transforms.
  normalize``, then de-normalised for display), its segment map (the view's label map, sampled nearest at the
  positions the trainer uses, in the overlays' stable colours with white outlines) and the feature grid (e.g.
  7x7) of majority ids, each cell showing its id; cells whose id is among the K sampled ids are bright, others
  faded;
* a caption: sizes, crop boxes, flips, decode scale, the ids present on each grid and the ids sampled.

The augmentation draws from ``numpy.random.default_rng(seed)`` per sample. Needs the ``train`` extra (torch):
torch and the trainer are imported only when a views picture is drawn.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from ..trainer.config import TrainConfig
    from ..trainer.preview import AugmentedPair

MIN_PANEL = 160  # views smaller than this are enlarged by a whole factor (nearest) for display
FADED = 0.65  # how much white covers grid cells whose id was not sampled


class TrainExtraMissing(ImportError):
    """``--views`` was asked for without torch (the ``train`` extra)."""


def require_train_extra() -> None:
    """Check that torch is importable, or raise ``TrainExtraMissing`` saying how to install it."""
    from ..trainer.preview import require_torch

    try:
        require_torch()
    except ImportError as exc:
        raise TrainExtraMissing("regionshards show --views needs the train extra (torch): "
                                "pip install 'regionshards[train]'") from exc


def trainer_sample(sample: ReportSample) -> dict[str, Any]:
    """The ``iter_shard`` dict ``make_pair`` takes (JSON parsed, image under its stored field)."""
    return {"__key__": sample.key, "json": sample.meta, sample.meta["image"]["field"]: sample.image}


def augment_pair(sample: ReportSample, cfg: TrainConfig, seed: int) -> AugmentedPair:
    """DetCon's two views of ``sample`` as the trainer makes them with ``default_rng(seed)`` (see
    ``trainer.preview.augment_pair``).

    Raises:
        TrainExtraMissing: no torch; ValueError: the sample has no ``cfg.mask_source`` partition.
    """
    require_train_extra()
    from ..trainer.preview import augment_pair as trainer_augment_pair

    return trainer_augment_pair(sample.key, sample.meta, sample.image, cfg, seed)


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


def render_views(sample: ReportSample, cfg: TrainConfig | None = None, seed: int = 0) -> Image.Image:
    """The views picture of one sample (see the module docstring) as an RGB PIL image."""
    require_train_extra()
    from ..trainer.config import TrainConfig

    cfg = cfg or TrainConfig()
    pair = augment_pair(sample, cfg, seed)
    s = cfg.image_size
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
    g = cfg.grid_size
    lines = [f"{sample.key}  {w}x{h}  {cfg.method} views, seed {seed}: {s}x{s} images, {g}x{g} grid, "
             f"K={cfg.num_masks}, decoded at 1/{pair.scale}",
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


def views_png(sample: ReportSample, cfg: TrainConfig | None = None, seed: int = 0) -> bytes:
    """``render_views`` as PNG bytes (no metadata: the same sample and seed give the same bytes)."""
    buf = io.BytesIO()
    render_views(sample, cfg, seed).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def show_views(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, keys: Sequence[str] = (),
               n: int = 6, seed: int = 0, cfg: TrainConfig | None = None) -> list[Path]:
    """Write ``<key>-views.png`` pictures into ``out_dir`` (samples by key, else ``n`` drawn with ``seed``, which
    also seeds the augmentation); returns the paths.

    Raises:
        TrainExtraMissing: no torch (checked before reading anything); plus ``overlay.pick_samples``' errors.
    """
    require_train_extra()
    samples = pick_samples(path, keys, n, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in samples:
        target = out / f"{sample.key}-views.png"
        with naming(sample):
            target.write_bytes(views_png(sample, cfg, seed))
        paths.append(target)
    return paths
