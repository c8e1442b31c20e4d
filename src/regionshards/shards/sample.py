"""Sample codec: an ``InputRecord`` → the per-sample JSON; a sample dict ⇄ tar members ``<key>.<field>``.

A sample dict is WebDataset's shape: ``{"__key__": key, "<field>": value, ...}`` (plus ``"__url__"`` when read
from a shard). Fields whose last dot-part is ``json`` hold parsed JSON; every other field holds raw bytes.
JSON is written canonically (UTF-8, sorted keys, no spaces, no NaN/Infinity) so equal samples give equal bytes.
The per-sample JSON schema ships as ``sample.schema.json`` beside this module (see ``docs/format.md``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import fastjsonschema
import numpy as np

from .. import proposals as algorithms  # lazy (PEP 562): numba loads on first use, not on import
from ..images import EXIF_POLICY
from .keys import check_key
from .records import GroundTruthData, InputRecord, InstancesData, ProposalsData, SegmentsData
from .tario import MAX_FIELD_LENGTH, PICKLE_EXTENSIONS, is_valid_field

FORMAT_VERSION = 1
JSON_FIELD = "json"
# Sniffed PIL format → member extension; other formats use their lower-cased name when it is a plain word.
IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
_RESERVED_FIELDS = frozenset({JSON_FIELD}) | PICKLE_EXTENSIONS


def canonical_json(obj: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON; raises ValueError on NaN/Infinity or non-JSON types."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def image_extension(image_format: str) -> str:
    """Member extension of a sniffed PIL format name (``"JPEG"`` → ``"jpg"``); never from the file name."""
    ext = IMAGE_EXTENSIONS.get(image_format, str(image_format).lower())
    if not (ext.isascii() and ext.isalnum()) or len(ext) > MAX_FIELD_LENGTH or ext in _RESERVED_FIELDS:
        raise ValueError(f"image format {image_format!r} has no safe member extension")
    return ext


def is_json_field(field: str) -> bool:
    return field.rsplit(".", 1)[-1] == JSON_FIELD


# ---------------------------------------------------------------------------------------------- record → JSON


def _as_int64(values: Any, what: str) -> np.ndarray:
    """Numbers as int64, refusing non-integral values (boxes and counts are pixel-exact)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":  # the usual case: no float check needed
        return arr.astype(np.int64, copy=False)
    as_int = arr.astype(np.int64)
    if arr.dtype.kind not in "fb" or not np.array_equal(as_int, arr):
        raise ValueError(f"{what}: values must be whole numbers, got e.g. {arr.ravel()[:4].tolist()}")
    return as_int


def _pixel_boxes(boxes: Any, height: int, width: int, what: str) -> np.ndarray:
    """(N, 4) whole-number ``[x, y, w, h]`` inside the image as int64; raises ValueError naming ``what``."""
    arr = np.asarray(boxes)
    if arr.size == 0:
        return np.zeros((0, 4), np.int64)
    b = _as_int64(arr.reshape(-1, 4), f"{what} (pixel-covering [x, y, w, h])")
    low = b.min(axis=0)
    if low[0] < 0 or low[1] < 0 or low[2] < 1 or low[3] < 1 or (b[:, 0] + b[:, 2]).max() > width or (
        b[:, 1] + b[:, 3]
    ).max() > height:
        bad = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] < 1) | (b[:, 3] < 1)
        bad |= (b[:, 0] + b[:, 2] > width) | (b[:, 1] + b[:, 3] > height)
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: box {i} {b[i].tolist()} is empty or outside the {width}x{height} image")
    return b


def _int_list(values: Any, n: int, what: str) -> list[int]:
    arr = np.asarray(values).reshape(-1)
    if arr.size != n:
        raise ValueError(f"{what}: {arr.size} values for {n} entries")
    return _as_int64(arr, what).tolist() if n else []


