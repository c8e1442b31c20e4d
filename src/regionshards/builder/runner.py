"""``build``: list the source, plan shards, run one Ray task per shard, seal the dataset with its manifest.

Ray is local by default (the user starts nothing); ``address`` (or ``RAY_ADDRESS``) attaches to a cluster.
Each task first checks whether its shard is already on disk and still true to its inputs (resume, next to the
data, in parallel), and computes it otherwise; it reads its inputs and writes its shard itself, so the object
store only carries small stats. Tasks are idempotent (deterministic bytes, atomic renames), so Ray's retries
after a worker death and a rerun after a killed driver both give the same output as an uninterrupted build.
Everything that can be refused is refused before Ray starts (``prepare_output``). OUT may be an object-store
prefix (``s3://bucket/out``): the same steps through ``shards.store.Store``, each file written as one whole object.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from ..shards import MANIFEST_NAME, ManifestError, read_manifest, write_manifest
from ..shards.store import Store
from .config import config_differences
from .lock import LOCK_NAME, BuildLock
from .plan import PlannedShard, existing_shard, order_refs, plan_shards
from .progress import BuildSummary, Progress, summarise
from .sources import SourceListing
from .worker import ShardResult, process_shard

BUILD_STATE = "build.json"  # the config of an unfinished build; removed once the manifest is written
SUMMARY = "summary.json"
MAX_STATE_BYTES = 16 << 20  # build.json holds the config (class names included)
KERNEL_COMPILE_SECONDS = 40  # first-run numba compilation on one core of the 2-core machine (measured 37-41 s)


class ConfigMismatchError(ValueError):
    """The output folder holds (part of) a build made with another config (a usage error: exit status 2)."""


class OutputError(ValueError):
    """The output folder cannot be used: it holds files that are not ours (a usage error: exit status 2)."""


class StorageError(OSError):
    """OUT could not be read or written (a failing disk, an object store that stopped answering): exit status 3.
    The message names OUT (and the shard, when a task failed) and the storage's own error; a rerun resumes."""


class ShardFailedError(RuntimeError):
    """A shard's task died on every retry (exit status 3); the message names the shard."""


def _our_file(name: str, prefix: str) -> bool:
    if name in (MANIFEST_NAME, BUILD_STATE, SUMMARY, LOCK_NAME):
        return True
    if re.fullmatch(re.escape(prefix) + r"-\d{6}\.(tar|parquet)", name):
        return True
    return name.startswith(".") and name.endswith(".tmp")  # our atomic writes' temporaries (checked below)


def check_output(out: Store, config: Mapping[str, Any], overwrite: bool) -> None:
    """Refuse an output folder we must not write into: a file, foreign files, or a build with another config."""
    problem = out.folder_problem()
    if problem not in (None, "missing"):
        raise OutputError(f"OUT {out} exists and is not a folder")
    if problem == "missing":
        return
    foreign = [name for name in out.names() if not _our_file(name, config["prefix"])]
    if foreign:
        raise OutputError(f"OUT {out} holds files that are not from a regionshards build with prefix "
                          f"{config['prefix']!r} ({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); "
                          "choose an empty or new folder")
    previous = None
    for name in (MANIFEST_NAME, BUILD_STATE):
        if out.problem(name) is None:
            try:
                stored = (read_manifest(out.join(name)) if name == MANIFEST_NAME
                          else json.loads(out.read(name, MAX_STATE_BYTES)))
                previous = (name, stored["config"])
            except (ManifestError, ValueError, KeyError, TypeError) as exc:
                if not overwrite:
                    raise OutputError(f"{out.join(name)} is unreadable ({str(exc)[:200]}); use --overwrite to start "
                                      "again") from None
            break
    if previous is None:
        return
    differing = config_differences(previous[1], config)
    if differing and not overwrite:
        raise ConfigMismatchError(
            f"{out} holds a build with another config (differs in: {', '.join(differing)}; from {previous[0]}). "
            "Use the same options to resume, another output folder, or --overwrite to start again."
        )


