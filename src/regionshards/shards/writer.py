"""Write one shard: ``{prefix}-{index:06d}.tar`` and its index ``{prefix}-{index:06d}.parquet``, atomically.

Input is plain data (``records.InputRecord``, ok or failed), so a build task, a test or a notebook can call it
without Ray. Every sample is encoded before any file is touched, so a bad record raises (naming its key) and
leaves nothing behind. The index is written first and the tar last, each to a temporary name, fsynced and
renamed (on an object store: each as one whole object): a tar under its final name implies its index is
complete. Same records (in any order) → the same bytes: records are sorted by key, members by name, and
nothing depends on time, user or machine.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .index import index_bytes, index_table
from .keys import check_unique_keys, member_sort_key
from .manifest import ShardInfo
from .records import STATUS_FAILED, STATUS_OK, InputRecord
from .sample import JSON_FIELD, record_sample, sample_to_members
from .store import Store
from .tario import BLOCK, TarStreamWriter

MAX_SHARDS = 1_000_000  # six digits keep shard names sorting in index order
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_HASH_RE = re.compile(r"[0-9a-f]{64}")


def shard_name(prefix: str, index: int) -> str:
    """``"{prefix}-{index:06d}"`` (no extension); raises ValueError for a bad prefix or index."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"shard prefix {prefix!r} must be 1..64 characters of [A-Za-z0-9_-], not starting with _/-")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_SHARDS:
        raise ValueError(f"shard index must be an integer in 0..{MAX_SHARDS - 1}, got {index!r}")
    return f"{prefix}-{index:06d}"


def _check_record(record: InputRecord) -> None:
    if record.status not in (STATUS_OK, STATUS_FAILED):
        raise ValueError(f"{record.key}: status must be {STATUS_OK!r} or {STATUS_FAILED!r}, got {record.status!r}")
    if record.status == STATUS_FAILED and not (isinstance(record.reason, str) and record.reason):
        raise ValueError(f"{record.key}: a failed input needs a non-empty reason")


def _index_row(record: InputRecord, offsets: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The index row of one record; ``offsets`` maps field → (data offset, size) of its members."""
    s = record.source
    image_field = next((f for f in offsets if f != JSON_FIELD), None)
    image = offsets.get(image_field or "", (None, None))
    meta = offsets.get(JSON_FIELD, (None, None))
    return {
        "key": record.key,
        "status": record.status,
        "reason": record.reason if not record.ok else None,
        "detail": record.detail if not record.ok else None,
        "source_path": s.path,
        "image_id": s.image_id,
        "class_index": s.class_index,
        "class_name": s.class_name,
        "image_format": record.image_format if record.ok else None,
        "width": record.width,
        "height": record.height,
        "n_segments": len(record.segments.rles) if record.ok and record.segments is not None else None,
        "n_proposals": len(record.proposals.boxes) if record.ok and record.proposals is not None else None,
        "n_gt_segments": len(record.ground_truth.rles) if record.ok and record.ground_truth is not None else None,
        "image_field": image_field,
        "image_offset": image[0],
        "image_bytes": image[1],
        "json_offset": meta[0],
        "json_bytes": meta[1],
        **dict.fromkeys(BUILD_COLUMNS),
    }


# Index columns a build fills from what it knows about each input (absent: null).
BUILD_COLUMNS = ("input_bytes", "input_mtime_ns", "input_sha256", "note")


def _layout(
    records: Sequence[InputRecord], config_hash: str, row_extras: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[list[tuple[str, bytes]], list[dict]]:
    """All tar members in order and one index row per record, with the data offsets the tar will have."""
    members: list[tuple[str, bytes]] = []
    rows = []
    offset = 0
    for record in records:
        offsets: dict[str, tuple[int, int]] = {}
        if record.ok:
            for name, data in sample_to_members(record_sample(record, config_hash)):
                offsets[name.partition(".")[2]] = (offset + BLOCK, len(data))
                members.append((name, data))
                offset += BLOCK + len(data) + (-len(data) % BLOCK)
        row = _index_row(record, offsets)
        extra = (row_extras or {}).get(record.key, {})
        unknown = set(extra) - set(BUILD_COLUMNS)
        if unknown:
            raise ValueError(f"{record.key}: unknown index columns {sorted(unknown)}")
        row.update(extra)
        rows.append(row)
    return members, rows


def write_shard(
    out_dir: str | Path,
    index: int,
    records: Sequence[InputRecord],
    *,
    config_hash: str,
    prefix: str = "shard",
    row_extras: Mapping[str, Mapping[str, Any]] | None = None,
) -> ShardInfo:
    """Write the shard ``index`` of a dataset from its input records.

    Args:
        out_dir: existing output folder, or an object-store prefix (``s3://bucket/out``: each file is then
            written as one whole object).
        index: shard number (0..999999); files are ``{prefix}-{index:06d}.tar`` and ``.parquet``.
        records: every input assigned to this shard, ok or failed, any order; keys must be unique.
        config_hash: ``manifest.config_hash(config)`` of the build config, stored in every sample.
        prefix: file-name prefix.
        row_extras: per key, values of the build columns (``BUILD_COLUMNS``: input fingerprint, note).

    Returns:
        The shard's ``ShardInfo`` for the manifest (sha256 and sizes of both files, counts by status/reason).

    Raises:
        DuplicateKeyError: two records share a key (both sources named).
        ValueError: an invalid record (naming its key); nothing is written then.
    """
    name = shard_name(prefix, index)
    if not isinstance(config_hash, str) or not _HASH_RE.fullmatch(config_hash):
        raise ValueError(f"config_hash must be 64 lower-case hex digits, got {config_hash!r}")
    check_unique_keys((r.key, r.source.describe()) for r in records)
    for record in records:
        _check_record(record)
    ordered = sorted(records, key=lambda r: member_sort_key(r.key))
    members, rows = _layout(ordered, config_hash, row_extras)

    out = Store(out_dir)
    tar_name, index_name = f"{name}.tar", f"{name}.parquet"
    parquet = index_bytes(index_table(rows, tar_name))
    out.write(index_name, parquet)

    def write_tar(f: Any) -> tuple[int, str]:
        tar = TarStreamWriter(f)
        for member_name, data in members:
            tar.add(member_name, data)
        return tar.close()

    size, digest = out.write_with(tar_name, write_tar)
    failures = Counter(r.reason for r in ordered if not r.ok)
    return ShardInfo(
        name=tar_name,
        sha256=digest,
        bytes=size,
        index=index_name,
        index_sha256=hashlib.sha256(parquet).hexdigest(),
        index_bytes=len(parquet),
        inputs=len(ordered),
        samples=len(ordered) - sum(failures.values()),
        failures=sum(failures.values()),
        failure_reasons=dict(sorted(failures.items())),  # type: ignore[arg-type]
    )