def _partition_json(part: SegmentsData | GroundTruthData, height: int, width: int, what: str) -> dict[str, Any]:
    k = len(part.rles)
    if k == 0:
        raise ValueError(f"{what}: at least one segment is needed (segments partition the image)")
    size = [height, width]
    rles = []
    for i, rle in enumerate(part.rles):
        if rle["size"] != size and [int(v) for v in rle["size"]] != size:  # lists of ints compare fast
            raise ValueError(f"{what}: segment {i} has size {list(rle['size'])}, the image is {size}")
        counts = rle["counts"]
        rles.append({"size": size, "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts})
    areas = _int_list(part.areas, k, f"{what} areas")
    if sum(areas) != height * width:
        raise ValueError(f"{what}: areas sum to {sum(areas)}, not H*W = {height * width}; segments must cover it")
    bboxes = _pixel_boxes(part.bboxes, height, width, f"{what} bboxes")
    if bboxes.shape[0] != k:
        raise ValueError(f"{what}: {bboxes.shape[0]} boxes for {k} segments")
    return {"method": part.method, "rles": rles, "areas": areas, "bboxes": bboxes.tolist()}


def _proposals_json(props: ProposalsData, height: int, width: int, key: str) -> dict[str, Any]:
    boxes = _pixel_boxes(props.boxes, height, width, f"{key}: proposals")
    n = boxes.shape[0]
    filters = {}
    for name, f in sorted(props.filters.items()):
        keep = _int_list(f.keep, np.asarray(f.keep).size, f"{key}: filter {name} keep")
        if keep and (keep[0] < 0 or keep[-1] >= n or np.any(np.diff(keep) <= 0)):
            raise ValueError(f"{key}: filter {name} keep must be ascending unique indices in 0..{n - 1}")
        filters[name] = {"used": f.used, "keep": keep}
    return {
        "method": props.method,
        "params": dict(props.params),
        "boxes": boxes.tolist(),
        "sizes": _int_list(props.sizes, n, f"{key}: proposal sizes"),
        "levels": _int_list(props.levels, n, f"{key}: proposal levels"),
        "filters": filters,
    }


def _instances_json(inst: InstancesData, gt: Mapping[str, Any] | None, height: int, width: int,
                    key: str) -> dict[str, Any]:
    if gt is None:
        raise ValueError(f"{key}: instances need the ground truth they refer to")
    ids = _int_list(inst.annotation_ids, len(inst.annotation_ids), f"{key}: instance annotation ids")
    n = len(ids)
    if len(set(ids)) != n or ids != sorted(ids):
        raise ValueError(f"{key}: instance annotation ids must be unique and ascending")
    bboxes = _pixel_boxes(inst.bboxes, height, width, f"{key}: instance bboxes")
    if bboxes.shape[0] != n:
        raise ValueError(f"{key}: {bboxes.shape[0]} instance boxes for {n} instances")
    out = {"annotation_ids": ids, "category_ids": _int_list(inst.category_ids, n, f"{key}: instance category ids"),
           "bboxes": bboxes.tolist()}
    shown = set(gt["annotation_ids"]) - {-1}  # -1: the background segment
    for name, values in (("iscrowd", inst.iscrowd), ("has_mask", inst.has_mask)):
        out[name] = _int_list(values, n, f"{key}: instance {name}")
        if any(v not in (0, 1) for v in out[name]):
            raise ValueError(f"{key}: instance {name} values must be 0 or 1")
    if out["has_mask"] != [int(i in shown) for i in ids]:
        raise ValueError(f"{key}: instance has_mask must be 1 exactly for the ids shown in the ground truth")
    return out


def sample_json(record: InputRecord, config_hash: str) -> dict[str, Any]:
    """The JSON object of an ok record's ``<key>.json`` member (schema: ``sample.schema.json``).

    Raises:
        ValueError: naming the key, for a failed record, missing image data, sizes that disagree, segments
            that do not cover the image, non-integral or out-of-image boxes, or bad filter indices.
    """
    key = check_key(record.key)
    if not record.ok:
        raise ValueError(f"{key}: a failed input has no sample, only an index row")
    if not record.image:
        raise ValueError(f"{key}: an ok record needs the original image bytes")
    h, w = record.height, record.width
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise ValueError(f"{key}: an ok record needs a positive integer width and height, got {w}x{h}")
    try:
        field = image_extension(record.image_format or "")
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    s = record.source
    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "source": {"path": s.path, "image_id": s.image_id, "class_index": s.class_index, "class_name": s.class_name},
        "image": {
            "field": field,
            "format": record.image_format,
            "mode": record.image_mode,
            "width": w,
            "height": h,
            "bytes": len(record.image),
            "exif_orientation": EXIF_POLICY,
        },
        "segments": None,
        "proposals": None,
        "ground_truth": None,
        "config_hash": config_hash,
    }
    if record.segments is not None:
        out["segments"] = _partition_json(record.segments, h, w, f"{key}: segments")
        out["segments"]["params"] = dict(record.segments.params)
    if record.proposals is not None:
        out["proposals"] = _proposals_json(record.proposals, h, w, key)
    if record.ground_truth is not None:
        gt = record.ground_truth
        out["ground_truth"] = _partition_json(gt, h, w, f"{key}: ground truth")
        k = len(gt.rles)
        out["ground_truth"]["annotation_ids"] = _int_list(gt.annotation_ids, k, f"{key}: ground-truth annotation ids")
        out["ground_truth"]["category_ids"] = _int_list(gt.category_ids, k, f"{key}: ground-truth category ids")
    if record.instances is not None:  # optional member of the object: COCO sources only (docs/format.md §4)
        out["instances"] = _instances_json(record.instances, out["ground_truth"], h, w, key)
    return out


def record_sample(record: InputRecord, config_hash: str) -> dict[str, Any]:
    """The sample dict ``{"__key__", "<image ext>": bytes, "json": dict}`` of an ok record."""
    meta = sample_json(record, config_hash)
    return {"__key__": record.key, meta["image"]["field"]: bytes(record.image or b""), JSON_FIELD: meta}


# ------------------------------------------------------------------------------------- sample ⇄ tar members


def check_field(field: str) -> str:
    """Return ``field`` if it is a safe member field (dot-separated words, no pickle extension), else raise."""
    if not isinstance(field, str) or not is_valid_field(field):
        raise ValueError(f"invalid member field {field!r}: 1..{MAX_FIELD_LENGTH} characters of dot-separated "
                         f"[A-Za-z0-9_-] words, none of {sorted(PICKLE_EXTENSIONS)}")
    return field


def sample_to_members(sample: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """Tar members ``("<key>.<field>", bytes)`` of a sample dict, sorted by name.

    JSON fields are encoded with ``canonical_json``; other fields must be bytes. Keys starting with ``__``
    (``__key__``, ``__url__``) are metadata, not members.
    """
    key = check_key(sample.get("__key__"))
    members = []
    for field, value in sample.items():
        if field.startswith("__"):
            continue
        check_field(field)
        if is_json_field(field):
            data = canonical_json(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        else:
            raise ValueError(f"{key}.{field}: non-JSON fields must be bytes, got {type(value).__name__}")
        members.append((f"{key}.{field}", data))
    if not members:
        raise ValueError(f"sample {key!r} has no fields")
    members.sort()
    return members


def members_to_sample(
    key: str, fields: Sequence[tuple[str, bytes]], parse_json: bool = True, limits: Any = None
) -> dict[str, Any]:
    """Inverse of ``sample_to_members`` for one key's ``(field, bytes)`` pairs; JSON is parsed within ``limits``
    (``validate.Limits``, default ``validate.DEFAULT_LIMITS``: size and nesting depth checked before parsing).

    Raises:
        validate.SampleError (a ValueError): a JSON field is too large, too deep or not valid UTF-8 JSON (the
            message names ``<key>.<field>``).
    """
    from .validate import DEFAULT_LIMITS, SampleError, load_json  # validate imports this module

    sample: dict[str, Any] = {"__key__": key}
    for field, data in fields:
        if parse_json and is_json_field(field):
            try:
                sample[field] = load_json(data, limits or DEFAULT_LIMITS)
            except SampleError as exc:
                raise SampleError(exc.code, f"{key}.{field}: {exc}") from None
        else:
            sample[field] = data
    return sample


# --------------------------------------------------------------------------------------- schema and helpers


@functools.cache
def sample_schema() -> dict[str, Any]:
    """The per-sample JSON Schema (draft-07) shipped with the package as ``sample.schema.json``."""
    return json.loads(resources.files(__package__).joinpath("sample.schema.json").read_text("utf-8"))


@functools.cache
def _validator() -> Any:
    # fastjsonschema compiles the schema to Python: ~1 ms for a sample with 1000 boxes, where the
    # reference jsonschema takes ~16 ms (tests check the two agree).
    return fastjsonschema.compile(sample_schema())


def schema_errors(meta: Any) -> list[str]:
    """The first schema violation of a parsed sample JSON as ``["<path>: <message>"]``; empty when valid."""
    try:
        _validator()(meta)
    except fastjsonschema.JsonSchemaValueException as err:
        return [err.message[:300]]
    return []


def image_field(sample: Mapping[str, Any]) -> str:
    """The image field of a sample read from a shard (named by its JSON's ``image.field``)."""
    return sample[JSON_FIELD]["image"]["field"]


def label_map(sample: Mapping[str, Any], which: str = "segments", limits: Any = None) -> np.ndarray:
    """(H, W) int32 label map of a read sample's ``segments`` (or ``ground_truth``), without pycocotools.

    The sample's JSON is checked first (``validate.meta_problems``: schema shape, pixel cap of ``limits``, RLE
    sizes equal to the image, counts length and run sums), so a dict that did not come from the validating
    reader cannot make this allocate from a declared size.

    Raises:
        ValueError: the sample has no such partition, or the first problem found (naming the sample).
    """
    from .validate import DEFAULT_LIMITS, meta_problems  # validate imports this module

    meta = sample[JSON_FIELD]
    problems = meta_problems(meta, limits or DEFAULT_LIMITS, full_schema=False)
    if problems:
        raise ValueError(f"sample {sample.get('__key__')!r}: {problems[0].code}: {problems[0].message}")
    part = meta[which]
    if part is None:
        raise ValueError(f"sample {sample.get('__key__')!r} has no {which}")
    return algorithms.decode_segments(part["rles"])
