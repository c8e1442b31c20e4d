"""One shard from its inputs: read, decode, segment, propose, encode, write. A plain function (no Ray), so tests call
it directly and the runner ships it to Ray workers unchanged; the same inputs always give the same shard bytes.

Isolation: every per-input step runs under a guard, so one input can never stop its shard, whatever it raises.
A failure becomes an index row with a stable reason code (``REASONS``) and a deterministic detail: the exception
type and message without object addresses, naming the input by its path relative to the source root.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..images import DEFAULT_MAX_BYTES, ImageError, decode_image, describe_exception
from ..shards import (
    GroundTruthData,
    InputRecord,
    InstancesData,
    ProposalsData,
    SegmentsData,
    ShardInfo,
    config_hash,
    write_shard,
)
from ..shards._fs import file_kind, local_path
from ..shards.sample import record_sample, sample_to_members
from .sources import ImageRef

STAGES = ("read", "decode", "segments", "proposals", "write")
# Every failure reason a build can record (docs/format.md lists what each means).
REASONS = (
    "missing", "unreadable", "not-a-regular-file", "too-many-bytes", "symlink-loop", "stray-file",
    "empty", "not-an-image", "truncated", "unsupported", "undecodable", "too-many-pixels",
    "size-mismatch", "no-gt-mask", "out-of-memory", "error",
)
# Reasons that may not hold on a rerun: a resume computes the shards holding such rows again.
TRANSIENT_REASONS = frozenset({"missing", "unreadable", "out-of-memory", "error"})


class InputFailure(Exception):
    """One input failed: ``reason`` is a code from ``REASONS``, ``detail`` deterministic text."""

    def __init__(self, reason: str, detail: str, fingerprint: Fingerprint | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.fingerprint = fingerprint  # known when the input was found but refused (too many bytes)


@dataclass(frozen=True)
class Fingerprint:
    """What identifies the bytes of an input: size, modification time (ns) and content SHA-256."""

    size: int
    mtime_ns: int
    sha256: str | None = None

    def row(self) -> dict[str, Any]:
        return {"input_bytes": self.size, "input_mtime_ns": self.mtime_ns, "input_sha256": self.sha256}


@dataclass
class ShardResult:
    """What a shard task returns to the driver: small stats only, never images."""

    info: ShardInfo
    seconds: dict[str, float] = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)  # per ok image
    proposals: list[int] = field(default_factory=list)  # per ok image
    reused: bool = False
    why: str = ""  # for a computed shard: why it was (re)computed


def stat_input(uri: str) -> Fingerprint:
    """Size and mtime of an input without reading it (no content hash); raises InputFailure when it is gone."""
    path = local_path(uri)
    try:
        if path is not None:
            st = os.stat(path)
            return Fingerprint(st.st_size, st.st_mtime_ns)
        from pyarrow import fs as pafs

        filesystem, inner = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise InputFailure("missing", "no such file")
        mtime = info.mtime_ns if info.mtime_ns is not None else 0
        return Fingerprint(int(info.size or 0), int(mtime))
    except FileNotFoundError:
        raise InputFailure("missing", "no such file") from None
    except OSError as exc:
        raise InputFailure("unreadable", describe_exception(exc)) from None


def read_input(uri: str, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, Fingerprint]:
    """The bytes of one input (local path or pyarrow.fs URI) and its fingerprint.

    Only regular files are read: a FIFO, device, socket or folder fails with ``not-a-regular-file`` (opened
    non-blocking, so a FIFO never hangs). More than ``max_bytes`` fails with ``too-many-bytes`` before anything
    is read, and a file that grows while it is read is cut off at ``max_bytes + 1`` and refused the same way.

    Raises:
        InputFailure: ``missing``, ``unreadable``, ``not-a-regular-file`` or ``too-many-bytes``.
    """
    path = local_path(uri)
    if path is None:
        return _read_remote(uri, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InputFailure("missing", "no such file") from None
    except OSError as exc:
        if exc.errno == 6:  # ENXIO: a socket, or a FIFO without writer on some systems
            raise InputFailure("not-a-regular-file", "a socket or FIFO") from None
        raise InputFailure("unreadable", describe_exception(_strip_filename(exc))) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputFailure("not-a-regular-file", file_kind(st.st_mode))
        if st.st_size > max_bytes:
            raise InputFailure("too-many-bytes", f"{st.st_size} bytes > limit {max_bytes}",
                               Fingerprint(st.st_size, st.st_mtime_ns))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = _read_at_most(f, st.st_size, max_bytes)
    except OSError as exc:
        raise InputFailure("unreadable", describe_exception(_strip_filename(exc))) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputFailure("too-many-bytes", f"more than {max_bytes} bytes (the file grew while read)")
    return data, Fingerprint(st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())


def _read_remote(uri: str, max_bytes: int) -> tuple[bytes, Fingerprint]:
    from pyarrow import fs as pafs

    try:
        filesystem, inner = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise InputFailure("missing", "no such object")
        if info.type != pafs.FileType.File:
            raise InputFailure("not-a-regular-file", f"a {info.type.name.lower()}")
        if info.size is not None and info.size > max_bytes:
            raise InputFailure("too-many-bytes", f"{info.size} bytes > limit {max_bytes}")
        with filesystem.open_input_stream(inner) as f:
            data = _read_at_most(f, info.size if info.size is not None else max_bytes, max_bytes)
    except (OSError, ValueError) as exc:  # pyarrow raises OSError subclasses and ArrowInvalid (a ValueError)
        raise InputFailure("unreadable", describe_exception(exc)) from None
    if len(data) > max_bytes:
        raise InputFailure("too-many-bytes", f"more than {max_bytes} bytes")
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return data, Fingerprint(len(data), int(mtime), hashlib.sha256(data).hexdigest())


def _read_at_most(f: Any, expected: int, max_bytes: int) -> bytes:
    """Read a file whose size is ``expected``, up to ``max_bytes + 1`` bytes if it grew meanwhile (buffers are
    sized by what is there, not by the limit: ``read(n)`` allocates n bytes up front)."""
    data = f.read(min(expected, max_bytes) + 1)
    if len(data) > expected and len(data) <= max_bytes:
        data += f.read(max_bytes + 1 - len(data))
    return data


def _strip_filename(exc: OSError) -> OSError:
    """The OSError without its file name: details name inputs by their path relative to the source root."""
    return OSError(exc.errno, exc.strerror) if exc.errno is not None else exc



@dataclass(frozen=True)
class Outcome:
    """One input's record plus what the index row adds: its fingerprint and a note (dropped annotations)."""

    record: InputRecord
    fingerprint: Fingerprint | None = None
    note: str | None = None

    def row_extras(self) -> dict[str, Any]:
        fp = self.fingerprint.row() if self.fingerprint else {"input_bytes": None, "input_mtime_ns": None,
                                                               "input_sha256": None}
        return {**fp, "note": self.note}


