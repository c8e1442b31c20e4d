"""Which inputs a build could not use, and why: the failed rows of the Parquet indexes (``docs/format.md`` §5).

A failed input has no sample in the tars; its key, source, reason code and detail live only in its shard's
index. Only the index files are read (never the tars), and only those of shards whose manifest entry counts a
failure, so listing the failures of an ImageNet-sized build reads a few kilobytes per failing shard.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from ..shards import ShardDataset
from ..shards._fs import join_url, local_path, open_input, parent_url
from ..shards.index import read_index
from .dataset import open_report_dataset

MAX_INDEX_BYTES = 1 << 30  # a shard of a million inputs has a ~100 MB index; a larger claim is a forged manifest
_COLUMNS = ("key", "status", "reason", "detail", "source_path", "image_id", "class_name")


@dataclass(frozen=True)
class Failure:
    """One input the build could not use.

    Attributes:
        key: the input's sample key; shard: the index file's name (e.g. ``shard-000003.parquet``).
        source_path: the path relative to the source root (None for sources without paths);
        image_id: the COCO image id (None outside COCO); class_name: the input's class, when the source has one.
        reason: the short failure code (``empty``, ``not-an-image``, ``too-many-pixels`` ...); detail: the message.
    """

    key: str
    shard: str
    source_path: str | None
    image_id: int | None
    class_name: str | None
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def iter_failures(path: str | os.PathLike[str]) -> Iterator[Failure]:
    """Every failed input of the dataset at ``path`` (its folder or ``manifest.json``), in shard order then in
    each shard's sample order.

    Raises:
        FileNotFoundError: naming ``path`` when it is not a finished build.
        ValueError: an index is unreadable, or its failed rows disagree with the manifest's count for that shard
            (the message names the shard; ``regionshards verify`` tells the rest).
    """
    return _failures(open_report_dataset(path))


def _failures(ds: ShardDataset) -> Iterator[Failure]:
    assert ds.manifest is not None  # open_report_dataset opens only folders and manifests
    base = parent_url(ds.shards[0]) if ds.shards else ""
    for entry in ds.manifest["shards"]:
        if entry["failures"] == 0:
            continue  # the manifest (checksummed, verified) says this index holds no failed row
        url = join_url(base, entry["index"])
        table = _read(url, entry["index_bytes"]).select(list(_COLUMNS))
        rows = [row for row in table.to_pylist() if row["status"] != "ok"]
        if len(rows) != entry["failures"]:
            raise ValueError(f"{url}: {len(rows)} failed row(s), but the manifest counts {entry['failures']}; "
                             "run `regionshards verify` on the dataset")
        for row in rows:
            yield Failure(key=row["key"], shard=entry["index"], source_path=row["source_path"],
                          image_id=row["image_id"], class_name=row["class_name"], reason=row["reason"] or "",
                          detail=row["detail"] or "")


def _read(url: str, size: int) -> pa.Table:
    """The index at ``url``, whose manifest entry says it has ``size`` bytes: only a regular file is opened,
    and no more than ``size + 1`` bytes are read, whatever the file claims."""
    if size > MAX_INDEX_BYTES:
        raise ValueError(f"{url}: the manifest declares {size} bytes, over the {MAX_INDEX_BYTES}-byte limit of an "
                         "index (≈ 100 bytes per input)")
    path = local_path(url)
    if path is not None and not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"{url}: not a regular file")
    with open_input(url) as f:
        data = f.read(size + 1)
    if len(data) != size:
        found = f"more than {size}" if len(data) > size else str(len(data))
        raise ValueError(f"{url}: {found} bytes, but the manifest says {size}; run `regionshards verify` on the "
                         "dataset")
    try:
        return read_index(pa.BufferReader(data))
    except ValueError as exc:
        raise ValueError(f"{url}: {str(exc).split(': ', 1)[-1]}") from None


def failures_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"dataset", "inputs", "failures", "failure_reasons", "failed": [Failure.to_json(), ...]}``."""
    ds = open_report_dataset(path)
    failed = [f.to_json() for f in _failures(ds)]
    return {"dataset": os.fspath(path), "inputs": ds.manifest["totals"]["inputs"], "failures": len(failed),
            "failure_reasons": dict(sorted(Counter(f["reason"] for f in failed).items())), "failed": failed}


def _printable(text: str) -> str:
    # Details quote file names and decoder messages: a control character must not reach the terminal.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_failures(result: dict[str, Any]) -> str:
    """``failures_json``'s result as a table a person reads: key, reason, source (path or COCO id), then the
    whole detail; a count line last."""
    failed = result["failed"]
    if not failed:
        return f"no failed inputs ({result['inputs']} inputs, all ok)"
    rows = [(f["key"], f["reason"], f["source_path"] if f["source_path"] is not None else
             (f"image_id {f['image_id']}" if f["image_id"] is not None else "-"), f["detail"]) for f in failed]
    rows = [tuple(_printable(c) for c in row) for row in rows]
    header = ("key", "reason", "source", "detail")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
             for r in [header, *rows]]
    lines.append(f"{len(failed)} of {result['inputs']} inputs failed ("
                 + ", ".join(f"{k}: {v}" for k, v in result["failure_reasons"].items()) + ")")
    return "\n".join(lines)
