"""Reading JSON within limits: the size and nesting depth of a document are checked on its bytes before any
parser sees it (a document nested 10⁵ levels never reaches a recursive decoder), and what the data may not
be is refused with a machine-readable ``SampleError``. ``validate`` builds the sample checks on this."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson

from ..images import DEFAULT_MAX_PIXELS

DEFAULT_MAX_JSON_BYTES = 64 << 20
DEFAULT_MAX_JSON_DEPTH = 32  # the format nests 5 levels (sample → segments → rles → [i] → size)


@dataclass(frozen=True)
class Limits:
    """What a reader accepts before it allocates anything (see the module docstring)."""

    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_pixels: int = DEFAULT_MAX_PIXELS


DEFAULT_LIMITS = Limits()


def dataset_limits(limits: Limits, manifest: Mapping[str, Any] | None) -> Limits:
    """``limits`` tightened by the dataset's own pixel cap: the build refused images over its config's
    ``max_pixels``, so a sample above it cannot be genuine. A manifest can only lower the reader's cap."""
    config = (manifest or {}).get("config")
    cap = config.get("max_pixels") if isinstance(config, dict) else None
    if isinstance(cap, int) and not isinstance(cap, bool) and 0 < cap < limits.max_pixels:
        return replace(limits, max_pixels=cap)
    return limits


class SampleError(ValueError):
    """A refused value outside a sample (e.g. JSON that is too deep); ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_STRING = re.compile(rb'"[^"]*"')
_NOT_SYNTAX = bytes(b for b in range(256) if b not in b'"[]{}')
_OPEN = np.zeros(256, np.int8)
_OPEN[list(b"[{")] = 1
_OPEN[list(b"]}")] = -1


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays/objects in JSON text (an upper bound for invalid JSON), without parsing.

    Escaped backslashes and quotes are dropped (left to right, as the decoder pairs them), then everything but
    quotes and brackets, then whole strings (a ``[`` inside a string does not nest); the brackets left are
    counted. Memory stays a small multiple of ``len(data)``.
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    syntax = data.translate(None, _NOT_SYNTAX)
    if b'"' in syntax:
        syntax = _STRING.sub(b"", syntax)
    if not syntax:
        return 0
    return int(np.cumsum(_OPEN[np.frombuffer(syntax, np.uint8)], dtype=np.int32).max())


def load_json(data: bytes, limits: Limits = DEFAULT_LIMITS, prescan: bool = True, fast: bool = False) -> Any:
    """Parse JSON bytes within ``limits``.

    ``prescan=False`` skips the depth scan of the text: the C decoder then stops a document nested past the
    interpreter's recursion limit (≈ 1000) with a RecursionError, reported as ``json-too-deep``, and the caller
    checks the depth of what it parsed (``check_sample`` does, for the only free-form parts, the ``params``).

    ``fast=True`` parses with orjson (≈ 3x the stdlib's speed, ≈ 0.14 ms per trainer sample) and leaves to the
    stdlib only what orjson refuses (NaN, exponents past float range, UTF-16/32, lone surrogates, too deep, not
    JSON), so the same documents are read and refused, to the same values but one: an integer outside
    [-2**63, 2**64) comes back as the nearest float (the stdlib keeps the integer). The sample checks refuse
    such a float wherever the format has an integer, and ``check_sample`` re-reads a sample whose free-form
    ``params`` hold one with the stdlib.

    Raises:
        SampleError: code ``json-too-large``, ``json-too-deep`` or ``bad-json`` (not UTF-8 / not JSON).
    """
    if len(data) > limits.max_json_bytes:
        raise SampleError("json-too-large", f"{len(data)} bytes of JSON > limit of {limits.max_json_bytes}")
    depth = json_depth(data) if prescan else 0
    if depth > limits.max_json_depth:
        raise SampleError("json-too-deep", f"JSON nested {depth} levels > limit of {limits.max_json_depth}")
    if fast:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib decides, with its errors below
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SampleError("bad-json", f"invalid JSON: {exc}") from None
    except RecursionError:  # only without the prescan
        raise SampleError("json-too-deep", "JSON nests deeper than the decoder follows") from None


def nesting(value: Any, limit: int) -> int:
    """Depth of nested lists/dicts in a parsed value (1 for ``[]``), counting no further than ``limit + 1``;
    iterative, so any depth is safe."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def holds_wide_float(value: Any) -> bool:
    """Whether a parsed value holds a float of magnitude >= 2**63 (iterative, like ``nesting``)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float and abs(item) >= 2.0**63:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
