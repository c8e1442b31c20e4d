"""Proposals benchmark: ours vs the reference implementations, same images, same run, one core.

    python benchmarks/proposals.py [--sizes 224 500 640] [--repeats 5] [--markdown docs/benchmarks-proposals.md]
    python benchmarks/proposals.py --per-photo [--photos DIR] [--long-side 500] [--markdown FILE]

Ratios are reference time / our time (median of repeats) on the bundled photos resized to each long side.
Outputs are checked equal before timing, so every ratio compares identical results.

``--per-photo`` measures each photo on its own (ours and the reference alternating, so both see the same
machine load) and reports the median over photos of the per-photo ratio, timed with the thread's CPU time
(``time.thread_time``): on a machine shared with other jobs, wall time also counts the time this process
waits for a core. DIR defaults to the bundled photos; any folder of JPEG/PNG photos works.
"""

from __future__ import annotations

import os

# One core: set before numpy/numba load their thread pools.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from pycocotools import mask as mask_utils  # noqa: E402
from skimage.segmentation import felzenszwalb as sk_felzenszwalb  # noqa: E402

from reference_ss import reference_regions  # noqa: E402
from regionshards.proposals import (  # noqa: E402
    decode_segments,
    encode_segments,
    felzenszwalb,
    segments_and_proposals,
    selective_search,
)

PHOTOS = sorted((ROOT / "data" / "sample" / "coco" / "images").glob("*.jpg"))


