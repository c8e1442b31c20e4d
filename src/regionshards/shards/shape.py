"""Fast structural check of a parsed sample JSON: what ``sample.schema.json`` requires, checked with numpy on the
large arrays (boxes, areas, ids), for the readers' hot path.

The compiled schema (``fastjsonschema``) checks every box of a sample one Python call at a time (≈ 5 ms for
250 proposals); this module checks the same structure in ≈ 0.1 ms: exact key sets, scalar types, string
patterns, array lengths, and numeric arrays converted with ``numpy.asarray`` (an int64 array of the right shape
or a problem). One difference: numpy reads a JSON ``true`` inside a numeric array as 1, so ``validate`` sends
any document containing a ``true``/``false`` token through the full schema instead. ``verify`` always runs both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

_TOP = frozenset({"format_version", "key", "source", "image", "segments", "proposals", "ground_truth",
                  "config_hash"})
_SOURCE = frozenset({"path", "image_id", "class_index", "class_name"})
_IMAGE = frozenset({"field", "format", "mode", "width", "height", "bytes", "exif_orientation"})
_SEGMENTS = frozenset({"method", "params", "rles", "areas", "bboxes"})
_GROUND_TRUTH = frozenset({"method", "rles", "areas", "bboxes", "annotation_ids", "category_ids"})
_INSTANCES = frozenset({"annotation_ids", "category_ids", "bboxes", "iscrowd", "has_mask"})
_PROPOSALS = frozenset({"method", "params", "boxes", "sizes", "levels", "filters"})
_RLE = frozenset({"size", "counts"})
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")
_HASH = re.compile(r"[0-9a-f]{64}")
_FIELD = re.compile(r"[a-z0-9]{1,16}")
_RESERVED = frozenset({"json", "pyd", "pkl", "pickle", "pth", "pt"})
_COUNTS_CHARS = bytes(range(ord("0"), ord("o") + 1))
_INT64_MAX = 2**63 - 1


class ShapeError(ValueError):
    """The first place where a sample JSON leaves the schema (the message is ``<path>: <problem>``)."""


def _int(value: Any, minimum: int, where: str) -> None:
    if type(value) is not int or value < minimum or value > _INT64_MAX:  # the format's integers are int64
        raise ShapeError(f"{where}: must be an integer in [{minimum}, 2**63 - 1], got {str(value)[:40]!r}")


def _str(value: Any, where: str, pattern: re.Pattern[str] | None = None, min_length: int = 0) -> None:
    if type(value) is not str or len(value) < min_length or (pattern is not None and not pattern.fullmatch(value)):
        raise ShapeError(f"{where}: not a valid string: {str(value)[:40]!r}")


def _dict(value: Any, keys: frozenset[str], where: str) -> Mapping[str, Any]:
    if type(value) is not dict or value.keys() != keys:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise ShapeError(f"{where}: must be an object with exactly {sorted(keys)}, got {str(got)[:120]}")
    return value


def int_array(values: Any, minimum: int, where: str, width: int | None = None, min_items: int = 0) -> np.ndarray:
    """``values`` (a JSON list) as an int64 array of shape (N,) or (N, width), every value >= ``minimum``
    (``minimum_last`` for box sizes handled by the caller); raises ShapeError."""
    if type(values) is not list or len(values) < min_items:
        raise ShapeError(f"{where}: must be a list of at least {min_items} item(s)")
    if not values:
        return np.zeros((0,) if width is None else (0, width), np.int64)
    try:
        arr = np.asarray(values)
    except (ValueError, OverflowError):  # ragged nesting, or an integer numpy cannot hold
        raise ShapeError(f"{where}: not a regular array of integers") from None
    expected = 1 if width is None else 2
    if arr.dtype.kind != "i" or arr.ndim != expected or (width is not None and arr.shape[1] != width):
        raise ShapeError(f"{where}: must be {'integers' if width is None else f'[{width} integers] items'}")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < minimum:
        raise ShapeError(f"{where}: values must be >= {minimum}")
    return arr


def _boxes(values: Any, where: str, min_items: int = 0) -> np.ndarray:
    arr = int_array(values, 0, where, width=4, min_items=min_items)
    if arr.size and arr[:, 2:].min() < 1:
        raise ShapeError(f"{where}: box widths and heights must be >= 1")
    return arr


def _rles(rles: Any, where: str) -> int:
    if type(rles) is not list or not rles:
        raise ShapeError(f"{where}: must be a non-empty list")
    counts = []
    for i, r in enumerate(rles):
        if type(r) is not dict or r.keys() != _RLE:
            raise ShapeError(f"{where}[{i}]: must be an object with exactly ['counts', 'size']")
        size, c = r["size"], r["counts"]
        if type(size) is not list or len(size) != 2 or type(size[0]) is not int or type(size[1]) is not int \
                or size[0] < 1 or size[1] < 1:
            raise ShapeError(f"{where}[{i}].size: must be [H, W] with integers >= 1")
        if type(c) is not str or not c:
            raise ShapeError(f"{where}[{i}].counts: must be a non-empty string")
        counts.append(c)
    text = "".join(counts)
    if not text.isascii() or text.encode("ascii").translate(None, _COUNTS_CHARS):
        raise ShapeError(f"{where}: counts strings must use only the characters 0..o")
    return len(rles)


def _partition(part: Any, keys: frozenset[str], where: str, out: dict[str, np.ndarray]) -> None:
    _dict(part, keys, where)
    _str(part["method"], f"{where}.method", min_length=1)
    _rles(part["rles"], f"{where}.rles")
    out[f"{where}.areas"] = int_array(part["areas"], 1, f"{where}.areas", min_items=1)
    out[f"{where}.bboxes"] = _boxes(part["bboxes"], f"{where}.bboxes", min_items=1)
    if "params" in keys and type(part["params"]) is not dict:
        raise ShapeError(f"{where}.params: must be an object")
    for name in ("annotation_ids", "category_ids"):
        if name in keys:
            int_array(part[name], -1, f"{where}.{name}", min_items=1)


def _proposals(props: Any, out: dict[str, np.ndarray]) -> None:
    _dict(props, _PROPOSALS, "proposals")
    _str(props["method"], "proposals.method", min_length=1)
    if type(props["params"]) is not dict:
        raise ShapeError("proposals.params: must be an object")
    out["proposals.boxes"] = _boxes(props["boxes"], "proposals.boxes")
    int_array(props["sizes"], -1, "proposals.sizes")
    int_array(props["levels"], -1, "proposals.levels")
    filters = props["filters"]
    if type(filters) is not dict:
        raise ShapeError("proposals.filters: must be an object")
    for name, f in filters.items():
        _dict(f, frozenset({"used", "keep"}), f"proposals.filters.{name[:40]}")
        _str(f["used"], f"proposals.filters.{name[:40]}.used", min_length=1)
        out[f"proposals.filters.{name}.keep"] = int_array(f["keep"], 0, f"proposals.filters.{name[:40]}.keep")


def _instances(inst: Any, out: dict[str, np.ndarray]) -> None:
    _dict(inst, _INSTANCES, "instances")
    int_array(inst["annotation_ids"], -(2**63), "instances.annotation_ids")
    int_array(inst["category_ids"], -(2**63), "instances.category_ids")
    out["instances.bboxes"] = _boxes(inst["bboxes"], "instances.bboxes")
    for name in ("iscrowd", "has_mask"):
        arr = int_array(inst[name], 0, f"instances.{name}")
        if arr.size and arr.max() > 1:
            raise ShapeError(f"instances.{name}: values must be 0 or 1")


def check_shape(meta: Any) -> dict[str, np.ndarray]:
    """Raise ``ShapeError`` at the first place ``meta`` leaves the sample schema (booleans aside, see above).

    Returns the numeric arrays it converted, by path (``"proposals.boxes"``: (N, 4) int64, ``"segments.areas"``:
    (K,) int64, ``"proposals.filters.<name>.keep"`` ...), so later checks need not convert them again.
    """
    arrays: dict[str, np.ndarray] = {}
    _dict(meta, _TOP | {"instances"} if type(meta) is dict and "instances" in meta else _TOP, "sample")
    if type(meta["format_version"]) is not int or meta["format_version"] != 1:
        raise ShapeError(f"format_version: must be 1, got {str(meta['format_version'])[:20]!r}")
    _str(meta["key"], "key", _KEY)
    _str(meta["config_hash"], "config_hash", _HASH)
    src = _dict(meta["source"], _SOURCE, "source")
    for name, check in (("path", lambda v, w: _str(v, w, min_length=1)), ("image_id", lambda v, w: _int(v, 0, w)),
                        ("class_index", lambda v, w: _int(v, 0, w)), ("class_name", lambda v, w: _str(v, w))):
        if src[name] is not None:
            check(src[name], f"source.{name}")
    img = _dict(meta["image"], _IMAGE, "image")
    _str(img["field"], "image.field", _FIELD)
    if img["field"] in _RESERVED:
        raise ShapeError(f"image.field: {img['field']!r} is reserved")
    _str(img["format"], "image.format", min_length=1)
    _str(img["mode"], "image.mode", min_length=1)
    for name in ("width", "height", "bytes"):
        _int(img[name], 1, f"image.{name}")
    if img["exif_orientation"] != "ignored":
        raise ShapeError("image.exif_orientation: must be 'ignored'")
    if meta["segments"] is not None:
        _partition(meta["segments"], _SEGMENTS, "segments", arrays)
    if meta["ground_truth"] is not None:
        _partition(meta["ground_truth"], _GROUND_TRUTH, "ground_truth", arrays)
    if meta["proposals"] is not None:
        _proposals(meta["proposals"], arrays)
    if "instances" in meta:  # optional: COCO sources; it describes the ground truth, so that must be there
        if meta["ground_truth"] is None:
            raise ShapeError("instances: present without ground_truth")
        _instances(meta["instances"], arrays)
    return arrays
