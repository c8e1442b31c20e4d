"""The build configuration: everything that decides the bytes of the output, as one JSON-native dict.

The config is stored in the manifest and hashed into every sample; a build resumed or rerun with a different
config is refused with the differing keys named. Paths of the source and output are deliberately not part of
it (moving a dataset does not change its data); the layout and the class list are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from ..proposals import NAMED_FILTERS
from ..shards.writer import shard_name

SEGMENT_METHODS = ("fh", "gt", "none")
PROPOSAL_METHODS = ("soco", "alpacadb", "opencv-fast", "opencv-quality", "none")
DEFAULT_FILTERS = ("ratio3size0308", "ratio3", "none")
ORDERS = ("permuted", "sorted")
DEFAULT_SEED = 0


def make_config(
    *,
    segments: str = "fh",
    fh_scale: float = 1000,
    fh_sigma: float = 0.8,
    fh_min_size: int = 1000,
    fh_backend: str = "exact",
    proposals: str = "soco",
    ss_scale: float = 300,
    ss_sigma: float = 0.9,
    ss_min_size: int = 100,
    filters: tuple[str, ...] = DEFAULT_FILTERS,
    shard_size: int = 1000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    order: str = "permuted",
    seed: int = DEFAULT_SEED,
    prefix: str = "shard",
    layout: str = "folder",
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """The build config; defaults are the papers' (DetCon FH on the original image, SoCo selective search)."""
    if segments not in SEGMENT_METHODS:
        raise ValueError(f"--segments must be one of {SEGMENT_METHODS}, got {segments!r}")
    if fh_backend not in ("exact", "skimage", "opencv"):
        raise ValueError(f"--fh-backend must be exact, skimage or opencv, got {fh_backend!r}")
    if proposals not in PROPOSAL_METHODS:
        raise ValueError(f"--proposals must be one of {PROPOSAL_METHODS}, got {proposals!r}")
    unknown = [f for f in filters if f not in NAMED_FILTERS]
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; choose from {sorted(NAMED_FILTERS)}")
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {max_pixels}")
    if max_bytes < 1:
        raise ValueError(f"--max-bytes must be >= 1, got {max_bytes}")
    if order not in ORDERS:
        raise ValueError(f"--order must be one of {ORDERS}, got {order!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"--seed must be an integer in 0..2**63-1, got {seed!r}")
    try:
        shard_name(prefix, 0)
    except ValueError as exc:
        raise ValueError(f"--prefix: {exc}") from None
    if segments == "gt" and layout != "coco":
        raise ValueError("--segments gt needs a COCO source (--annotations instances_*.json)")
    seg: dict[str, Any] = {"method": segments, "params": {}}
    if segments == "fh":
        seg["params"] = {"scale": fh_scale, "sigma": fh_sigma, "min_size": fh_min_size, "backend": fh_backend}
    elif segments == "gt":
        seg["params"] = {"include_crowd": False}
    prop: dict[str, Any] = {"method": "none" if proposals == "none" else "selective_search", "params": {}}
    if proposals in ("soco", "alpacadb"):
        prop["params"] = {"variant": proposals, "scale": ss_scale, "sigma": ss_sigma, "min_size": ss_min_size}
    elif proposals != "none":
        prop["params"] = {"variant": proposals}
    return {
        "source": {"layout": layout, "classes": list(classes or [])},
        "segments": seg,
        "proposals": prop,
        "filters": list(filters) if proposals != "none" else [],
        "shard_size": int(shard_size),
        "max_pixels": int(max_pixels),
        "max_bytes": int(max_bytes),
        "order": {"method": order, "seed": int(seed) if order == "permuted" else None},
        "prefix": prefix,
    }


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs, e.g. ``["segments.params.scale"]``."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if key not in old or key not in new:
            out.append(name)
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            out.extend(config_differences(old[key], new[key], name + "."))
        elif old[key] != new[key] or type(old[key]) is not type(new[key]):
            out.append(name)
    return out