def resized(image: np.ndarray, long_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = long_side / max(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def rle_reference_encode(labels: np.ndarray) -> list:
    onehot = np.asfortranarray((labels[:, :, None] == np.arange(labels.max() + 1)).astype(np.uint8))
    return mask_utils.encode(onehot)


def rle_reference_decode(rles: list) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycocotools' own numpy-2 deprecation warning
        return np.argmax(mask_utils.decode(rles), axis=2).astype(np.int32)


def bench_size(images: list[np.ndarray], repeats: int) -> dict[str, tuple[float, float]]:
    """Total ms over the images: {row: (reference, ours)}; asserts identical outputs first."""
    rows: dict[str, list[float]] = {}

    def add(row: str, ref: float, ours: float) -> None:
        r = rows.setdefault(row, [0.0, 0.0])
        r[0] += ref
        r[1] += ours

    for img in images:
        for name, params in (("FH DetCon (1000, 0.8, 1000)", (1000, 0.8, 1000)),
                             ("FH SoCo (300, 0.9, 100)", (300, 0.9, 100))):
            assert np.array_equal(felzenszwalb(img, *params), sk_felzenszwalb(img, *params))
            add(name, median_ms(partial(sk_felzenszwalb, img, *params), max(1, repeats // 2)),
                median_ms(partial(felzenszwalb, img, *params), repeats))
        ours = selective_search(img)
        rects, _ = reference_regions(img, "soco")
        assert np.array_equal(ours.reference_rects, rects)
        add("selective search soco", median_ms(partial(reference_regions, img, "soco"), 1),
            median_ms(partial(selective_search, img), repeats))
        labels = felzenszwalb(img, 1000, 0.8, 1000)
        coco = rle_reference_encode(labels)
        mine = encode_segments(labels)
        assert [r["counts"] for r in mine] == [r["counts"].decode() for r in coco]
        add("RLE encode (DetCon FH segments)", median_ms(partial(rle_reference_encode, labels), repeats),
            median_ms(partial(encode_segments, labels), repeats))
        assert np.array_equal(decode_segments(mine), rle_reference_decode(coco))
        add("label map from RLE (DetCon FH segments)", median_ms(partial(rle_reference_decode, coco), repeats),
            median_ms(partial(decode_segments, mine), repeats))
    return {k: (v[0], v[1]) for k, v in rows.items()}


_WARMUP = """
import time, numpy as np, sys
sys.path.insert(0, {src!r})
t = time.perf_counter()
from regionshards.proposals import felzenszwalb, selective_search, encode_segments, decode_segments
img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
decode_segments(encode_segments(felzenszwalb(img))); selective_search(img)
print(time.perf_counter() - t)
"""

_PEAK = """
import sys, numpy as np
sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
from PIL import Image
def hwm():  # peak resident set so far, MiB
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
img = np.asarray(Image.open({photo!r}).convert("RGB"))
from regionshards.proposals import felzenszwalb, selective_search
from skimage.segmentation import felzenszwalb as sk_felzenszwalb
from reference_ss import reference_regions
small = img[:16, :16].copy()
felzenszwalb(small); selective_search(small); sk_felzenszwalb(small); reference_regions(small, "soco")
base = hwm()
if {which!r} == "ours":
    felzenszwalb(img); selective_search(img)
else:
    sk_felzenszwalb(img, 1000, 0.8, 1000); reference_regions(img, "soco")
print(hwm() - base)
"""


def cpu_ms(fn, repeats: int) -> float:
    """Best of ``repeats`` runs, in ms of this thread's CPU time."""
    best = float("inf")
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return 1000 * best


def bench_per_photo(paths: list[Path], long_side: int, repeats: int) -> list[str]:
    """Markdown rows: per step, the median over photos of reference / ours (outputs checked identical)."""
    steps = {
        "FH DetCon (1000, 0.8, 1000)": ("skimage felzenszwalb", (1000, 0.8, 1000)),
        "FH SoCo (300, 0.9, 100)": ("skimage felzenszwalb", (300, 0.9, 100)),
        "selective search soco": ("selectivesearch 0.4 + SoCo range", None),
        "segments + proposals in one call": ("skimage FH + selectivesearch 0.4", None),
    }
    ratios: dict[str, list[float]] = {k: [] for k in steps}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in steps}
    for path in paths:
        img = resized(np.asarray(Image.open(path).convert("RGB")), long_side)
        measured: dict[str, tuple[float, float]] = {}
        for name, (_, params) in list(steps.items())[:2]:
            assert np.array_equal(felzenszwalb(img, *params), sk_felzenszwalb(img, *params)), (path, name)
            ref = ours = float("inf")
            for _ in range(repeats):  # alternate, so that both see the same load
                ref = min(ref, cpu_ms(partial(sk_felzenszwalb, img, *params), 1))
                ours = min(ours, cpu_ms(partial(felzenszwalb, img, *params), 1))
            measured[name] = (ref, ours)
        rects, _ = reference_regions(img, "soco")
        assert np.array_equal(selective_search(img).reference_rects, rects), path
        ref_ss = cpu_ms(partial(reference_regions, img, "soco"), 1)
        ours_ss = ours_both = float("inf")
        for _ in range(repeats):
            ours_ss = min(ours_ss, cpu_ms(partial(selective_search, img), 1))
            ours_both = min(ours_both, cpu_ms(partial(segments_and_proposals, img), 1))
        measured["selective search soco"] = (ref_ss, ours_ss)
        measured["segments + proposals in one call"] = (measured["FH DetCon (1000, 0.8, 1000)"][0] + ref_ss, ours_both)
        for name, (ref, ours) in measured.items():
            ratios[name].append(ref / ours)
            times[name].append((ref, ours))
        print(path.name, img.shape, {k: f"{r / o:.1f}x" for k, (r, o) in measured.items()}, flush=True)
    rows = []
    for name, (ref_name, _) in steps.items():
        r = ratios[name]
        rows.append(
            f"| {name} | {ref_name} | {statistics.median(t[0] for t in times[name]):.1f} | "
            f"{statistics.median(t[1] for t in times[name]):.1f} | **{statistics.median(r):.1f}×** | "
            f"{min(r):.1f}–{max(r):.1f}× |"
        )
    return rows


def run_python(code: str, env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 500, 640])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--per-photo", action="store_true", help="median of per-photo ratios (see above)")
    parser.add_argument("--photos", type=Path, help="folder of photos for --per-photo (default: bundled)")
    parser.add_argument("--long-side", type=int, default=500)
    args = parser.parse_args()
    if args.per_photo:
        per_photo(args)
        return
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in PHOTOS]
    felzenszwalb(photos[0][:32, :32])
    selective_search(photos[0][:32, :32])
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, one core "
        f"(NUMBA_NUM_THREADS=1); {len(photos)} bundled photos ({', '.join(p.stem for p in PHOTOS)}); "
        f"times are the sum over the photos of the median of {args.repeats} runs (references: fewer runs).",
        "",
        "| long side | step | reference | reference ms | ours ms | ratio |",
        "|---:|---|---|---:|---:|---:|",
    ]
    refs = {"FH": "skimage felzenszwalb", "sel": "selectivesearch 0.4 + SoCo range",
            "RLE": "one-hot + pycocotools encode", "lab": "pycocotools decode + argmax"}
    for size in args.sizes:
        images = [resized(p, size) for p in photos]
        for row, (ref, ours) in bench_size(images, args.repeats).items():
            lines.append(f"| {size} | {row} | {refs[row[:3]] if row[:3] in refs else refs[row[:2]]} | "
                         f"{ref:.1f} | {ours:.1f} | {ref / ours:.1f}× |")
            print(lines[-1], flush=True)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = run_python(_WARMUP.format(src=str(ROOT / "src")), env)
        warm = run_python(_WARMUP.format(src=str(ROOT / "src")), env)
    env = dict(os.environ)
    photo = str(PHOTOS[0])  # 512 x 512
    paths = {"src": str(ROOT / "src"), "tests": str(ROOT / "tests"), "photo": photo}
    peak_ours = run_python(_PEAK.format(which="ours", **paths), env)
    peak_ref = run_python(_PEAK.format(which="ref", **paths), env)
    lines += [
        "",
        f"JIT warm-up (import + first FH, SS, RLE calls in a new process): {cold:.1f} s with an empty numba cache, "
        f"{warm:.1f} s with the cache from the previous process.",
        f"Peak memory added by segmenting {Path(photo).name} (FH DetCon + selective search SoCo), above a process "
        f"that already imported and warmed up everything: ours {peak_ours:.0f} MiB, references {peak_ref:.0f} MiB.",
    ]
    print("\n".join(lines[-3:]))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")


def per_photo(args: argparse.Namespace) -> None:
    if args.photos is None:
        paths = list(PHOTOS)
    else:
        paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    small = np.asarray(Image.open(paths[0]).convert("RGB"))[:32, :32]
    felzenszwalb(small), selective_search(small), segments_and_proposals(small)  # compile / load the cache
    rows = bench_per_photo(paths, args.long_side, args.repeats)
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, one core "
        f"(NUMBA_NUM_THREADS=1), shared with other jobs; {len(paths)} photos at long side {args.long_side}; "
        f"thread CPU time, best of {args.repeats} alternating runs per photo (selectivesearch: one run).",
        "",
        "| step | reference | reference ms (median) | ours ms (median) | median ratio | range |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
    ]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
