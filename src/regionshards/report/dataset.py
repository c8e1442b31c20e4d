"""Reading a built dataset for inspection: open it with a clear error, stream its samples one at a time (JSON
parsed, image bytes kept raw, nothing decoded), find samples by key or draw a reproducible random few.

Everything goes through the safe reader (``shards.open_dataset``); only JSON is parsed, never pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..images import ImageError
from ..shards import MANIFEST_NAME, ShardDataset, ShardError, open_dataset
from ..shards._fs import file_problem
from ..shards.reader import index_url, read_index_url
from ..shards.store import Store, is_remote
from ..shards.validate import check_summary, dataset_limits, load_json

SUMMARY_NAME = "summary.json"
MAX_SUMMARY_BYTES = 16 << 20


@dataclass(frozen=True)
class ReportSample:
    """One sample as inspection sees it.

    Attributes:
        key: the sample key; shard: the shard's path or URL.
        meta: the parsed sample JSON (``docs/format.md`` §4).
        image: the original image bytes, unchanged (decode with ``regionshards.images.decode_image``).
        json_bytes: size of the stored ``<key>.json`` member in bytes.
    """

    key: str
    shard: str
    meta: dict[str, Any]
    image: bytes
    json_bytes: int

    @property
    def tar_bytes(self) -> int:
        """The sample's footprint in its tar: two 512-byte headers plus both members padded to 512 bytes."""
        return sum(512 + n + (-n % 512) for n in (len(self.image), self.json_bytes))


@contextmanager
def naming(sample: ReportSample) -> Iterator[None]:
    """Errors while drawing ``sample`` (e.g. image pixels that do not decode although the header did) become
    ``ShardError``s naming its shard and image member."""
    try:
        yield
    except ShardError:
        raise
    except ValueError as exc:
        code = "image-undecodable" if isinstance(exc, ImageError) else "sample-unusable"
        member = f"{sample.key}.{sample.meta['image']['field']}"
        raise ShardError(code, sample.shard, member, str(exc)) from exc


def open_report_dataset(path: str | os.PathLike[str]) -> ShardDataset:
    """The dataset at ``path`` (a build folder or its ``manifest.json``), JSON left unparsed for ``iter_samples``.

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist or holds no manifest (an unfinished build).
        ManifestError: the manifest cannot be trusted (from the reader).
    """
    if is_remote(path):  # an object-store folder (s3://bucket/out) or its manifest.json
        folder = Store(os.fspath(path).rsplit("/", 1)[0] if os.fspath(path).endswith(".json") else path)
        if folder.problem(MANIFEST_NAME) == "missing" and not os.fspath(path).endswith(".json"):
            raise FileNotFoundError(f"{path} holds no {MANIFEST_NAME}: not a finished regionshards build")
        return open_dataset(os.fspath(path), parse_json=False)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset folder {path} does not exist")
    if p.is_dir() and file_problem(p / MANIFEST_NAME) == "missing":
        raise FileNotFoundError(f"{path} holds no {MANIFEST_NAME}: not a finished regionshards build")
    if p.is_file() and p.suffix != ".json":
        raise FileNotFoundError(f"{path} is a file; give the dataset folder or its {MANIFEST_NAME}")
    return open_dataset(p, parse_json=False)


def dataset_root(ds: ShardDataset) -> Store | None:
    """The folder (local or an object-store prefix) holding the dataset's shards (None without shards)."""
    if not ds.shards:
        return None
    if is_remote(ds.shards[0]):
        return Store(ds.shards[0].rsplit("/", 1)[0])
    p = Path(ds.shards[0])
    return Store(p.parent) if p.parent.is_dir() else None


