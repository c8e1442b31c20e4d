"""End-to-end build benchmark: images/s per core, ours vs the anchors' stack, and 1 vs 2 CPUs.

    python benchmarks/build.py [--images 24] [--long-side 500] [--markdown FILE]

Ours: decode + exact FH (DetCon) + selective search (SoCo) + RLE + shard writing, the build's worker
function in this process. Anchors: PIL decode + skimage FH + selectivesearch 0.4 with SoCo's range +
one-hot pycocotools RLE + the same samples written with tarfile, in the same run on the same photos.
Scaling: `run_build` on a local Ray with 1 and then 2 CPUs (wall time after Ray's start-up; each new worker
process still pays its imports and numba cache load, ≈ 2 s, which longer builds amortise).
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from pycocotools import mask as mask_utils  # noqa: E402
from skimage.segmentation import felzenszwalb as sk_felzenszwalb  # noqa: E402

from reference_ss import reference_regions  # noqa: E402
from regionshards.builder import list_source, make_config, run_build  # noqa: E402
from regionshards.builder.worker import process_shard  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval-photos" / "images"


def make_photos(folder: Path, count: int, long_side: int) -> list[Path]:
    """``count`` JPEGs at ``long_side``: the eval photos when present, else the bundled ones (repeated)."""
    sources = sorted(EVAL.glob("*.jp*g")) or sorted((ROOT / "data" / "sample" / "coco" / "images").glob("*.jpg"))
    folder.mkdir(parents=True)
    out = []
    for i in range(count):
        img = Image.open(sources[i % len(sources)]).convert("RGB")
        s = long_side / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
        path = folder / f"img{i:04d}.jpg"
        img.save(path, format="JPEG", quality=90)
        out.append(path)
    return out


def anchors(paths: list[Path], out: Path) -> float:
    """The anchors' stack over ``paths``; returns seconds."""
    t = time.perf_counter()
    with tarfile.open(out, "w") as tar:
        for p in paths:
            data = p.read_bytes()
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            labels = sk_felzenszwalb(rgb, 1000, 0.8, 1000)
            rects, sizes = reference_regions(rgb, "soco")
            onehot = np.asfortranarray((labels[:, :, None] == np.arange(labels.max() + 1)).astype(np.uint8))
            rles = [{"size": r["size"], "counts": r["counts"].decode()} for r in mask_utils.encode(onehot)]
            meta = json.dumps({"segments": rles, "boxes": rects.tolist(), "sizes": sizes.tolist()}).encode()
            for name, payload in ((f"{p.stem}.jpg", data), (f"{p.stem}.json", meta)):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240, help="photos for our pipeline and the scaling runs")
    parser.add_argument("--anchor-images", type=int, default=24, help="photos for the (slow) anchors' stack")
    parser.add_argument("--long-side", type=int, default=500)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_photos(tmp / "src", args.images, args.long_side)
        listing = list_source(tmp / "src")
        config = make_config(shard_size=8, layout=listing.layout)
        (tmp / "warm").mkdir()
        process_shard(0, listing.refs[:1], config, tmp / "warm")  # JIT cache load, imports
        (tmp / "ours").mkdir()
        t = time.perf_counter()
        result = process_shard(0, listing.refs, config, tmp / "ours")
        ours = time.perf_counter() - t
        ref = anchors(paths[: args.anchor_images], tmp / "anchor.tar") * args.images / args.anchor_images
        one = run_build(listing, tmp / "cpu1", config, num_cpus=1, progress=False)
        two = run_build(listing, tmp / "cpu2", config, num_cpus=2, progress=False)
        pixels = np.mean([np.prod(Image.open(p).size) for p in paths])
    per_image = ours / args.images
    stages = {k: 1000 * v / args.images for k, v in result.seconds.items()}
    lines = [
        f"{args.images} photos at long side {args.long_side} (mean {pixels / 1000:.0f} kpx; the anchors' rate from "
        f"the first {args.anchor_images}), one core, config: DetCon FH + SoCo selective search + 3 filters.",
        "",
        "| pipeline | images/s per core | ms / image |",
        "|---|---:|---:|",
        f"| anchors: PIL + skimage FH + selectivesearch 0.4 + one-hot pycocotools + tarfile | "
        f"{args.images / ref:.2f} | {1000 * ref / args.images:.0f} |",
        f"| regionshards worker (decode + FH + SS + RLE + shard) | {args.images / ours:.2f} | {1000 * per_image:.0f} |",
        f"| **ratio** | **{ref / ours:.1f}×** | |",
        "",
        "Our time per image by stage (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
        "",
        f"Scaling on a local Ray: 1 CPU {one.images_per_second:.2f} img/s, 2 CPUs {two.images_per_second:.2f} img/s "
        f"→ **{two.images_per_second / one.images_per_second:.2f}×** (wall time after Ray's start-up).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
