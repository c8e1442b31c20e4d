"""The validating sample parser: the one way every reader (``verify``, the reports, the trainer's loader) turns a
sample's member bytes into trusted values.

Nothing here allocates from a size the data declares before checking it against what the bytes really are:

* JSON (``bounded_json``): at most ``Limits.max_json_bytes`` bytes and ``Limits.max_json_depth`` levels, checked on the
  bytes *before* parsing (so a document nested 10⁵ levels never reaches the recursive decoder);
* shape: the per-sample schema (``sample.schema.json``), then every integer within int64;
* image: the member is sniffed (header only, every Pillow exception mapped to a problem); its header size must
  be at most ``Limits.max_pixels`` and equal the JSON's ``width``/``height``;
* RLEs: each ``size`` equals the image's ``[H, W]``; the counts strings of one partition hold at most
  ``7 * (2 H W + K)`` characters (the most a partition of H·W pixels into K segments can need); each segment's
  runs sum to H·W — all before any label map is painted;
* boxes lie within the image, per-segment, per-proposal and per-instance lists have matching lengths, filter
  indices are ascending indices into the proposals, instance ``has_mask`` agrees with the ground truth.

Problems come back as ``Problem(code, field, message)``: ``verify`` turns them into findings, the reader into
``ShardError``s naming shard and member. Codes are listed in ``docs/format.md`` ("What a reader guarantees").
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..images import DEFAULT_MAX_PIXELS
from .bounded_json import (  # noqa: F401  (the JSON reading is part of this module's interface)
    DEFAULT_LIMITS,
    DEFAULT_MAX_JSON_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    Limits,
    SampleError,
    dataset_limits,
    holds_wide_float,
    json_depth,
    load_json,
    nesting,
)
from .jpeg_header import jpeg_header
from .sample import JSON_FIELD, image_extension, schema_errors
from .shape import ShapeError, check_shape

MAX_CHARS_PER_COUNT = 7  # a run count is at most 2**32 - 1: 7 five-bit chunks


@dataclass(frozen=True)
class Problem:
    """Why a sample is refused: ``code`` (as in ``docs/format.md``), the member ``field`` it concerns (``json``
    or the image's extension) and a message."""

    code: str
    field: str
    message: str


# ----------------------------------------------------------------------------------------------------- image


@dataclass(frozen=True)
class ImageHeader:
    """What an image member's header says: PIL format and mode, width and height in pixels."""

    format: str
    mode: str
    width: int
    height: int


def sniff_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Read an image's header (no pixel decoding) and check its size against ``max_pixels``.

    Raises:
        SampleError: ``image-unreadable`` for anything Pillow cannot identify or parse (every Pillow exception,
            whatever its type), ``too-many-pixels`` over the cap.
    """
    plain = jpeg_header(data)  # a plain JPEG's header without Pillow's per-marker handlers: the same values
    try:
        if plain is not None:
            header = ImageHeader(*plain)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides, below
                with Image.open(io.BytesIO(data)) as img:
                    header = ImageHeader(str(img.format), str(img.mode), int(img.size[0]), int(img.size[1]))
    except Image.DecompressionBombError as exc:
        raise SampleError("too-many-pixels", f"image header: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types; each one is a refused image
        raise SampleError("image-unreadable", f"not a readable image: {type(exc).__name__}: {exc}") from None
    if header.width * header.height > max_pixels:
        raise SampleError("too-many-pixels", f"image header says {header.width}x{header.height} = "
                                             f"{header.width * header.height} pixels > limit {max_pixels}")
    if header.width < 1 or header.height < 1:
        raise SampleError("image-unreadable", f"empty image {header.width}x{header.height}")
    return header


# ------------------------------------------------------------------------------------------------- sample JSON


def _boxes_problem(b: np.ndarray, h: int, w: int, what: str) -> Problem | None:
    """(N, 4) int64 ``[x, y, w, h]`` (non-negative, sizes >= 1, checked by ``shape``) inside the image."""
    outside = np.flatnonzero((b[:, 0] + b[:, 2] > w) | (b[:, 1] + b[:, 3] > h))
    if outside.size:
        return Problem("box-outside-image", JSON_FIELD, f"{outside.size} {what} box(es) leave the {w}x{h} image, "
                                                        f"e.g. {b[outside[0]].tolist()}")
    return None


def _counts_problem(rles: list[dict[str, Any]], h: int, w: int, what: str) -> Problem | None:
    """Counts strings short enough for a partition of the image, each segment's runs summing to H·W."""
    chars = sum(len(r["counts"]) for r in rles)
    cap = MAX_CHARS_PER_COUNT * (2 * h * w + len(rles))
    if chars > cap:
        return Problem("rle-too-long", JSON_FIELD, f"{what}: {chars} characters of RLE counts, more than a "
                                                    f"{h}x{w} partition into {len(rles)} segments can need ({cap})")
    try:
        from ..proposals.rle import _gather_counts  # numba loads here, not when a reader is imported

        counts, offsets = _gather_counts(rles)
    except ValueError as exc:
        return Problem("rle-invalid", JSON_FIELD, f"{what}: {exc}")
    totals = np.add.reduceat(counts, offsets[:-1]) if counts.size else np.zeros(len(rles), np.int64)
    bad = np.flatnonzero(totals != h * w)
    if bad.size:
        return Problem("rle-invalid", JSON_FIELD, f"{what} segment {bad[0]}: runs sum to {int(totals[bad[0]])} "
                                                   f"pixels, not H*W = {h * w}")
    return None


def _partition_problems(part: Mapping[str, Any], what: str, h: int, w: int,
                        arrays: Mapping[str, np.ndarray]) -> list[Problem]:
    rles = part["rles"]
    k = len(rles)
    bad_size = next((i for i, r in enumerate(rles) if r["size"] != [h, w]), None)
    if bad_size is not None:
        return [Problem("rle-size", JSON_FIELD, f"{what} segment {bad_size} has size {rles[bad_size]['size']}, "
                                                f"the image is {[h, w]}")]
    lengths = {name: len(part[name]) for name in ("areas", "bboxes", "annotation_ids", "category_ids")
               if name in part}
    if any(n != k for n in lengths.values()):
        return [Problem("length-mismatch", JSON_FIELD, f"{what}: {k} RLEs but {lengths}")]
    found = (_counts_problem(rles, h, w, what), _boxes_problem(arrays[f"{what}.bboxes"], h, w, f"{what} bbox"))
    return [p for p in found if p is not None]


def _proposal_problems(props: Mapping[str, Any], h: int, w: int, arrays: Mapping[str, np.ndarray]) -> list[Problem]:
    n = len(props["boxes"])
    out = []
    if not len(props["sizes"]) == len(props["levels"]) == n:
        out.append(Problem("length-mismatch", JSON_FIELD, f"{n} proposal boxes, {len(props['sizes'])} sizes, "
                                                          f"{len(props['levels'])} levels"))
    problem = _boxes_problem(arrays["proposals.boxes"], h, w, "proposal")
    if problem is not None:
        out.append(problem)
    for name in props["filters"]:
        keep = arrays[f"proposals.filters.{name}.keep"]
        if keep.size and (keep[-1] >= n or (keep.size > 1 and np.diff(keep).min() <= 0)):
            out.append(Problem("filter-index", JSON_FIELD,
                               f"filter {name} keep list is not ascending unique indices in 0..{n - 1}"))
    return out


def _instance_problems(inst: Mapping[str, Any], gt: Mapping[str, Any], h: int, w: int,
                       arrays: Mapping[str, np.ndarray]) -> list[Problem]:
    ids = inst["annotation_ids"]
    lengths = {name: len(inst[name]) for name in ("category_ids", "bboxes", "iscrowd", "has_mask")}
    if any(n != len(ids) for n in lengths.values()):
        return [Problem("length-mismatch", JSON_FIELD, f"instances: {len(ids)} annotation ids but {lengths}")]
    problem = _boxes_problem(arrays["instances.bboxes"], h, w, "instance")
    out = [problem] if problem is not None else []
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        out.append(Problem("instance-mismatch", JSON_FIELD, "instances: annotation ids are not ascending and unique"))
    shown = set(gt["annotation_ids"]) - {-1}  # -1: the background segment
    wrong = next((i for i, (a, m) in enumerate(zip(ids, inst["has_mask"], strict=True)) if m != (a in shown)), None)
    if wrong is not None:
        shows = "shows" if ids[wrong] in shown else "does not show"
        out.append(Problem("instance-mismatch", JSON_FIELD, f"instances: has_mask of annotation {ids[wrong]} "
                                                            f"is {inst['has_mask'][wrong]}, but the ground truth "
                                                            f"{shows} it"))
    return out


def meta_problems(meta: Any, limits: Limits = DEFAULT_LIMITS, full_schema: bool = True) -> list[Problem]:
    """Everything that makes a parsed sample JSON unsafe or inconsistent on its own (no image needed).

    The structure comes first (so every later access has the documented type): ``shape.check_shape`` always,
    the compiled schema too with ``full_schema`` (see ``shape`` for the one case where they differ). A sample
    whose image is over the pixel cap or whose RLE sizes differ from the image stops there, so nothing is
    decoded from such sizes.
    """
    errors = schema_errors(meta) if full_schema else []
    arrays: dict[str, np.ndarray] = {}
    if not errors:
        try:
            arrays = check_shape(meta)
        except ShapeError as exc:
            errors = [str(exc)]
    if errors:
        return [Problem("schema", JSON_FIELD, "; ".join(errors))]
    img = meta["image"]
    h, w = img["height"], img["width"]
    if h * w > limits.max_pixels:
        return [Problem("too-many-pixels", JSON_FIELD, f"JSON says the image is {w}x{h} = {w * h} pixels > limit "
                                                       f"{limits.max_pixels}")]
    out: list[Problem] = []
    for what in ("segments", "ground_truth"):
        if meta[what] is not None:
            out += _partition_problems(meta[what], what, h, w, arrays)
    if meta["proposals"] is not None:
        out += _proposal_problems(meta["proposals"], h, w, arrays)
    if "instances" in meta:
        out += _instance_problems(meta["instances"], meta["ground_truth"], h, w, arrays)
    return out


def _image_problems(meta: Mapping[str, Any], field: str, data: bytes, limits: Limits) -> list[Problem]:
    img = meta["image"]
    out = []
    if img["bytes"] != len(data):
        out.append(Problem("image-mismatch", field, f"{len(data)} bytes, JSON says {img['bytes']}"))
    try:
        header = sniff_image(data, limits.max_pixels)
    except SampleError as exc:
        return [Problem(exc.code, field, str(exc)), *out]  # the image itself is refused: say that first
    try:
        extension = image_extension(header.format)
    except ValueError:
        extension = None
    if header.format != img["format"] or extension != field:
        out.append(Problem("image-mismatch", field, f"sniffed format {header.format}, JSON {img['format']}, "
                                                    f"member extension {field!r}"))
    if (header.width, header.height) != (img["width"], img["height"]):
        out.append(Problem("image-mismatch", field, f"stored image is {header.width}x{header.height}, JSON says "
                                                    f"{img['width']}x{img['height']}"))
    return out


def check_sample(
    key: str, fields: Mapping[str, bytes], limits: Limits = DEFAULT_LIMITS, config_hash: str | None = None,
    full_schema: bool | None = None,
) -> tuple[Any, list[Problem]]:
    """Validate one sample's members ``{field: bytes}``: returns ``(parsed JSON or None, problems)``.

    The parsed JSON is returned only when its structure is trusted (schema, sizes, counts, boxes); image and
    membership problems are listed beside it. With ``config_hash`` the sample's must equal it. ``full_schema``
    (default: only when the JSON holds a ``true``/``false`` token) adds the compiled schema to the fast check.
    """
    data = fields.get(JSON_FIELD)
    if data is None:
        return None, [Problem("missing-member", next(iter(fields), JSON_FIELD), f"sample {key!r} has no {key}.json")]
    try:
        # No text prescan: the structure is fixed by the schema but for the params, whose depth is checked below.
        meta = load_json(data, limits, prescan=False, fast=True)
    except SampleError as exc:
        return None, [Problem(exc.code, JSON_FIELD, f"{key}.json: {exc}")]
    if full_schema is None:
        full_schema = b"true" in data or b"false" in data
    problems = meta_problems(meta, limits, full_schema)
    if problems:
        return None, problems
    params = [meta[p]["params"] for p in ("segments", "proposals") if meta[p] is not None]
    if holds_wide_float(params):  # maybe orjson's float for an integer past 64 bits: read as the stdlib reads
        meta = load_json(data, limits, prescan=False)
        problems = meta_problems(meta, limits, full_schema)
        if problems:
            return None, problems
        params = [meta[p]["params"] for p in ("segments", "proposals") if meta[p] is not None]
    depth = 1 + nesting(params, limits.max_json_depth)  # the sample object around the list standing for the parts
    if depth > limits.max_json_depth:
        return None, [Problem("json-too-deep", JSON_FIELD, f"{key}.json: params nested {depth} levels > limit of "
                                                           f"{limits.max_json_depth}")]
    if meta["key"] != key:
        problems.append(Problem("key-mismatch", JSON_FIELD, f"JSON key {meta['key']!r} in member of key {key!r}"))
    if config_hash is not None and meta["config_hash"] != config_hash:
        problems.append(Problem("config-hash-mismatch", JSON_FIELD, f"sample config_hash {meta['config_hash'][:12]}"
                                                                    f"…, manifest {config_hash[:12]}…"))
    image_field = meta["image"]["field"]
    extra = sorted(set(fields) - {image_field, JSON_FIELD})
    if extra:
        problems.append(Problem("unexpected-member", extra[0], "not a member of this format"))
    image = fields.get(image_field)
    if image is None:
        problems.append(Problem("missing-member", JSON_FIELD, f"no image member {key}.{image_field}"))
    else:
        problems += _image_problems(meta, image_field, image, limits)
    return meta, problems


# ------------------------------------------------------------------------------------------------ summary.json

_SUMMARY_NUMBERS = ("inputs", "ok", "failed", "shards", "shards_reused", "wall_seconds", "images_per_second", "cpus")
_SUMMARY_REQUIRED = ("wall_seconds", "images_per_second", "cpus")  # what every build writes and stats shows
_SUMMARY_TABLES = ("failure_reasons", "segments_per_image", "proposals_per_image", "core_seconds")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) < 2**63 if isinstance(value, int) else bool(np.isfinite(value))


def check_summary(summary: Any) -> list[str]:
    """Problems of a parsed build ``summary.json``: an object with the wall time, rate and CPUs, whose known
    fields are finite numbers (or objects of them); unknown fields are allowed. Empty when usable."""
    if not isinstance(summary, dict):
        return [f"a JSON {type(summary).__name__}, not an object"]
    out = [f"{k} is missing" for k in _SUMMARY_REQUIRED if k not in summary]
    out += [f"{k} is {summary[k]!r:.40}, not a number" for k in _SUMMARY_NUMBERS
            if k in summary and not _is_number(summary[k])]
    for k in _SUMMARY_TABLES:
        if k in summary and not (isinstance(summary[k], dict) and all(_is_number(v) for v in summary[k].values())):
            out.append(f"{k} is not an object of numbers")
    return out