def _remove_temporaries(out: Store, prefix: str) -> list[str]:
    """Delete temporary files a killed build left behind (``.<name>.<random>.tmp`` of our own files only).
    Called with the lock held, so they cannot belong to a running build. An object store has none."""
    if out.local is None:
        return []
    ours = (f".{prefix}-", f".{MANIFEST_NAME}.", f".{BUILD_STATE}.", f".{SUMMARY}.")
    removed = []
    for entry in out.local.iterdir():
        if entry.is_file() and entry.name.endswith(".tmp") and entry.name.startswith(ours):
            entry.unlink()
            removed.append(entry.name)
    return removed


def _clear_output(out: Store, prefix: str) -> None:
    for name in out.names():
        if name in (MANIFEST_NAME, BUILD_STATE, SUMMARY) or (
            name.startswith(prefix + "-") and name.endswith((".tar", ".parquet"))
        ):
            out.delete(name)


def _remove_unplanned(out: Store, prefix: str, planned: int) -> None:
    """Delete shards past the end of the plan (inputs vanished since an earlier run, so fewer shards)."""
    pattern = re.compile(re.escape(prefix) + r"-(\d{6})\.(tar|parquet)")
    for name in out.names():
        match = pattern.fullmatch(name)
        if match and int(match.group(1)) >= planned:
            out.delete(name)


def ensure_shard(index: int, refs: tuple, config: Mapping[str, Any], out_dir: str, digest: str) -> ShardResult:
    """The Ray task: reuse shard ``index`` if it checks out against its inputs and config, else compute it."""
    from ..shards import shard_name

    shard = PlannedShard(index, shard_name(config["prefix"], index), refs)
    check = existing_shard(out_dir, shard, digest, config["max_bytes"])
    if check.info is not None:
        return ShardResult(check.info, {}, check.segments, check.proposals, reused=True, why="verified")
    return process_shard(index, refs, config, out_dir, why=check.why)


def run_build(
    listing: SourceListing,
    out: str | Path,
    config: Mapping[str, Any],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
) -> BuildSummary:
    """Build (or resume) the dataset of ``listing`` into ``out`` with ``config``; returns the summary.

    Raises:
        OutputError, ConfigMismatchError, LockedError: refusals (before Ray starts).
        ShardFailedError: a shard's task died on every retry.
        StorageError: OUT could not be read or written.
    """
    try:
        return _build(listing, Store(out), config, address, num_cpus, overwrite, progress, stream or sys.stderr)
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"OUT {out}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def _build(listing: SourceListing, out: Store, config: Mapping[str, Any], address: str | None, num_cpus: int | None,
           overwrite: bool, progress: bool, stream: TextIO) -> BuildSummary:
    check_output(out, config, overwrite)
    try:
        out.make()
    except FileNotFoundError as exc:
        raise OutputError(str(exc)) from None
    with BuildLock(out) as lock:
        if lock.stale:
            print(f"took over a stale lock of pid {lock.stale.get('pid')} (a killed build)", file=stream)
        if overwrite:
            _clear_output(out, config["prefix"])
        _remove_temporaries(out, config["prefix"])
        from ..shards import config_hash

        digest = config_hash(config)
        out.write(BUILD_STATE, json.dumps({"config": config, "config_hash": digest}, indent=2).encode())
        shards = plan_shards(order_refs(listing.refs, config["order"]), config["shard_size"], config["prefix"])
        results, wall, cpus = _run_tasks(shards, config, out, digest, address, num_cpus, progress, stream)
        _remove_unplanned(out, config["prefix"], len(shards))
        write_manifest(out, config, [results[s.index].info for s in shards])
        summary = summarise(len(listing.refs), shards, results, wall, cpus)
        out.write(SUMMARY, (json.dumps(summary.to_json(), indent=2, sort_keys=True) + "\n").encode())
        out.delete(BUILD_STATE)
    return summary


