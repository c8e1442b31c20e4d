"""Shard writer and reader speed against webdataset's own TarWriter / WebDataset, same samples, same run, one core.

    python benchmarks/shards.py [--samples 2000] [--repeats 3] [--markdown FILE]

Samples are ~100 KB JPEGs (the bundled photos re-encoded at 640 px, quality 95) with their real DetCon FH
segments and SoCo selective-search proposals, one record per sample under its own key. Rows:

* write: ``shards.write_shard`` (JSON from the records' arrays, sorted members, sha256 of every byte, Parquet
  index, fsync, rename) vs ``webdataset.TarWriter`` writing the same sample dicts: with the dicts built from
  the same records inside the timed loop; with them prepared beforehand (TarWriter's bare cost); and prepared
  plus the shard's sha256 afterwards (what a manifest needs).
* read, bytes only: ``shards.iter_shard(parse_json=False)`` vs ``webdataset.WebDataset`` (no decoding), with
  ``validate=False`` (the tar layer alone) and by default (every sample through the validating parser: JSON
  parsed and checked, image header sniffed, RLE run sums).
* read + JSON + label map: both parse the JSON member and rebuild the (H, W) label map from the RLEs with
  ``proposals.decode_segments``.

Files live in a temporary folder; reads come from the page cache (the shard was just written). Best of
``--repeats`` runs; samples/s per core.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import webdataset as wds  # noqa: E402

from _records import CONFIG, PHOTOS, photo_record  # noqa: E402
from regionshards.proposals import decode_segments  # noqa: E402
from regionshards.shards import (  # noqa: E402
    config_hash,
    iter_shard,
    label_map,
    record_sample,
    write_shard,
)

HASH = config_hash(CONFIG)


def best_rate(fn: Callable[[], int], repeats: int, setup: Callable[[], None] = lambda: None) -> float:
    """Samples/s of the fastest of ``repeats`` calls; ``fn`` returns the number of samples it handled and
    ``setup`` runs untimed before each call."""
    rates = []
    for _ in range(repeats):
        setup()
        gc.collect()
        t = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    base = [photo_record(p, 640, 95) for p in PHOTOS]
    records = [replace(base[i % len(base)], key=f"img{i:07d}") for i in range(args.samples)]
    prepared = [record_sample(r, HASH) for r in records]
    image_kb = statistics.mean(len(r.image or b"") for r in base) / 1000
    json_kb = statistics.mean(len(json.dumps(s["json"], separators=(",", ":"))) for s in prepared[: len(base)]) / 1000
    rows: list[tuple[str, float, float]] = []

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ours_tar, theirs_tar = out / "ours-000000.tar", out / "wds-000000.tar"

        def ours_write() -> int:
            write_shard(out, 0, records, config_hash=HASH, prefix="ours")
            return len(records)

        def wds_write(build: bool, checksum: bool = False) -> int:
            with open(theirs_tar, "wb") as f, wds.TarWriter(f) as sink:
                for r, s in zip(records, prepared, strict=True):
                    sink.write(record_sample(r, HASH) if build else s)
            if checksum:  # what a manifest needs; our writer hashes while writing
                with open(theirs_tar, "rb") as f:
                    hashlib.file_digest(f, "sha256")
            return len(records)

        def clean() -> None:  # a build writes new files: replacing (freeing) an old one is not timed
            for p in out.iterdir():
                p.unlink()

        w_ours = best_rate(ours_write, args.repeats, clean)
        w_built = best_rate(lambda: wds_write(True), args.repeats, clean)
        w_prep = best_rate(lambda: wds_write(False), args.repeats, clean)
        w_hash = best_rate(lambda: wds_write(False, True), args.repeats, clean)
        ours_write()
        wds_write(False)
        rows.append(("write (wds builds the same dicts from the records)", w_ours, w_built))
        rows.append(("write (wds given prepared dicts)", w_ours, w_prep))
        rows.append(("write (wds given prepared dicts, then sha256 of the file)", w_ours, w_hash))

        def ours_read(parse: bool, validate: bool = True) -> int:
            n = 0
            for s in iter_shard(ours_tar, parse_json=parse, validate=validate):
                if parse:
                    label_map(s)
                n += 1
            return n

        def wds_read(parse: bool) -> int:
            n = 0
            # webdataset leaves its shard file open; the warning is not what is measured.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                for s in wds.WebDataset([str(theirs_tar)], shardshuffle=False):
                    if parse:
                        decode_segments(json.loads(s["json"])["segments"]["rles"])
                    n += 1
            return n

        rows.append(("read, bytes only, validate=False (tar layer alone)",
                     best_rate(lambda: ours_read(False, False), args.repeats), best_rate(lambda: wds_read(False),
                                                                                         args.repeats)))
        for parse, label in ((False, "read, bytes only (every sample validated)"),
                             (True, "read + JSON parse + label map from RLE")):
            assert ours_read(parse) == wds_read(parse) == len(records)
            rows.append((label, best_rate(lambda p=parse: ours_read(p), args.repeats),
                         best_rate(lambda p=parse: wds_read(p), args.repeats)))

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"webdataset {wds.__version__}, one core; {args.samples} samples in one shard: JPEG {image_kb:.0f} KB "
        f"+ JSON {json_kb:.0f} KB on average (bundled photos at 640 px, DetCon FH segments, SoCo proposals); "
        f"best of {args.repeats} runs.",
        "",
        "| operation | regionshards samples/s | webdataset samples/s | ours / theirs |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |" for name, ours, theirs in rows]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