def compute_input(ref: ImageRef, config: Mapping[str, Any], seconds: dict[str, float] | None = None) -> Outcome:
    """Everything the format stores for one input, under the isolation guard: never raises for a bad input.

    The record is also encoded once here (the bytes the shard will hold), so an input whose sample cannot be
    encoded fails alone instead of failing its shard.
    """
    seconds = seconds if seconds is not None else dict.fromkeys(STAGES, 0.0)
    state: dict[str, Any] = {"stage": "read"}
    try:
        outcome = _compute(ref, config, seconds, state)
        if outcome.record.ok:
            sample_to_members(record_sample(outcome.record, config_hash(config)))
        return outcome
    except InputFailure as exc:
        if exc.fingerprint is not None:
            state["fingerprint"] = exc.fingerprint
        return _failed(ref, exc.reason, exc.detail, state)
    except ImageError as exc:
        return _failed(ref, exc.reason, exc.detail, state)
    except MemoryError:
        return _failed(ref, "out-of-memory", f"{state['stage']}: MemoryError", state)
    except Exception as exc:  # noqa: BLE001 - the isolation guard: any failure of one input is that input's row
        return _failed(ref, "error", f"{state['stage']}: {describe_exception(exc)}", state)


def _failed(ref: ImageRef, reason: str, detail: str, state: Mapping[str, Any]) -> Outcome:
    detail = detail.replace(ref.uri, ref.source.describe()) if ref.uri else detail
    return Outcome(InputRecord.failed(ref.key, ref.source, reason, detail[:500]), state.get("fingerprint"))


def _compute(ref: ImageRef, config: Mapping[str, Any], seconds: dict[str, float],
             state: dict[str, Any]) -> Outcome:
    if ref.listing_error is not None:
        raise InputFailure(*ref.listing_error)
    t = time.perf_counter()
    try:
        data, fingerprint = read_input(ref.uri, config.get("max_bytes", DEFAULT_MAX_BYTES))
    finally:
        seconds["read"] += time.perf_counter() - t
    state["fingerprint"] = fingerprint
    state["stage"] = "decode"
    t = time.perf_counter()
    try:
        decoded = decode_image(data, config["max_pixels"])
    finally:
        seconds["decode"] += time.perf_counter() - t
    rgb = decoded.rgb
    h, w = rgb.shape[:2]
    if ref.expected_size is not None and ref.expected_size != (w, h):
        raise InputFailure("size-mismatch", f"image is {w}x{h} but the annotations declare "
                                            f"{ref.expected_size[0]}x{ref.expected_size[1]}")
    state["stage"] = "segments"
    t = time.perf_counter()
    try:
        segments, (ground_truth, instances), note = _segments(ref, rgb, config)
    finally:
        seconds["segments"] += time.perf_counter() - t
    state["stage"] = "proposals"
    t = time.perf_counter()
    try:
        proposals = _proposals(rgb, config)
    finally:
        seconds["proposals"] += time.perf_counter() - t
    state["stage"] = "encode"
    record = InputRecord(
        key=ref.key, source=ref.source, image=data, image_format=decoded.format, image_mode=decoded.mode,
        width=w, height=h, segments=segments, proposals=proposals, ground_truth=ground_truth,
        instances=instances,
    )
    return Outcome(record, fingerprint, note)


