"""One shard from its inputs: read, decode, segment, propose, write. A plain function (no Ray), so tests call it
directly and the runner ships it to Ray workers unchanged; the same inputs always give the same shard bytes."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..images import ImageError, decode_image
from ..proposals import annotations_to_rles, felzenszwalb, selective_search
from ..shards import GroundTruthData, InputRecord, ProposalsData, SegmentsData, ShardInfo, config_hash, write_shard
from ..shards._fs import local_path, open_input
from .sources import ImageRef

STAGES = ("read", "decode", "segments", "proposals", "write")


@dataclass
class ShardResult:
    """What a shard task returns to the driver: small stats only, never images."""

    info: ShardInfo
    seconds: dict[str, float] = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)  # per ok image
    proposals: list[int] = field(default_factory=list)  # per ok image
    reused: bool = False


def read_input(uri: str) -> bytes:
    """The bytes of one input (local path or pyarrow.fs URI); a missing or unreadable one raises ImageError."""
    path = local_path(uri)
    try:
        if path is not None:
            return path.read_bytes()
        with open_input(uri) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise ImageError("missing", f"{uri}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError("unreadable", f"{uri}: is a directory") from exc
    except OSError as exc:
        raise ImageError("unreadable", f"{uri}: {type(exc).__name__}: {exc}") from exc


def make_record(ref: ImageRef, config: Mapping[str, Any], seconds: dict[str, float]) -> InputRecord:
    """Everything the format stores for one input; a failure becomes a failed record with its reason."""
    t = time.perf_counter()
    try:
        data = read_input(ref.uri)
    except ImageError as exc:
        return InputRecord.failed(ref.key, ref.source, exc.reason, exc.detail)
    finally:
        seconds["read"] += time.perf_counter() - t
    t = time.perf_counter()
    try:
        decoded = decode_image(data, config["max_pixels"])
    except ImageError as exc:
        return InputRecord.failed(ref.key, ref.source, exc.reason, exc.detail)
    finally:
        seconds["decode"] += time.perf_counter() - t
    rgb = decoded.rgb
    h, w = rgb.shape[:2]
    if ref.expected_size is not None and ref.expected_size != (w, h):
        return InputRecord.failed(
            ref.key, ref.source, "size-mismatch",
            f"image is {w}x{h} but the annotations declare {ref.expected_size[0]}x{ref.expected_size[1]}",
        )
    t = time.perf_counter()
    segments, ground_truth = _segments(ref, rgb, config)
    seconds["segments"] += time.perf_counter() - t
    t = time.perf_counter()
    proposals = _proposals(rgb, config)
    seconds["proposals"] += time.perf_counter() - t
    return InputRecord(
        key=ref.key, source=ref.source, image=data, image_format=decoded.format, image_mode=decoded.mode,
        width=w, height=h, segments=segments, proposals=proposals, ground_truth=ground_truth,
    )


def _segments(ref: ImageRef, rgb: Any, config: Mapping[str, Any]) -> tuple[SegmentsData | None, Any]:
    seg = config["segments"]
    h, w = rgb.shape[:2]
    ground_truth = None
    if ref.annotations is not None:
        ground_truth = GroundTruthData.from_annotations(ref.annotations, h, w)
    if seg["method"] == "fh":
        p = seg["params"]
        labels = felzenszwalb(rgb, p["scale"], p["sigma"], p["min_size"], backend=p["backend"])
        return SegmentsData.from_labels(labels, "fh", p), ground_truth
    if seg["method"] == "gt":
        rles, _ = annotations_to_rles(list(ref.annotations or ()), h, w, include_crowd=seg["params"]["include_crowd"])
        return SegmentsData.from_rles(rles, "gt", seg["params"]), ground_truth
    return None, ground_truth


def _proposals(rgb: Any, config: Mapping[str, Any]) -> ProposalsData | None:
    prop = config["proposals"]
    if prop["method"] == "none":
        return None
    p = dict(prop["params"])
    variant = p.pop("variant")
    props = selective_search(rgb, variant=variant, **p)
    return ProposalsData.from_proposals(props, config["filters"], prop["method"], prop["params"])


def process_shard(
    index: int, refs: Sequence[ImageRef], config: Mapping[str, Any], out_dir: str | Path
) -> ShardResult:
    """Compute and write shard ``index`` of the plan: every ref becomes an ok or failed record."""
    seconds = dict.fromkeys(STAGES, 0.0)
    records = []
    for n, ref in enumerate(refs):
        records.append(make_record(ref, config, seconds))
        _maybe_fail_for_test(index, n)
    t = time.perf_counter()
    info = write_shard(out_dir, index, records, config_hash=config_hash(config), prefix=config["prefix"])
    seconds["write"] += time.perf_counter() - t
    ok = [r for r in records if r.ok]
    return ShardResult(
        info,
        seconds,
        [len(r.segments.rles) if r.segments else 0 for r in ok],
        [len(r.proposals.boxes) if r.proposals else 0 for r in ok],
    )


def _maybe_fail_for_test(index: int, n: int) -> None:
    """Fault injection for the worker-death test: with ``REGIONSHARDS_TEST_KILL_WORKER=<marker file>`` the
    first worker to reach image 1 of shard 0 exits abruptly (once: it creates the marker first)."""
    marker = os.environ.get("REGIONSHARDS_TEST_KILL_WORKER")
    if marker and index == 0 and n == 1:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)
