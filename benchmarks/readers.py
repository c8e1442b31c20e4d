"""Decoded rows into Ray Data: ``regionshards.builder.ray_dataset`` against Ray's own ``read_webdataset`` followed
by the same decode, on the same shards, in the same run.

    python benchmarks/readers.py [--samples 600] [--shards 4] [--cpus 2] [--repeats 3] [--markdown FILE]

Samples are the bundled photos re-encoded at 640 px (JPEG quality 95) with their real DetCon FH segments and
SoCo proposals, written with ``shards.write_shard`` plus a manifest. Both pipelines end in the same rows: the key,
the image as (H, W, 3) uint8 RGB and the sample JSON as a dict, consumed with ``iter_batches`` (numpy, 64 rows):

* ours: ``ray_dataset(OUT)`` (one task per shard; the safe reader; ``images.decode_image``);
* Ray's: ``ray.data.read_webdataset(OUT, file_extensions=["tar"], decoder=None)`` then ``.map`` with PIL's
  ``convert("RGB")`` and ``json.loads`` (its default decoder cannot hold grey and colour in one column).

Ray starts once, untimed, with ``--cpus`` CPUs; each pipeline runs once untimed (workers start and import their
modules); then the two pipelines alternate ``--repeats`` times and the medians
are reported (the machine's other load shows in the spread).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from _records import CONFIG, PHOTOS, photo_record  # noqa: E402
from regionshards.builder import ray_dataset  # noqa: E402
from regionshards.shards import ShardInfo, config_hash, write_manifest, write_shard  # noqa: E402


def _pil_row(row: dict[str, Any]) -> dict[str, Any]:
    """Ray's raw row → the same row ours gives (key, RGB array, parsed JSON)."""
    meta = json.loads(row["json"])
    with Image.open(io.BytesIO(row[meta["image"]["field"]])) as img:
        rgb = np.asarray(img.convert("RGB"))
    return {"__key__": row["__key__"], "image": rgb, "json": meta}


def make_dataset(out: Path, samples: int, shards: int) -> None:
    out.mkdir(parents=True)
    base = [photo_record(p, 640, 95) for p in PHOTOS]
    records = [replace(base[i % len(base)], key=f"img{i:07d}") for i in range(samples)]
    digest = config_hash(CONFIG)
    per = -(-samples // shards)
    infos: list[ShardInfo] = [write_shard(out, i, records[i * per:(i + 1) * per], config_hash=digest)
                              for i in range(shards)]
    write_manifest(out, CONFIG, infos)


def consume(ds: Any) -> int:
    n = 0
    for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
        n += len(batch["__key__"])
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray's workers import this checkout's regionshards too (they inherit the environment, not sys.path)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    warnings.simplefilter("ignore", DeprecationWarning)  # Ray's own deprecation notices, not what is measured
    import ray
    import ray.data

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        make_dataset(out, args.samples, args.shards)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        pipelines = {
            "ours": lambda: ray_dataset(out),
            "ray": lambda: ray.data.read_webdataset(str(out), file_extensions=["tar"], decoder=None).map(_pil_row),
        }
        rates: dict[str, list[float]] = {name: [] for name in pipelines}
        for make in pipelines.values():  # untimed: worker processes start and import their modules once
            consume(make())
        for _ in range(args.repeats):
            for name, make in pipelines.items():
                t = time.perf_counter()
                n = consume(make())
                rates[name].append(n / (time.perf_counter() - t))
                assert n == args.samples, (name, n)
        ray.shutdown()
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["ray"])
    lines = [
        f"Machine: {platform.machine()}, Python {platform.python_version()}, Ray {ray.__version__}, local Ray with "
        f"{args.cpus} CPUs; {args.samples} samples in {args.shards} shards (bundled photos at 640 px, JPEG q95, "
        f"FH segments, SoCo proposals); median of {args.repeats} alternating runs "
        f"(ours {', '.join(f'{r:,.0f}' for r in rates['ours'])}; "
        f"Ray's {', '.join(f'{r:,.0f}' for r in rates['ray'])}).",
        "",
        "| pipeline (decoded RGB + key + JSON dict rows) | rows/s | ours / Ray's |",
        "|---|---:|---:|",
        f"| `regionshards.builder.ray_dataset(OUT)` | {ours:,.0f} | {ours / theirs:.2f} |",
        f"| `ray.data.read_webdataset(OUT, file_extensions=['tar'], decoder=None).map(PIL RGB + json.loads)` | "
        f"{theirs:,.0f} | 1.00 |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