def _run_tasks(shards: list[PlannedShard], config: Mapping[str, Any], out: Store, digest: str, address: str | None,
               num_cpus: int | None, progress: bool, stream: TextIO) -> tuple[dict[int, ShardResult], float, float]:
    import ray

    _warm_kernels(config, stream)
    own_ray = not ray.is_initialized()
    if own_ray and shards:
        _init_ray(ray, address, num_cpus)
    started = time.monotonic()  # after Ray's start-up, so that images/s measures the work
    results: dict[int, ShardResult] = {}
    bar = Progress(sum(len(s.refs) for s in shards), stream, progress)
    try:
        cpus = float(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else 0.0
        task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(ensure_shard)
        # A bounded window of submitted tasks: the driver holds the serialised inputs of a few shards per CPU,
        # not of the whole dataset (ImageNet: 1282 shards x 1000 refs), and the object store stays small.
        window = max(8, 4 * int(cpus))
        queue = iter(shards)
        pending: dict[Any, PlannedShard] = {}
        shared = dict(config)  # small: inlined in each task, never through the object store

        def submit() -> None:
            for s in queue:
                pending[task.remote(s.index, s.refs, shared, out.url, digest)] = s
                if len(pending) >= window:
                    return

        submit()
        recomputed = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            shard = pending.pop(ready[0])
            try:
                result: ShardResult = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # our code raised outside the per-input guard: a bug
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                if isinstance(cause, OSError):  # inputs fail alone (rows); this is OUT failing under the task
                    raise StorageError(f"OUT {out}: shard {shard.name}: {_first_line(cause)}") from exc
                raise RuntimeError(f"shard {shard.name}: {type(cause).__name__}: {cause}"[:800]) from exc
            except Exception as exc:  # noqa: BLE001 - a task that died on every retry ends the build, named
                raise ShardFailedError(f"shard {shard.name} ({len(shard.refs)} inputs) failed on every retry: "
                                       f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
            results[shard.index] = result
            if not result.reused and result.why != "not written":
                recomputed += 1
                if recomputed <= 20:
                    bar.note(f"recomputed {shard.name}: {result.why}")
            bar.update(len(shard.refs), computed=not result.reused)
            submit()
        if recomputed > 20:
            bar.note(f"... {recomputed} shards recomputed in all")
    finally:
        if own_ray and ray.is_initialized():
            ray.shutdown()
    return results, time.monotonic() - started, cpus


def _warm_kernels(config: Mapping[str, Any], stream: TextIO) -> None:
    """Compile the numba kernels in the driver once, so local workers load them from the on-disk cache instead of
    each compiling them again; say so first when the cache is empty (the first run on a machine)."""
    if config["segments"]["method"] != "fh" and config["proposals"]["method"] == "none":
        return
    from .. import proposals

    if not _kernels_cached(Path(proposals.__file__).parent):
        print(f"compiling kernels (first run only, ≈ {KERNEL_COMPILE_SECONDS} s)", file=stream, flush=True)
    proposals.warm_up()


def _kernels_cached(package: Path) -> bool:
    """Whether numba's on-disk cache holds our kernels (next to the modules, or under NUMBA_CACHE_DIR)."""
    places = [package / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return any(next(place.rglob("_fh_kernels*.nbi"), None) is not None for place in places if place.is_dir())


def _init_ray(ray: Any, address: str | None, num_cpus: int | None) -> None:
    # Ray's start-up chatter (token-authentication notice, "Started a local Ray instance") is INFO/WARNING from
    # its own loggers; ERROR keeps real problems visible and the progress line clean.
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **quiet)


__all__ = ["BUILD_STATE", "SUMMARY", "ConfigMismatchError", "OutputError", "ShardFailedError", "StorageError",
           "run_build"]
