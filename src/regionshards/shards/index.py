"""The per-shard Parquet index: one row per input assigned to the shard, failed inputs included.

Rows are in the shard's sample order (``keys.member_sort_key``), failed inputs at their key's place. Offsets
are of member *data* from the start of the tar (the 512-byte ustar header sits just before), so one sample's
JSON can be read with a single ranged read. The schema is fixed (``INDEX_SCHEMA``) and the file is written with
fixed options and no timestamps, so the same rows give the same bytes (for one pyarrow version, whose name is
in the file's ``created_by``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .sample import FORMAT_VERSION

INDEX_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "ok" | "failed"
        pa.field("reason", pa.string()),  # short failure code; null when ok
        pa.field("detail", pa.string()),  # human failure message; null when ok
        pa.field("source_path", pa.string()),
        pa.field("image_id", pa.int64()),
        pa.field("class_index", pa.int32()),
        pa.field("class_name", pa.string()),
        pa.field("image_format", pa.string()),  # sniffed PIL format
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("n_segments", pa.int32()),
        pa.field("n_proposals", pa.int32()),
        pa.field("n_gt_segments", pa.int32()),
        pa.field("image_field", pa.string()),  # the image member's extension, e.g. "jpg"
        pa.field("image_offset", pa.int64()),
        pa.field("image_bytes", pa.int64()),
        pa.field("json_offset", pa.int64()),
        pa.field("json_bytes", pa.int64()),
        # Build provenance (docs/format.md, "Input fingerprints and notes"): what the input was when it was
        # computed, so a resumed build recomputes exactly the shards whose inputs changed; null when unknown.
        pa.field("input_bytes", pa.int64()),
        pa.field("input_mtime_ns", pa.int64()),
        pa.field("input_sha256", pa.string()),
        pa.field("note", pa.string()),  # e.g. annotations dropped from an ok input, and why
    ],
    metadata={b"regionshards.format_version": str(FORMAT_VERSION).encode()},
)
COLUMNS = tuple(INDEX_SCHEMA.names)
# Fixed writer options: defaults of a future pyarrow must not change the bytes silently.
_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "version": "2.6",
    "data_page_version": "1.0",
    "use_dictionary": True,
    "write_statistics": True,
    "store_schema": True,
}


def index_table(rows: Sequence[Mapping[str, Any]], shard_name: str) -> pa.Table:
    """Rows (dicts with exactly ``COLUMNS``) → a table with ``INDEX_SCHEMA`` and the shard name as metadata.

    Raises:
        ValueError: a row lacks a column or has an extra one (naming the key).
    """
    for row in rows:
        if set(row) != set(COLUMNS):
            missing, extra = set(COLUMNS) - set(row), set(row) - set(COLUMNS)
            raise ValueError(f"index row {row.get('key')!r}: missing {sorted(missing)}, unexpected {sorted(extra)}")
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    schema = INDEX_SCHEMA.with_metadata({**INDEX_SCHEMA.metadata, b"regionshards.shard": shard_name.encode()})
    return pa.Table.from_pydict(columns, schema=schema)


def index_bytes(table: pa.Table) -> bytes:
    """The Parquet file of an index table, deterministically."""
    buf = io.BytesIO()
    pq.write_table(table, buf, **_WRITE_OPTIONS)
    return buf.getvalue()


def read_index(source: str | Path | io.BufferedIOBase | Any) -> pa.Table:
    """Read an index Parquet file (path or file object) and check its schema.

    Raises:
        ValueError: the file is not Parquet or its columns/types differ from ``INDEX_SCHEMA``.
    """
    try:
        table = pq.read_table(source)
    except (pa.ArrowException, OSError) as exc:  # any pyarrow refusal (damaged files raise several kinds)
        raise ValueError(f"{source}: not a readable Parquet index: {exc}") from None
    if not table.schema.equals(INDEX_SCHEMA, check_metadata=False):
        raise ValueError(f"{source}: index schema differs from format version {FORMAT_VERSION}: {table.schema}")
    return table