def read_summary(ds: ShardDataset) -> dict[str, Any] | None:
    """The build's ``summary.json`` beside the manifest (throughput and core-seconds), None when absent.

    Raises:
        ValueError: naming the file when it is not a regular file, too large, not JSON or not an object of
            numbers (``shards.validate.check_summary``).
    """
    root = dataset_root(ds)
    if root is None or root.problem(SUMMARY_NAME) == "missing":
        return None
    path = root.join(SUMMARY_NAME)
    try:
        summary = load_json(root.read(SUMMARY_NAME, MAX_SUMMARY_BYTES))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unusable build summary: {exc}") from None
    problems = check_summary(summary)
    if problems:
        raise ValueError(f"{path}: unusable build summary: {'; '.join(problems)}")
    return summary


def recorded_filters(ds: ShardDataset) -> list[str]:
    """The filter names every sample records (from the build config in the manifest)."""
    return list((ds.manifest or {}).get("config", {}).get("filters", []))


def check_filter(ds: ShardDataset, name: str | None) -> None:
    """Raise ValueError naming ``name`` and the recorded filters when the dataset does not record it."""
    known = recorded_filters(ds)
    if name is not None and name not in known:
        raise ValueError(f"unknown filter {name!r}: the dataset records {known or 'no filters'}")


def _to_sample(raw: dict[str, Any]) -> ReportSample:
    data = raw["json"]
    meta = json.loads(data)  # already parsed and validated once by the reader (size, depth, schema, sizes)
    return ReportSample(raw["__key__"], raw["__url__"], meta, raw.get(meta["image"]["field"], b""), len(data))


def iter_samples(ds: ShardDataset) -> Iterator[ReportSample]:
    """Every sample in shard order, one at a time (memory does not grow with the dataset)."""
    for raw in ds:
        yield _to_sample(raw)


def _index_keys(shard_url: str) -> dict[str, tuple[str, str | None]]:
    table = read_index_url(index_url(shard_url)).select(["key", "status", "reason"])
    return {k: (s, r) for k, s, r in zip(*(table.column(c).to_pylist() for c in ("key", "status", "reason")),
                                        strict=True)}


def find_samples(ds: ShardDataset, keys: Sequence[str]) -> list[ReportSample]:
    """The samples with these keys, in the order given; shards are located from their Parquet indexes, so only
    the shards holding a key are read.

    Raises:
        KeyError: naming a key that no shard holds, or one whose input failed in the build (with its reason).
        ShardError: naming the shard whose index lists a key its tar does not hold.
    """
    wanted = list(dict.fromkeys(keys))
    where: dict[str, str] = {}
    for url in ds.shards:
        if len(where) == len(wanted):
            break
        rows = _index_keys(url)
        for key in wanted:
            if key in rows:
                status, reason = rows[key]
                if status != "ok":
                    raise KeyError(f"key {key!r} failed in the build ({reason}); it has no sample")
                where[key] = url
    missing = [k for k in wanted if k not in where]
    if missing:
        raise KeyError(f"unknown key {missing[0]!r}: no shard of the dataset holds it")
    found: dict[str, ReportSample] = {}
    for url in dict.fromkeys(where.values()):
        for raw in open_dataset([url], parse_json=False, limits=dataset_limits(ds.limits, ds.manifest)):
            if raw["__key__"] in where:
                found[raw["__key__"]] = _to_sample(raw)
    lost = [k for k in wanted if k not in found]
    if lost:
        raise ShardError("missing-sample", where[lost[0]], None,
                         f"its index lists key {lost[0]!r} as ok, but the shard does not hold that sample")
    return [found[k] for k in keys]


def choose_samples(ds: ShardDataset, n: int, seed: int) -> list[ReportSample]:
    """``n`` samples drawn uniformly without replacement with ``numpy.random.default_rng(seed)``, in dataset
    order; the same dataset, ``n`` and ``seed`` always give the same samples. Holds only the chosen ones."""
    if n < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n}")
    total = ds.num_samples
    if total is None:
        total = sum(1 for _ in ds)
    chosen = set(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False).tolist())
    out = []
    for i, raw in enumerate(ds):
        if i in chosen:
            out.append(_to_sample(raw))
            if len(out) == len(chosen):
                break
    return out
