"""Content checks used by ``verify``: one sample against the format, one shard's index against its members.

Each check returns ``Finding``s rather than raising, so a report lists every problem at once. Finding codes are
listed in ``docs/format.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .. import proposals as algorithms  # lazy (PEP 562): numba loads on first use, not on import
from .keys import member_sort_key
from .sample import JSON_FIELD
from .tario import Member, split_name
from .validate import DEFAULT_LIMITS, Limits
from .validate import check_sample as validate_sample


@dataclass(frozen=True)
class Finding:
    """One problem: ``code`` (machine-readable), where (``shard`` file, tar ``member``), and a human message."""

    code: str
    shard: str | None
    member: str | None
    message: str

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.shard, self.member) if p)
        return _printable(f"{self.code:<24} {where + ': ' if where else ''}{self.message}")


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal: control and other non-printable characters (ANSI escapes, carriage
    returns, newlines unless ``keep_newlines``) become visible escapes, so a dataset's strings can neither
    forge lines in a report nor drive the terminal."""
    if text.isprintable():
        return text
    if keep_newlines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_printable = printable


def printable_values(obj: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples of str/numbers) with every string, keys included,
    passed through ``printable``: for formatting tables from dataset strings (names, reasons, methods)."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable_values(k): printable_values(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(printable_values(v) for v in obj)
    return obj


@dataclass(frozen=True)
class SampleInfo:
    """What the index must agree with: the sample's member offsets/sizes and a few JSON values."""

    key: str
    members: dict[str, tuple[int, int]]  # field -> (data offset, size)
    meta: Mapping[str, Any] | None


def _partition_findings(part: Mapping[str, Any], what: str, h: int, w: int, shard: str, name: str) -> list[Finding]:
    """Deep checks of a validated partition (sizes, lengths and run sums already hold): the RLEs tile the image
    and the stored areas and boxes are theirs."""
    rles = part["rles"]
    out = []
    try:
        algorithms.decode_segments(rles)
    except ValueError as exc:
        out.append(Finding("rle-invalid", shard, name, f"{what} do not partition the image: {exc}"))
        return out
    areas = algorithms.segment_areas(rles)
    if int(areas.sum()) != h * w:
        return [Finding("rle-area", shard, name, f"{what} areas sum to {int(areas.sum())}, not H*W = {h * w}")]
    if areas.tolist() != part["areas"]:
        out.append(Finding("area-mismatch", shard, name, f"{what} areas differ from their RLEs"))
    if algorithms.segment_bboxes(rles).astype(np.int64).tolist() != part["bboxes"]:
        out.append(Finding("bbox-mismatch", shard, name, f"{what} bboxes differ from their RLEs"))
    return out


def check_sample(
    key: str, members: Sequence[Member], config_hash: str, shard: str, limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Finding], Any]:
    """All checks of one sample's members; returns ``(findings, parsed JSON or None)``.

    ``validate.check_sample`` decides first (limits, schema, sizes against the image, run sums, boxes); only a
    sample whose structure it trusts is decoded for the partition checks.
    """
    fields = {split_name(m.name)[1]: m.data or b"" for m in members}
    meta, problems = validate_sample(key, fields, limits, config_hash, full_schema=True)
    found = [Finding(p.code, shard, f"{key}.{p.field}", p.message) for p in problems]
    if meta is None:
        return found, None
    name = f"{key}.{JSON_FIELD}"
    h, w = meta["image"]["height"], meta["image"]["width"]
    for what in ("segments", "ground_truth"):
        if meta[what] is not None:
            found += _partition_findings(meta[what], what, h, w, shard, name)
    return found, meta


def _expected_row(info: SampleInfo) -> dict[str, Any]:
    meta = info.meta or {}
    image_field = next((f for f in info.members if f != JSON_FIELD), None)
    row: dict[str, Any] = {
        "image_field": image_field,
        "image_offset": info.members.get(image_field or "", (None, None))[0],
        "image_bytes": info.members.get(image_field or "", (None, None))[1],
        "json_offset": info.members.get(JSON_FIELD, (None, None))[0],
        "json_bytes": info.members.get(JSON_FIELD, (None, None))[1],
    }
    if meta:
        counts = {k: None if meta[k] is None else len(meta[k]["rles" if k != "proposals" else "boxes"])
                  for k in ("segments", "proposals", "ground_truth")}
        row.update(
            status="ok", width=meta["image"]["width"], height=meta["image"]["height"],
            image_format=meta["image"]["format"], source_path=meta["source"]["path"],
            image_id=meta["source"]["image_id"], class_index=meta["source"]["class_index"],
            class_name=meta["source"]["class_name"], n_segments=counts["segments"],
            n_proposals=counts["proposals"], n_gt_segments=counts["ground_truth"],
        )
    return row


def reconcile_index(
    table: pa.Table, samples: Sequence[SampleInfo], entry: Mapping[str, Any], shard: str, tar_complete: bool
) -> list[Finding]:
    """Index rows ↔ tar samples (order, offsets, sizes, JSON values) and ↔ the manifest entry's counts.

    Row-by-member checks are skipped when the tar could not be read to its end (that is already a finding).
    """
    index_name = entry["index"]
    rows = table.to_pylist()
    out = []
    keys = [r["key"] for r in rows]
    if keys != sorted(keys, key=member_sort_key) or len(set(keys)) != len(keys):
        out.append(Finding("index-order", index_name, None, "rows are not unique keys in shard order"))
    statuses = Counter(r["status"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["status"] == "failed")
    if (len(rows), statuses["ok"], statuses["failed"], dict(reasons)) != (
        entry["inputs"], entry["samples"], entry["failures"], dict(entry["failure_reasons"])
    ):
        out.append(Finding("count-mismatch", index_name, None,
                           f"index has {len(rows)} rows = ok {statuses['ok']} + failed {statuses['failed']} "
                           f"{dict(reasons)}; manifest says {entry['inputs']} = {entry['samples']} + "
                           f"{entry['failures']} {dict(entry['failure_reasons'])}"))
    if not tar_complete:
        return out
    if len(samples) != entry["samples"]:
        out.append(Finding("count-mismatch", shard, None,
                           f"{len(samples)} readable samples, manifest says {entry['samples']}"))
    by_key = {s.key: s for s in samples}
    for row in rows:
        info = by_key.pop(row["key"], None)
        if row["status"] != "ok":
            if info is not None:
                out.append(Finding("index-mismatch", index_name, row["key"], "failed input has a sample in the tar"))
            continue
        if info is None:
            out.append(Finding("index-mismatch", index_name, row["key"], "ok row without a sample in the tar"))
            continue
        differ = [f"{k} {row[k]!r} != {v!r}" for k, v in _expected_row(info).items() if row[k] != v]
        if differ:
            out.append(Finding("index-mismatch", index_name, row["key"], "; ".join(differ[:4])))
    for key in by_key:
        out.append(Finding("index-mismatch", index_name, key, "sample in the tar has no index row"))
    return out
