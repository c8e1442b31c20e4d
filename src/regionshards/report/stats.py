"""``regionshards stats``: what a built dataset holds, in one streaming pass over its shards.

Per image: segments, proposals (raw and kept by each recorded filter), ground-truth instances; per box: width,
height, aspect ``w / h`` and relative size ``sqrt(w h / (W H))`` (SoCo's measure, on the stored pixel-covering
boxes); per segment: its share of the image; per image and selection: the fraction of pixels inside at least one
box; per sample: bytes of the image, of the JSON and of its tar footprint. Counts of ok and failed inputs (by
reason) come from the manifest, throughput from the build's ``summary.json``.

Memory stays flat as the dataset grows: samples are read one at a time (JSON parsed, images never decoded) and
every distribution is a fixed-size ``Sketch`` (exact count/mean/min/max; median and p95 exact for whole numbers
below 4096, else within 0.5 % relative — see ``sketch.py``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..shards.checks import printable, printable_values
from .dataset import ReportSample, iter_samples, open_report_dataset, read_summary, recorded_filters
from .sketch import Sketch

ALL = "all"  # the selection of every proposal, beside the named filters
_STAGES = ("read", "decode", "segments", "proposals", "write")  # the build's stages, in pipeline order


@dataclass
class Distribution:
    """One streamed distribution and how to show it.

    Attributes:
        key: stable name (``proposals.per_image.all``); title: a sentence a reader understands alone;
        unit: what a value measures (x-axis label); log: plot on a log axis; figure: the distributions drawn
        together (one PNG); series: this one's legend name there; per: what is counted (images, boxes ...).
    """

    key: str
    title: str
    unit: str
    sketch: Sketch
    log: bool = False
    figure: str = ""
    series: str = ""
    per: str = "images"
    plot: bool = True


_COVERAGE_CELLS = 1 << 22  # grid cells held at once by box_coverage (16 MiB of int32)


def box_coverage(boxes: np.ndarray, height: int, width: int) -> float:
    """Fraction of the image's pixels inside at least one box; exact (union over compressed coordinates).

    Boxes are clipped to the image first, so the compressed grid has at most (W + 1) x (H + 1) cells whatever
    the boxes say; it is swept in bands of rows holding at most ``_COVERAGE_CELLS`` cells, so memory stays
    bounded (never a (2N)² grid) and time is at most proportional to the image's pixels.

    Args:
        boxes: (N, 4) pixel-covering ``[x, y, w, h]``; N may be 0.
    """
    b = np.asarray(boxes, np.int64).reshape(-1, 4)
    x0, y0 = np.clip(b[:, 0], 0, width), np.clip(b[:, 1], 0, height)
    x1, y1 = np.clip(b[:, 0] + b[:, 2], 0, width), np.clip(b[:, 1] + b[:, 3], 0, height)
    keep = (x1 > x0) & (y1 > y0)
    if not keep.any():
        return 0.0
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    xs, ys = np.unique(np.concatenate([x0, x1])), np.unique(np.concatenate([y0, y1]))
    ix0, ix1, iy0, iy1 = (np.searchsorted(a, v) for a, v in ((xs, x0), (xs, x1), (ys, y0), (ys, y1)))
    # Events of a 2-D difference array, sorted by row: +1 at (y0, x0) and (y1, x1), -1 at (y0, x1) and (y1, x0).
    rows = np.concatenate([iy0, iy0, iy1, iy1])
    cols = np.concatenate([ix0, ix1, ix0, ix1])
    signs = np.repeat(np.array([1, -1, -1, 1], np.int32), iy0.size)
    order = np.argsort(rows, kind="stable")
    rows, cols, signs = rows[order], cols[order], signs[order]
    widths, heights = np.diff(xs), np.diff(ys)
    band = max(1, _COVERAGE_CELLS // xs.size)
    carry = np.zeros(xs.size, np.int32)  # running column sums of the rows above the band
    area = 0
    for top in range(0, ys.size - 1, band):
        bottom = min(top + band, ys.size - 1)
        lo, hi = np.searchsorted(rows, [top, bottom])
        diff = np.zeros((bottom - top, xs.size), np.int32)
        np.add.at(diff, (rows[lo:hi] - top, cols[lo:hi]), signs[lo:hi])
        counts = carry + diff.cumsum(1).cumsum(0)
        carry = counts[-1]
        covered = counts[:, :-1] > 0
        area += int((heights[top:bottom, None] * widths[None, :])[covered].sum())
    return float(area) / (height * width)


@dataclass
class DatasetStats:
    """The result of ``compute_stats``: distributions by key plus the dataset's counts and build numbers."""

    path: str
    manifest: dict[str, Any]
    summary: dict[str, Any] | None
    filters: list[str]
    samples_read: int = 0
    distributions: dict[str, Distribution] = field(default_factory=dict)
    fallbacks: dict[str, Counter[str]] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)

    def dist(self, key: str, title: str, unit: str, *, integer: bool = False, log: bool = False, figure: str = "",
             series: str = "", per: str = "images") -> Distribution:
        """The distribution ``key``, created on first use."""
        if key not in self.distributions:
            # titles and legends carry dataset strings (method, variant, filter names): escaped for terminals/plots
            self.distributions[key] = Distribution(key, printable(title), unit, Sketch(integer), log, figure or key,
                                                   printable(series), per)
        return self.distributions[key]

    def add(self, sample: ReportSample) -> None:
        """Account for one sample (called once per sample, in any order)."""
        meta = sample.meta
        h, w = meta["image"]["height"], meta["image"]["width"]
        self.samples_read += 1
        for part, series, n in (("image", "stored image", len(sample.image)), ("json", "JSON", sample.json_bytes),
                                ("sample", "tar: both + headers", sample.tar_bytes)):
            self.dist(f"bytes.{part}", f"Bytes per sample ({series})", "bytes per sample", integer=True, log=True,
                      figure="bytes", series=series, per="samples").sketch.add(n)
        if meta.get("segments"):
            self._add_segments(meta["segments"], h, w)
        if meta.get("proposals"):
            self._add_proposals(meta["proposals"], h, w)
        gt = meta.get("ground_truth")
        if gt:
            ids = np.asarray(gt["annotation_ids"])
            areas = np.asarray(gt["areas"], np.float64)
            self.dist("ground_truth.per_image", "Annotated instances per image (visible, not crowd)", "instances",
                      integer=True).sketch.add(int(np.count_nonzero(ids != -1)))
            self.dist("ground_truth.coverage", "Fraction of the image covered by annotated instances",
                      "fraction of pixels").sketch.add(float(areas[ids != -1].sum()) / (h * w))

    def _add_segments(self, seg: dict[str, Any], h: int, w: int) -> None:
        self.methods.setdefault("segments", seg["method"])
        areas = np.asarray(seg["areas"], np.float64)
        self.dist("segments.per_image", f"Segments per image ({seg['method']})", "segments per image",
                  integer=True).sketch.add(areas.size)
        self.dist("segments.area_fraction", "Segment area as a fraction of its image", "segment area / image area",
                  log=True, per="segments").sketch.add(areas / (h * w))
        self.dist("segments.largest_fraction", "Share of the image taken by its largest segment",
                  "largest segment area / image area").sketch.add(float(areas.max()) / (h * w))
        self.dist("segments.coverage", "Image fraction covered by segments (1: a partition)",
                  "fraction of pixels").sketch.add(float(areas.sum()) / (h * w))
        self.distributions["segments.coverage"].plot = False  # a partition always covers 1: nothing to draw

    def _add_proposals(self, props: dict[str, Any], h: int, w: int) -> None:
        variant = props.get("params", {}).get("variant", props["method"])
        self.methods.setdefault("proposals", str(variant))
        boxes = np.asarray(props["boxes"], np.int64).reshape(-1, 4)
        filters = props.get("filters", {})
        selections = [(ALL, boxes)]
        for name in [*[f for f in self.filters if f in filters], *sorted(set(filters) - set(self.filters))]:
            f = filters[name]
            self.fallbacks.setdefault(name, Counter())[f["used"]] += 1
            selections.append((name, boxes[np.asarray(f["keep"], np.int64)]))
        for name, sel in selections:
            what = "all" if name == ALL else name
            bw, bh = sel[:, 2].astype(np.float64), sel[:, 3].astype(np.float64)
            for kind, title, unit, values, integer, log, per in (
                ("per_image", "Proposals per image", "proposals per image", len(sel), True, False, "images"),
                ("width", "Box width", "box width (pixels)", bw, True, True, "boxes"),
                ("height", "Box height", "box height (pixels)", bh, True, True, "boxes"),
                ("aspect", "Box aspect ratio w/h", "box width / height", bw / bh, False, True, "boxes"),
                ("relative_size", "Box relative size sqrt(wh/WH)", "sqrt(box area / image area)",
                 np.sqrt(bw * bh / (h * w)), False, False, "boxes"),
                ("coverage", "Image fraction inside >= 1 box", "fraction of the image's pixels inside a box",
                 box_coverage(sel, h, w), False, False, "images"),
            ):
                self.dist(f"proposals.{kind}.{name}", f"{title} ({what})", unit, integer=integer, log=log,
                          figure=f"proposals.{kind}", series=what, per=per).sketch.add(values)

    # ------------------------------------------------------------------------------------------- output

    def ordered(self) -> list[Distribution]:
        """Distributions grouped by figure (in order of first appearance), series in order within each."""
        first: dict[str, int] = {}
        for i, d in enumerate(self.distributions.values()):
            first.setdefault(d.figure, i)
        return sorted(self.distributions.values(), key=lambda d: first[d.figure])

    def figures(self) -> dict[str, list[Distribution]]:
        """``{figure: [distribution, ...]}`` in display order (what ``plots`` draws, one PNG each)."""
        out: dict[str, list[Distribution]] = {}
        for d in self.ordered():
            if d.plot:
                out.setdefault(d.figure, []).append(d)
        return out

    @property
    def totals(self) -> dict[str, Any]:
        return self.manifest.get("totals", {})

    def throughput(self) -> dict[str, Any] | None:
        """Build throughput from ``summary.json``: images/s, wall, CPUs, core-seconds by stage and per input."""
        s = self.summary
        if not s:
            return None
        stages = s.get("core_seconds", {})
        order = [k for k in _STAGES if k in stages] + sorted(set(stages) - set(_STAGES))
        core = {k: float(stages[k]) for k in order}
        out = {"images_per_second": s.get("images_per_second"), "wall_seconds": s.get("wall_seconds"),
               "cpus": s.get("cpus"), "shards_reused": s.get("shards_reused", 0), "core_seconds": core}
        if not s.get("shards_reused") and s.get("inputs"):
            out["core_ms_per_input"] = {k: 1000 * v / s["inputs"] for k, v in core.items()}
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-native summary: counts, methods, every distribution's count/mean/min/median/p95/max."""
        t = self.totals
        return {
            "dataset": self.path,
            "images": {"inputs": t.get("inputs"), "ok": t.get("samples"), "failed": t.get("failures"),
                       "failure_reasons": dict(t.get("failure_reasons", {}))},
            "shards": t.get("shards"),
            "bytes": t.get("bytes"),
            "samples_read": self.samples_read,
            "methods": dict(self.methods),
            "filters": list(self.filters),
            "filter_used": {k: dict(sorted(v.items())) for k, v in self.fallbacks.items()},
            "distributions": {d.key: {"title": d.title, "unit": d.unit, "per": d.per, **d.sketch.summary()}
                              for d in self.ordered()},
            "throughput": self.throughput(),
            "precision": "count, mean, min, max exact; median and p95 are nearest-rank (lower middle for an even "
                         "count), exact for whole numbers below 4096, else within 0.5% relative (fixed log buckets)",
        }