def _segments(ref: ImageRef, rgb: Any, config: Mapping[str, Any]) -> tuple[SegmentsData | None, Any, str | None]:
    """``(segments, (ground truth, instances), note)``; the ground-truth parts are None without annotations."""
    from ..proposals import felzenszwalb
    from ..proposals.groundtruth import image_instances

    seg = config["segments"]
    h, w = rgb.shape[:2]
    ground_truth, instances, note = None, None, None
    if ref.annotations is not None:
        found, notes = image_instances(ref.annotations, h, w)
        note = "; ".join(notes)[:2000] or None
        usable = [inst.annotation for inst in found if inst.segmentation_ok]
        ground_truth = GroundTruthData.from_annotations(usable, h, w)
        instances = InstancesData.from_instances(found, ground_truth)
        if seg["method"] == "gt":
            chosen = [a for a in usable if seg["params"]["include_crowd"] or not a.get("iscrowd", 0)]
            if not chosen:
                why = f"all {len(ref.annotations)} annotations unusable ({note})" if notes else "no annotations"
                raise InputFailure("no-gt-mask", f"no ground-truth mask: {why}"[:500])
            if seg["params"]["include_crowd"]:
                from ..proposals import annotations_to_rles

                rles, _ = annotations_to_rles(usable, h, w, include_crowd=True)
            else:  # the same painting as the ground truth's: reuse it
                rles = list(ground_truth.rles)
            return SegmentsData.from_rles(rles, "gt", seg["params"]), (ground_truth, instances), note
    if seg["method"] == "fh":
        p = seg["params"]
        labels = felzenszwalb(rgb, p["scale"], p["sigma"], p["min_size"], backend=p["backend"])
        return SegmentsData.from_labels(labels, "fh", p), (ground_truth, instances), note
    if seg["method"] == "gt":
        raise InputFailure("no-gt-mask", "no ground-truth mask: the input has no annotations")
    return None, (ground_truth, instances), note


def _proposals(rgb: Any, config: Mapping[str, Any]) -> ProposalsData | None:
    from ..proposals import selective_search

    prop = config["proposals"]
    if prop["method"] == "none":
        return None
    p = dict(prop["params"])
    variant = p.pop("variant")
    props = selective_search(rgb, variant=variant, **p)
    return ProposalsData.from_proposals(props, config["filters"], prop["method"], prop["params"])


def process_shard(
    index: int, refs: Sequence[ImageRef], config: Mapping[str, Any], out_dir: str, why: str = ""
) -> ShardResult:
    """Compute and write shard ``index`` of the plan: every ref becomes an ok or failed row."""
    seconds = dict.fromkeys(STAGES, 0.0)
    outcomes = []
    for n, ref in enumerate(refs):
        outcomes.append(compute_input(ref, config, seconds))
        _maybe_fail_for_test(index, n)
    t = time.perf_counter()
    info = write_shard(out_dir, index, [o.record for o in outcomes], config_hash=config_hash(config),
                       prefix=config["prefix"], row_extras={o.record.key: o.row_extras() for o in outcomes})
    seconds["write"] += time.perf_counter() - t
    ok = [o.record for o in outcomes if o.record.ok]
    return ShardResult(
        info,
        seconds,
        [len(r.segments.rles) for r in ok if r.segments is not None],  # nothing when not computed
        [len(r.proposals.boxes) for r in ok if r.proposals is not None],
        why=why,
    )


def _maybe_fail_for_test(index: int, n: int) -> None:
    """Fault injection for the worker-death tests: with ``REGIONSHARDS_TEST_KILL_WORKER=<marker file>`` the
    first worker to reach image 1 of shard 0 exits abruptly (once: it creates the marker first); with
    ``REGIONSHARDS_TEST_KILL_WORKER_ALWAYS=1`` every attempt at shard 0 dies (a shard that fails repeatedly)."""
    if index == 0 and n == 1 and os.environ.get("REGIONSHARDS_TEST_KILL_WORKER_ALWAYS") == "1":
        os._exit(1)
    marker = os.environ.get("REGIONSHARDS_TEST_KILL_WORKER")
    if marker and index == 0 and n == 1:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)
