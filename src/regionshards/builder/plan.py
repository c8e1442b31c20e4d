"""The plan: shard i holds inputs [i*N, (i+1)*N) of the sorted source; and which planned shards are already
done (resume). A shard on disk is trusted only after it verifies against the plan and the config."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..shards import Recorder, ShardInfo, iter_shard, shard_name
from .sources import ImageRef


@dataclass(frozen=True)
class PlannedShard:
    index: int
    name: str  # without extension
    refs: tuple[ImageRef, ...]


def plan_shards(refs: Sequence[ImageRef], shard_size: int, prefix: str) -> list[PlannedShard]:
    """Cut the sorted inputs into shards of ``shard_size`` (the last one shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    return [
        PlannedShard(i, shard_name(prefix, i), tuple(refs[start : start + shard_size]))
        for i, start in enumerate(range(0, len(refs), shard_size))
    ]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def existing_shard(out_dir: Path, shard: PlannedShard, config_hash: str) -> tuple[ShardInfo | None, str]:
    """The ``ShardInfo`` of a finished shard on disk, or None and why it cannot be trusted.

    A shard is done when its index lists exactly the planned keys, its tar reads back whole (every header
    checksum, every member), its samples are the index's ok rows, and every sample carries ``config_hash``.
    """
    tar, index = out_dir / f"{shard.name}.tar", out_dir / f"{shard.name}.parquet"
    if not tar.is_file() or not index.is_file():
        return None, "not written"
    try:
        table = pq.read_table(index)
    except Exception as exc:  # noqa: BLE001 - any unreadable index means "recompute", and says why
        return None, f"index unreadable: {type(exc).__name__}: {exc}"
    rows: list[dict[str, Any]] = table.to_pylist()
    if sorted(r["key"] for r in rows) != sorted(ref.key for ref in shard.refs):
        return None, "index keys differ from the plan"
    ok_keys = sorted(r["key"] for r in rows if r["status"] == "ok")
    errors = Recorder()
    seen = []
    for sample in iter_shard(tar, handler=errors):
        if sample.get("json", {}).get("config_hash") != config_hash:
            return None, "written with another config"
        seen.append(sample["__key__"])
    if errors.errors:
        return None, f"tar does not read back: {errors.errors[0]}"
    if sorted(seen) != ok_keys:
        return None, "tar samples differ from the index"
    failures = Counter(r["reason"] for r in rows if r["status"] != "ok")
    info = ShardInfo(
        name=tar.name,
        sha256=_sha256(tar),
        bytes=tar.stat().st_size,
        index=index.name,
        index_sha256=_sha256(index),
        index_bytes=index.stat().st_size,
        inputs=len(rows),
        samples=len(ok_keys),
        failures=sum(failures.values()),
        failure_reasons=dict(sorted(failures.items())),
    )
    return info, "verified"