def compute_stats(path: str | os.PathLike[str]) -> DatasetStats:
    """Stream every sample of the dataset at ``path`` into a ``DatasetStats``.

    Raises:
        FileNotFoundError: the folder does not exist or holds no manifest (the message names it).
        ShardError: a damaged shard (naming it).
        ValueError: the samples read disagree with the manifest's sample count.
    """
    ds = open_report_dataset(path)
    stats = DatasetStats(os.fspath(path), ds.manifest or {}, read_summary(ds), recorded_filters(ds))
    for sample in iter_samples(ds):
        stats.add(sample)
    expected = ds.num_samples
    if expected is not None and expected != stats.samples_read:
        raise ValueError(f"{path}: read {stats.samples_read} samples, the manifest promises {expected}")
    return stats


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    if v == 0 or 0.01 <= abs(v) < 1e6:
        return f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:.3g}"


def format_stats(stats: DatasetStats) -> str:
    """The report a person reads: counts, methods, throughput, then one row per distribution (every string from
    the dataset with its control characters escaped)."""
    j = printable_values(stats.to_json())
    im = j["images"]
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(im["failure_reasons"].items()))
    lines = [
        f"dataset {j['dataset']}: {j['shards']} shards, {(j['bytes'] or 0) / 2**20:.1f} MiB",
        f"images: {im['inputs']} inputs = {im['ok']} ok + {im['failed']} failed" + (f" ({reasons})" if reasons else ""),
    ]
    methods = ", ".join(f"{k} {v}" for k, v in j["methods"].items())
    lines.append(f"methods: {methods or 'none'}; filters recorded: {', '.join(j['filters']) or 'none'} "
                 "(rows per filter describe its stored selection, fallbacks included)")
    for name, used in j["filter_used"].items():
        parts = [f"own selection in {used.get(name, 0)} images"]
        parts += [f"fallback {k} in {v}" for k, v in used.items() if k != name]
        lines.append(f"  filter {name}: " + ", ".join(parts))
    tp = j["throughput"]
    if tp:
        lines.append(f"build: {tp['images_per_second']:.2f} images/s over {tp['wall_seconds']:.1f} s wall on "
                     f"{tp['cpus']:g} CPUs ({tp['shards_reused']} shards reused)")
        if "core_ms_per_input" in tp:
            per = ", ".join(f"{k} {v:.1f}" for k, v in tp["core_ms_per_input"].items())
            lines.append(f"  core-ms per input: {per} (total {sum(tp['core_ms_per_input'].values()):.1f})")
    else:
        lines.append("build: no summary.json (throughput not recorded)")
    lines.append("")
    head = f"{'distribution':<52} {'per':<8} {'count':>7} {'mean':>9} {'min':>9} {'median':>9} {'p95':>9} {'max':>9}"
    lines += [head, "-" * len(head)]
    for d in j["distributions"].values():
        cells = [_fmt(d[c]) for c in ("mean", "min", "median", "p95", "max")]
        lines.append(f"{d['title'][:52]:<52} {d['per']:<8} {_fmt(d['count']):>7} " + " ".join(f"{c:>9}" for c in cells))
    lines.append(f"({j['precision']})")
    return "\n".join(lines)
