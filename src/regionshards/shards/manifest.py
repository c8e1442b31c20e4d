"""``manifest.json``: seals a dataset. Written last, atomically, once every shard is in place.

It holds the format version, the tool version, the full build config and its hash, one entry per shard (tar
and index names, sha256, bytes, inputs, samples, failures by reason) and the totals. The config hash is the
SHA-256 of the config's canonical JSON (sorted keys, no spaces, ASCII escapes, no NaN), so ``1000`` and
``1000.0`` are different configs. The file itself is JSON with sorted keys and two-space indents, so the same
shards and config give the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema

from .. import __version__
from ._fs import NotARegularFile, open_input, read_capped
from .sample import FORMAT_VERSION
from .store import Store

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 30  # read no more than this (a manifest of 10^6 shards is ~500 MB)
FORMAT_NAME = "regionshards"


class ManifestError(ValueError):
    """A manifest that cannot be trusted; the message names the file and the problem."""


def canonical_config(config: Mapping[str, Any]) -> bytes:
    """The bytes the config hash is taken over (raises ValueError for NaN/Infinity or non-JSON values)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``canonical_config(config)``."""
    return hashlib.sha256(canonical_config(config)).hexdigest()


@dataclass(frozen=True)
class ShardInfo:
    """One shard's manifest entry (returned by ``writer.write_shard``)."""

    name: str  # "<prefix>-000000.tar"
    sha256: str
    bytes: int
    index: str  # "<prefix>-000000.parquet"
    index_sha256: str
    index_bytes: int
    inputs: int
    samples: int
    failures: int
    failure_reasons: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["failure_reasons"] = dict(sorted(self.failure_reasons.items()))
        return out

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ShardInfo:
        return cls(**{**entry, "failure_reasons": dict(entry.get("failure_reasons", {}))})


def _check_entries(shards: list[ShardInfo]) -> None:
    names = Counter(s.name for s in shards) + Counter(s.index for s in shards)
    dupes = sorted(n for n, c in names.items() if c > 1)
    if dupes:
        raise ManifestError(f"shard names appear twice: {dupes}")
    for s in shards:
        if s.inputs != s.samples + s.failures or sum(s.failure_reasons.values()) != s.failures:
            raise ManifestError(f"{s.name}: inputs {s.inputs} != samples {s.samples} + failures {s.failures} "
                                f"(by reason {dict(s.failure_reasons)})")


def build_manifest(config: Mapping[str, Any], shards: Iterable[ShardInfo]) -> dict[str, Any]:
    """The manifest object for ``shards`` (sorted by name) built with ``config``.

    Raises:
        ManifestError: duplicate shard names, or a shard whose inputs != samples + failures.
    """
    entries = sorted(shards, key=lambda s: s.name)
    _check_entries(entries)
    reasons: Counter[str] = Counter()
    for s in entries:
        reasons.update(s.failure_reasons)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool": {"name": "regionshards", "version": __version__},
        "config": json.loads(canonical_config(config)),
        "config_hash": config_hash(config),
        "shards": [s.to_json() for s in entries],
        "totals": {
            "shards": len(entries),
            "inputs": sum(s.inputs for s in entries),
            "samples": sum(s.samples for s in entries),
            "failures": sum(s.failures for s in entries),
            "bytes": sum(s.bytes + s.index_bytes for s in entries),
            "failure_reasons": dict(sorted(reasons.items())),
        },
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Deterministic file bytes of a manifest object."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def write_manifest(out_dir: str | Path, config: Mapping[str, Any], shards: Iterable[ShardInfo]) -> Path | str:
    """Write ``out_dir/manifest.json`` atomically (on an object store: one whole object); call it after every
    shard has been written. Returns its path (its URL for an object store)."""
    store = Store(out_dir)
    store.write(MANIFEST_NAME, manifest_bytes(build_manifest(config, shards)))
    return store.local / MANIFEST_NAME if store.local is not None else store.join(MANIFEST_NAME)


@functools.cache
def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft-07) shipped with the package as ``manifest.schema.json``."""
    return json.loads(resources.files(__package__).joinpath("manifest.schema.json").read_text("utf-8"))


@functools.cache
def _validator() -> Any:
    return fastjsonschema.compile(manifest_schema())


def manifest_schema_errors(manifest: Any) -> list[str]:
    """The first schema violation of a parsed manifest (empty when it has the documented structure)."""
    try:
        _validator()(manifest)
    except fastjsonschema.JsonSchemaValueException as err:
        return [err.message[:300]]
    return []


def manifest_problems(manifest: Any) -> list[str]:
    """Everything wrong with a parsed manifest: schema, config hash, per-shard counts and totals."""
    problems = manifest_schema_errors(manifest)
    if problems:
        return problems
    if config_hash(manifest["config"]) != manifest["config_hash"]:
        problems.append(f"config_hash {manifest['config_hash']} is not the hash of the config it holds "
                        f"({config_hash(manifest['config'])})")
    try:
        expected = build_manifest(manifest["config"], [ShardInfo.from_json(s) for s in manifest["shards"]])
    except ManifestError as exc:
        return [*problems, str(exc)]
    if expected["totals"] != manifest["totals"]:
        problems.append(f"totals {manifest['totals']} do not add up from the shard entries: {expected['totals']}")
    if [s["name"] for s in manifest["shards"]] != [s["name"] for s in expected["shards"]]:
        problems.append("shard entries are not sorted by name")
    return problems


def read_manifest(source: str | Path) -> dict[str, Any]:
    """Parse and check a manifest (path or URL); never unpickles.

    Raises:
        ManifestError: unreadable JSON, a format version this reader does not know, or any problem listed by
            ``manifest_problems`` (the message names the file).
    """
    from .validate import Limits, load_json  # validate imports sample, as this module does

    try:
        with open_input(source) as f:
            raw = read_capped(f, MAX_MANIFEST_BYTES, str(source))
        manifest = load_json(raw, Limits(max_json_bytes=MAX_MANIFEST_BYTES))
    except (NotARegularFile, ValueError) as exc:  # a FIFO or device; too large, too deep or not JSON
        raise ManifestError(f"{source}: {exc}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise ManifestError(f"{source}: format_version {version!r}; this reader knows {FORMAT_VERSION}")
    problems = manifest_problems(manifest)
    if problems:
        raise ManifestError(f"{source}: " + "; ".join(problems))
    return manifest
