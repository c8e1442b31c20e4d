"""Content checks used by ``verify``: one sample against the format, one shard's index against its members.

Each check returns ``Finding``s rather than raising, so a report lists every problem at once. Finding codes are
listed in ``docs/format.md``.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from ..proposals import decode_segments, segment_areas, segment_bboxes
from .keys import member_sort_key
from .sample import JSON_FIELD, image_extension, members_to_sample, schema_errors
from .tario import Member, split_name


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


def _printable(text: str) -> str:
    """Escape control characters: a hostile member name must not forge lines in a report."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@dataclass(frozen=True)
class SampleInfo:
    """What the index must agree with: the sample's member offsets/sizes and a few JSON values."""

    key: str
    members: dict[str, tuple[int, int]]  # field -> (data offset, size)
    meta: Mapping[str, Any] | None


def _image_findings(meta: Mapping[str, Any], field: str, data: bytes, shard: str, name: str) -> list[Finding]:
    img = meta["image"]
    out = []
    if img["field"] != field:
        out.append(Finding("image-mismatch", shard, name, f"JSON names image field {img['field']!r}"))
    if img["bytes"] != len(data):
        out.append(Finding("image-mismatch", shard, name, f"{len(data)} bytes, JSON says {img['bytes']}"))
    try:
        with Image.open(io.BytesIO(data)) as pil:  # header only: format and size, no pixel decoding
            fmt, size = pil.format, pil.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return [*out, Finding("image-unreadable", shard, name, f"not a readable image: {exc}")]
    if fmt != img["format"] or image_extension(fmt or "") != field:
        out.append(Finding("image-mismatch", shard, name, f"sniffed format {fmt}, JSON {img['format']}, "
                                                          f"member extension {field!r}"))
    if size != (img["width"], img["height"]):
        out.append(Finding("image-mismatch", shard, name,
                           f"stored image is {size[0]}x{size[1]}, JSON says {img['width']}x{img['height']}"))
    return out


def _partition_findings(part: Mapping[str, Any], what: str, h: int, w: int, shard: str, name: str) -> list[Finding]:
    """RLEs of size [H, W] that partition the image, with the stored areas and boxes."""
    rles = part["rles"]
    bad_size = [i for i, r in enumerate(rles) if r["size"] != [h, w]]
    if bad_size:
        return [Finding("rle-size", shard, name, f"{what} segment {bad_size[0]} has size "
                                                 f"{rles[bad_size[0]]['size']}, the image is {[h, w]}")]
    try:
        areas = segment_areas(rles)
    except ValueError as exc:
        return [Finding("rle-invalid", shard, name, f"{what}: {exc}")]
    if int(areas.sum()) != h * w:
        return [Finding("rle-area", shard, name, f"{what} areas sum to {int(areas.sum())}, not H*W = {h * w}")]
    out = []
    try:
        decode_segments(rles)
    except ValueError as exc:
        out.append(Finding("rle-invalid", shard, name, f"{what} do not partition the image: {exc}"))
    if len(part["areas"]) != len(rles) or areas.tolist() != part["areas"]:
        out.append(Finding("area-mismatch", shard, name, f"{what} areas differ from their RLEs"))
    if len(part["bboxes"]) != len(rles) or segment_bboxes(rles).astype(np.int64).tolist() != part["bboxes"]:
        out.append(Finding("bbox-mismatch", shard, name, f"{what} bboxes differ from their RLEs"))
    return out


def _proposal_findings(props: Mapping[str, Any], h: int, w: int, shard: str, name: str) -> list[Finding]:
    boxes = np.asarray(props["boxes"], dtype=np.int64).reshape(-1, 4)
    n = boxes.shape[0]
    out = []
    if not len(props["sizes"]) == len(props["levels"]) == n:
        out.append(Finding("length-mismatch", shard, name, f"{n} proposal boxes, {len(props['sizes'])} sizes, "
                                                            f"{len(props['levels'])} levels"))
    outside = np.flatnonzero((boxes[:, 0] + boxes[:, 2] > w) | (boxes[:, 1] + boxes[:, 3] > h))
    if outside.size:
        out.append(Finding("box-outside-image", shard, name, f"{outside.size} proposal box(es) leave the {w}x{h} "
                                                             f"image, e.g. {boxes[outside[0]].tolist()}"))
    for fname, f in props["filters"].items():
        keep = f["keep"]
        if keep and (keep[-1] >= n or any(b <= a for a, b in zip(keep, keep[1:], strict=False))):
            out.append(Finding("filter-index", shard, name,
                               f"filter {fname} keep list is not ascending unique indices in 0..{n - 1}"))
    return out


def _meta_findings(meta: Any, key: str, config_hash: str, shard: str, name: str) -> list[Finding]:
    errors = schema_errors(meta)
    if errors:
        return [Finding("schema", shard, name, "; ".join(errors))]
    out = []
    if meta["key"] != key:
        out.append(Finding("key-mismatch", shard, name, f"JSON key {meta['key']!r} in member of key {key!r}"))
    if meta["config_hash"] != config_hash:
        out.append(Finding("config-hash-mismatch", shard, name, f"sample config_hash {meta['config_hash'][:12]}…, "
                                                                f"manifest {config_hash[:12]}…"))
    return out


def check_sample(key: str, members: Sequence[Member], config_hash: str, shard: str) -> tuple[list[Finding], Any]:
    """All checks of one sample's members; returns ``(findings, parsed JSON or None)``."""
    fields = {split_name(m.name)[1]: m for m in members}
    json_member = fields.pop(JSON_FIELD, None)
    if json_member is None:
        return [Finding("missing-member", shard, members[0].name, f"sample {key!r} has no {key}.json")], None
    name = json_member.name
    try:
        meta = members_to_sample(key, [(JSON_FIELD, json_member.data or b"")])[JSON_FIELD]
    except ValueError as exc:
        return [Finding("bad-json", shard, name, str(exc))], None
    found = _meta_findings(meta, key, config_hash, shard, name)
    if found:
        return found, None
    image_field = meta["image"]["field"]
    extra = sorted(set(fields) - {image_field})
    if extra:
        found.append(Finding("unexpected-member", shard, f"{key}.{extra[0]}", "not a member of this format"))
    image = fields.get(image_field)
    if image is None:
        return [*found, Finding("missing-member", shard, name, f"no image member {key}.{image_field}")], meta
    found += _image_findings(meta, image_field, image.data or b"", shard, image.name)
    h, w = meta["image"]["height"], meta["image"]["width"]
    for what in ("segments", "ground_truth"):
        if meta[what] is not None:
            found += _partition_findings(meta[what], what, h, w, shard, name)
    gt = meta["ground_truth"]
    if gt is not None and not len(gt["annotation_ids"]) == len(gt["category_ids"]) == len(gt["rles"]):
        found.append(Finding("length-mismatch", shard, name, "ground-truth ids and segments differ in number"))
    if meta["proposals"] is not None:
        found += _proposal_findings(meta["proposals"], h, w, shard, name)
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
