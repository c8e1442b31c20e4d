"""The build at scale: per-input overhead, driver memory and resume time; class mixing; worker memory per pixel.

    python benchmarks/build_scale.py scale --sizes 1000 10000 [--markdown FILE]
    python benchmarks/build_scale.py mixing [--classes 1000 --per-class 1300]
    python benchmarks/build_scale.py memory --mpx 1 4

scale: tiny inputs (16 x 16 JPEGs, ``--segments none --proposals none``) so that what is measured is the build's
own cost per input (listing, plan, Ray tasks, read, decode, encode, index, resume checks), not the algorithms;
each size runs in a fresh process (its driver peak RSS is its own). The baseline is the smallest size: a flat
per-input overhead gives a ratio near 1.
mixing: the ImageNet layout's keys in the build's order (``permuted`` vs ``sorted``), cut into shards of 1000,
then read by the trainer's own epoch plan (shard permutation, 1000-sample shuffle buffer, batches of 64):
distinct classes per shard and per batch against the i.i.d. expectation ``C (1 - (1 - 1/C)^k)``.
memory: peak RSS growth of one input through the worker (decode + FH + selective search + encoding) per pixel.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def one_size(n: int, tmp: Path) -> dict[str, float]:
    """Build ``n`` tiny inputs (100 classes) on a local 2-CPU Ray, then resume it; in this process."""
    from regionshards.builder import list_source, make_config, run_build

    data = _tiny_jpeg()
    src = tmp / "src"
    for i in range(n):
        folder = src / f"c{i % 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.jpg").write_bytes(data)
    t = time.perf_counter()
    listing = list_source(src)
    listed = time.perf_counter() - t
    config = make_config(segments="none", proposals="none", layout=listing.layout, classes=listing.classes,
                         shard_size=1000)
    t = time.perf_counter()
    first = run_build(listing, tmp / "out", config, num_cpus=2, progress=False)
    build = time.perf_counter() - t
    t = time.perf_counter()
    again = run_build(list_source(src), tmp / "out", config, num_cpus=2, progress=False)
    resume = time.perf_counter() - t
    assert first.ok == n and again.shards_reused == again.shards
    return {"inputs": n, "list_s": listed, "build_s": build, "work_s": first.wall_seconds, "resume_s": resume,
            "resume_work_s": again.wall_seconds,
            "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def scale(sizes: list[int], markdown: Path | None) -> None:
    rows = []
    for n in sizes:
        done = subprocess.run([sys.executable, __file__, "one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]["work_s"] / rows[0]["inputs"]
    lines = ["| inputs | listing s | build s (incl. Ray start) | work s | ms / input | vs smallest | "
             "no-op resume s (incl. Ray start) | its checks s | driver peak MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per = r["work_s"] / r["inputs"]
        lines.append(f"| {r['inputs']:,} | {r['list_s']:.1f} | {r['build_s']:.1f} | {r['work_s']:.1f} | "
                     f"{1000 * per:.2f} | {per / base:.2f}× | {r['resume_s']:.1f} | {r['resume_work_s']:.1f} | "
                     f"{r['driver_peak_mib']:.0f} |")
    text = "\n".join(lines)
    print(text)
    if markdown:
        markdown.write_text(text + "\n", encoding="utf-8")


def mixing(classes: int, per_class: int, shard_size: int, batch: int, buffer: int) -> None:
    from regionshards.builder.plan import order_refs, plan_shards
    from regionshards.builder.sources import ImageRef
    from regionshards.shards.records import Source

    refs = [ImageRef(f"n{c:08d}_n{c:08d}_{i}", "", Source(path=f"n{c:08d}/n{c:08d}_{i}.JPEG", class_index=c))
            for c in range(classes) for i in range(per_class)]
    expect = {k: classes * (1 - (1 - 1 / classes) ** k) for k in (shard_size, batch)}
    print(f"{len(refs):,} inputs, {classes} classes; i.i.d. expectation: {expect[shard_size]:.1f} classes per "
          f"shard of {shard_size}, {expect[batch]:.1f} per batch of {batch}")
    print("| order | classes per shard (median) | classes per batch of 64 (median, 5th pct) |")
    print("|---|---:|---:|")
    for order in ({"method": "sorted"}, {"method": "permuted", "seed": 0}):
        shards = plan_shards(order_refs(refs, order), shard_size, "shard")
        per_shard = [len({r.source.class_index for r in s.refs}) for s in shards]
        per_batch = _trainer_batches(shards, batch, buffer)
        print(f"| {order['method']} | {np.median(per_shard):.0f} | {np.median(per_batch):.0f}, "
              f"{np.percentile(per_batch, 5):.0f} |")


def _trainer_batches(shards, batch: int, buffer: int, batches: int = 2000) -> list[int]:
    """Distinct classes per batch as the trainer's epoch plan reads the shards (one rank, one worker)."""
    from regionshards.trainer.epoch_plan import EpochPlan, shuffled

    plan = EpochPlan(tuple(s.name for s in shards), tuple(len(s.refs) for s in shards), 0, 0, 1, 0, batch, 1)
    start, stop = plan.worker_range(0)
    by_name = {s.name: s for s in shards}

    def stream():
        for span in plan.spans(start, stop):
            yield from (r.source.class_index for r in by_name[span.url].refs[span.skip: span.skip + span.take])

    it = shuffled(stream(), buffer, np.random.default_rng([0, 0, 0, 0, 0x5348]))
    out = []
    for _ in range(min(batches, plan.batches)):
        out.append(len({next(it) for _ in range(batch)}))
    return out


def memory(mpx: float) -> None:
    from PIL import Image

    from regionshards.builder import make_config
    from regionshards.builder.sources import ImageRef
    from regionshards.builder.worker import compute_input
    from regionshards.proposals import warm_up
    from regionshards.shards.records import Source

    src = next((ROOT / "data" / "sample" / "imagenet").rglob("chelsea.jpg"))
    img = Image.open(src).convert("RGB")
    s = (mpx * 1e6 / (img.width * img.height)) ** 0.5
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big.jpg", Path(tmp) / "small.jpg"
        img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC).save(big, quality=90)
        img.resize((64, 48)).save(small)
        warm_up()
        config = make_config(layout="folder")
        compute_input(ImageRef("s", str(small), Source(path="s")), config)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = compute_input(ImageRef("b", str(big), Source(path="b")), config)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    px = out.record.width * out.record.height
    print(f"{out.record.width}x{out.record.height} ({px / 1e6:.1f} Mpx): process {base / 1024:.0f} MiB before, peak "
          f"{peak / 1024:.0f} MiB, {(peak - base) * 1024 / px:.0f} B per pixel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("scale")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--markdown", type=Path)
    p = sub.add_parser("one")
    p.add_argument("n", type=int)
    p = sub.add_parser("mixing")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--per-class", type=int, default=1300)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--buffer", type=int, default=1000)
    p = sub.add_parser("memory")
    p.add_argument("--mpx", type=float, nargs="+", default=[1.0, 4.0])
    args = parser.parse_args()
    if args.mode == "scale":
        scale(args.sizes, args.markdown)
    elif args.mode == "one":
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_size(args.n, Path(tmp))))
    elif args.mode == "mixing":
        mixing(args.classes, args.per_class, args.shard_size, args.batch, args.buffer)
    else:
        for mpx in args.mpx:
            subprocess.run([sys.executable, __file__, "memory-one", str(mpx)], check=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "memory-one":
        memory(float(sys.argv[2]))
    else:
        main()
