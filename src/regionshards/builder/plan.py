"""The plan: the inputs in a seeded random order (or sorted), cut into shards of N; and which planned shards on
disk can be trusted by a resumed build.

Order: ``permuted`` (the default) sorts the inputs by SHA-256 of ``"<seed>:<key>"``, a seeded permutation that
depends on the keys alone, so every shard mixes classes the way the reference pipelines do (DetCon interleaves
2048 TFRecord files, SoCo/MoCo permute globally), and an added or removed input moves no other input relative
to the rest. ``sorted`` keeps the source's sorted order (an ImageNet shard then holds about one class).

Resume: a shard is reused only when its index lists exactly the planned keys, every input still has the
fingerprint its row records (size and mtime; when only the mtime moved, the content SHA-256 decides), no row
failed for a transient reason (``worker.TRANSIENT_REASONS``), its tar reads back whole with every sample made
with this config. Otherwise it is computed again, and the reason says which input and why.
"""

from __future__ import annotations

import hashlib
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..shards import Recorder, ShardInfo, iter_shard, shard_name
from ..shards._fs import local_path
from ..shards.reader import MAX_INDEX_BYTES
from ..shards.store import Store, sha256_stream
from .sources import ImageRef
from .worker import TRANSIENT_REASONS, InputFailure, read_input, stat_input


@dataclass(frozen=True)
class PlannedShard:
    index: int
    name: str  # without extension
    refs: tuple[ImageRef, ...]


def order_refs(refs: Sequence[ImageRef], order: Mapping[str, Any]) -> list[ImageRef]:
    """The inputs in build order: ``{"method": "sorted"}`` by key, ``{"method": "permuted", "seed": s}`` by
    SHA-256 of ``"<s>:<key>"``."""
    if order["method"] == "sorted":
        return sorted(refs, key=lambda r: r.source.path or r.key)
    seed = order["seed"]
    return sorted(refs, key=lambda r: hashlib.sha256(f"{seed}:{r.key}".encode()).digest())


def plan_shards(refs: Sequence[ImageRef], shard_size: int, prefix: str) -> list[PlannedShard]:
    """Cut the ordered inputs into shards of ``shard_size`` (the last one shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    return [
        PlannedShard(i, shard_name(prefix, i), tuple(refs[start : start + shard_size]))
        for i, start in enumerate(range(0, len(refs), shard_size))
    ]


def _sha256(out: Store, name: str) -> tuple[str, int]:
    """SHA-256 hex and size of a file or object of the output folder (regular files only)."""
    f, size = out.open(name)
    with f:
        return sha256_stream(f), size


def input_changed(row: Mapping[str, Any], ref: ImageRef, max_bytes: int) -> str | None:
    """Why the input behind an index row is no longer what the row was computed from, or None."""
    name = ref.source.describe()
    if row["status"] != "ok" and row["reason"] in TRANSIENT_REASONS:
        return f"{name} failed for a transient reason ({row['reason']})"
    if ref.listing_error is not None or (row["status"] != "ok" and row["input_bytes"] is None):
        listed = ref.listing_error[0] if ref.listing_error else None
        if listed is not None:
            return None if row["reason"] == listed else f"{name} is now {listed}"
        return f"{name} is now a regular file" if _is_regular(ref.uri) else None
    if row["input_bytes"] is None:
        return f"{name} has no recorded fingerprint"
    try:
        now = stat_input(ref.uri)
    except InputFailure as exc:
        return f"{name} is now {exc.reason}"
    if now.size != row["input_bytes"]:
        return f"{name} changed size ({row['input_bytes']} -> {now.size} bytes)"
    if now.mtime_ns == row["input_mtime_ns"]:
        return None
    if row["input_sha256"] is None:
        return f"{name} was modified"
    try:  # touched or copied: the content decides
        _, fingerprint = read_input(ref.uri, max_bytes)
    except InputFailure as exc:
        return f"{name} is now {exc.reason}"
    return None if fingerprint.sha256 == row["input_sha256"] else f"{name} changed content"


def _is_regular(uri: str) -> bool:
    path = local_path(uri)
    try:
        return path is not None and stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


@dataclass
class ShardCheck:
    """A finished shard's manifest entry (None when it must be computed), why, and its stored per-image stats."""

    info: ShardInfo | None
    why: str
    segments: list[int]
    proposals: list[int]


def existing_shard(out_dir: str | Path, shard: PlannedShard, config_hash: str, max_bytes: int = 2**62) -> ShardCheck:
    """Check a shard in the output folder (local or an object-store prefix) against the plan, the inputs'
    fingerprints and the config (see the module doc)."""
    out = Store(out_dir)
    tar, index = f"{shard.name}.tar", f"{shard.name}.parquet"
    try:
        written = out.problem(tar) is None and out.problem(index) is None
    except OSError as exc:  # an object store that does not answer: the build cannot go on
        raise OSError(f"{out.join(tar)}: cannot check the existing shard: {exc}") from exc
    if not written:
        return ShardCheck(None, "not written", [], [])
    try:
        rows: list[dict[str, Any]] = pq.read_table(pa.BufferReader(out.read(index, MAX_INDEX_BYTES))).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any unreadable index means "recompute", and says why
        return ShardCheck(None, f"index unreadable: {type(exc).__name__}", [], [])
    if sorted(r["key"] for r in rows) != sorted(ref.key for ref in shard.refs):
        return ShardCheck(None, "its inputs differ from the plan (inputs appeared or vanished)", [], [])
    if "input_bytes" not in rows[0]:
        return ShardCheck(None, "written by an older version without input fingerprints", [], [])
    by_key = {ref.key: ref for ref in shard.refs}
    for row in rows:
        why = input_changed(row, by_key[row["key"]], max_bytes)
        if why is not None:
            return ShardCheck(None, why, [], [])
    ok_keys = sorted(r["key"] for r in rows if r["status"] == "ok")
    errors = Recorder()
    seen = []
    for sample in iter_shard(out.join(tar), handler=errors):
        if sample.get("json", {}).get("config_hash") != config_hash:
            return ShardCheck(None, "written with another config", [], [])
        seen.append(sample["__key__"])
    if errors.errors:
        return ShardCheck(None, f"tar does not read back: {errors.errors[0]}", [], [])
    if sorted(seen) != ok_keys:
        return ShardCheck(None, "tar samples differ from the index", [], [])
    failures = Counter(r["reason"] for r in rows if r["status"] != "ok")
    (tar_sha, tar_bytes), (index_sha, index_bytes) = _sha256(out, tar), _sha256(out, index)
    info = ShardInfo(
        name=tar, sha256=tar_sha, bytes=tar_bytes, index=index,
        index_sha256=index_sha, index_bytes=index_bytes, inputs=len(rows), samples=len(ok_keys),
        failures=sum(failures.values()), failure_reasons=dict(sorted(failures.items())),
    )
    ok = [r for r in rows if r["status"] == "ok"]
    return ShardCheck(info, "verified", [r["n_segments"] for r in ok if r["n_segments"] is not None],
                      [r["n_proposals"] for r in ok if r["n_proposals"] is not None])
