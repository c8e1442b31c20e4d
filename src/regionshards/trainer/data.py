"""Streaming shards into DDP: an iterable dataset of ready-made batches of any method.

Which samples each rank and loader worker reads, and in which order, is the epoch plan (``epoch_plan``: shards
permuted per epoch, equal batches per rank, shards interleaved then shuffled, batches split between workers,
exact resume from any step). ``ShardStream`` turns a rank's planned samples into batches with the method's
``make_batch``. The reader checks the tar members of every sample it reads; the validating parser
(``shards.validated_sample``: JSON limits, schema, sizes, RLE sums, image header) runs on the samples of the
batches this worker decodes, before anything is decoded from them, and the methods use the JSON it parsed.

A damaged shard stops the stream with the reader's ``ShardError`` (naming shard and member), message intact;
from a loader worker, ``loader_batches`` gives it back as the same ``ShardError`` (torch re-raises it wrapped in
the worker's traceback).
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..shards import ShardError, open_dataset, validated_sample
from .config import TrainConfig
from .epoch_plan import EpochPlan, rank_stream, runs_stream
from .methods import method_spec
from .watch import sample_label


class ShardStream(IterableDataset):
    """Endless (or ``epochs``-long) stream of training batches for one rank; use with ``batch_size=None``.

    Each item is the method's batch (its family's ``make_batch``: uint8 images ``view0`` … in channels_last
    layout plus DetCon's grids and ids, SoCo's boxes or DetCo's patches) and ``keys`` (B sample keys), ``step``
    (the rank's global batch index t) and ``epoch``.
    """

    def __init__(self, source: Any, cfg: TrainConfig, *, rank: int = 0, world_size: int = 1, start_step: int = 0,
                 epochs: int | None = None) -> None:
        super().__init__()
        ds = open_dataset(source)
        if ds.manifest is None:
            raise ValueError(f"{source}: training needs a dataset folder or manifest (per-shard sample counts)")
        self.urls = tuple(ds.shards)
        self.counts = tuple(int(s["samples"]) for s in ds.manifest["shards"])
        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        self.start_step = start_step
        self.epochs = epochs
        if self.batches_per_epoch < 1:
            raise ValueError(f"{sum(self.counts)} samples cannot give each of {world_size} rank(s) a batch of "
                             f"{cfg.batch_size}")

    def plan(self, epoch: int, workers: int = 1) -> EpochPlan:
        return EpochPlan(self.urls, self.counts, self.cfg.seed, epoch, self.world_size, self.rank,
                         self.cfg.batch_size, workers)

    @property
    def batches_per_epoch(self) -> int:
        """Q, equal on every rank."""
        return self.plan(0).batches

    @property
    def samples_per_epoch(self) -> int:
        """Samples used per epoch over all ranks (the rest is dropped)."""
        return self.batches_per_epoch * self.cfg.batch_size * self.world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        p, w = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            _single_threaded()
        _room_for_files(self.cfg.interleave + 64)
        q = self.batches_per_epoch
        first = self.start_step // q
        last = None if self.epochs is None else first + self.epochs
        for epoch in itertools.count(first) if last is None else range(first, last):
            v = (p + self.start_step - epoch * q) % w
            yield from self._epoch(self.plan(epoch, w), v)

    def _epoch(self, plan: EpochPlan, v: int) -> Iterator[dict[str, Any]]:
        cfg, q = self.cfg, plan.batches
        if cfg.interleave == 0:
            yield from self._epoch_of_runs(plan, v)
            return
        if plan.worker_batches(v) == 0:
            return
        last = v + (plan.worker_batches(v) - 1) * plan.workers
        stream = rank_stream(plan, cfg)
        for b in range(last + 1):
            chunk = list(itertools.islice(stream, cfg.batch_size))
            if len(chunk) < cfg.batch_size:
                raise RuntimeError(f"epoch {plan.epoch}: rank {self.rank} ran out of samples (plan error)")
            t = plan.epoch * q + b
            if b % plan.workers != v or t < self.start_step:
                continue  # another worker's batch, or one before the resume point: dropped undecoded
            yield self.make_batch(chunk, plan.epoch, b, t)

    def _epoch_of_runs(self, plan: EpochPlan, v: int) -> Iterator[dict[str, Any]]:
        """``interleave = 0``: worker v reads its own contiguous run through its own buffer (no interleaving;
        batches hold few shards — the plan of runs saved before interleaving existed)."""
        cfg, q = self.cfg, plan.batches
        stream = runs_stream(plan, cfg, v)
        for j in range(plan.worker_batches(v)):
            b = v + j * plan.workers
            chunk = list(itertools.islice(stream, cfg.batch_size))
            if len(chunk) < cfg.batch_size:
                raise RuntimeError(f"epoch {plan.epoch}: worker {v} ran out of samples (plan error)")
            t = plan.epoch * q + b
            if t >= self.start_step:
                yield self.make_batch(chunk, plan.epoch, b, t)

    def make_batch(self, samples: Sequence[dict[str, Any]], epoch: int, b: int, t: int) -> dict[str, Any]:
        """Decode and augment one batch with the generator of ``(seed, epoch, rank, b)``."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, epoch, self.rank, b, 0x4254])
        checked = CheckedOnUse(samples)
        batch = method_spec(cfg.method).make_batch(checked, cfg, rng)
        return {**batch, "label": torch.tensor(checked.labels(), dtype=torch.int64),
                "keys": [s["__key__"] for s in samples], "step": t, "epoch": epoch}


class CheckedOnUse(Sequence[dict[str, Any]]):
    """A batch's raw samples, each put through the validating parser (``shards.validated_sample``) when a
    method reads it, which raises the reader's ``ShardError`` for a refused one before anything is decoded.

    Each parsed JSON lives only while its sample is being made: ~1,000 containers per sample (the proposals)
    kept for a whole batch would survive into the collector's oldest generation and trigger full collections
    (≈ 0.2 ms per sample on the loader benchmark); dropped at once they die young, as they did when the reader
    validated and dropped them.
    """

    def __init__(self, raw: Sequence[dict[str, Any]]) -> None:
        self.raw = raw
        self._labels: list[int | None] = [None] * len(raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]  # no slices
        sample = validated_sample(self.raw[i])
        self._labels[i] = sample_label(sample["json"])
        return sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # by index, not Sequence's iterate-until-IndexError: an IndexError out of a sample's checks must not
        # end the batch early (slots left unwritten), it must surface
        for i in range(len(self.raw)):
            yield self[i]

    def labels(self) -> list[int]:
        """The class index of every sample (-1: none), validating any sample no method read."""
        for i, label in enumerate(self._labels):
            if label is None:
                self[i]
        return [label if label is not None else -1 for label in self._labels]


def _single_threaded() -> None:
    """Loader workers use one thread each (the ranks' cores are shared between many workers)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _room_for_files(n: int) -> None:
    """Raise this process's open-file limit to ``n`` when the hard limit allows (``interleave`` shards are open at
    once); fail naming the setting when it does not."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= n:
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        raise RuntimeError(f"interleave needs about {n} open files, the hard limit is {hard}: lower "
                           "the config's interleave or raise the limit (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def start_loader_server(family: str | None = None) -> multiprocessing.context.BaseContext:
    """The loader workers' multiprocessing context, its fork server started now if it is not running yet.

    The server imports the main module (multiprocessing's default), this module (torch, cv2) and the method
    ``family``'s views module once and forks every worker from there, instead of each worker importing them
    afresh (≈ 3 s of a 2-core machine's start with 4 workers); called before the model is built, that import
    overlaps the build. The server runs no threads, so forking it is safe.
    """
    context = multiprocessing.get_context("forkserver")
    views = [f"{__package__}.methods.{family}_views"] if family else []
    context.set_forkserver_preload(["__main__", __name__, *views])
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return context


def make_loader(stream: ShardStream, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ready batches (``batch_size=None``), workers in the fixed round-robin order."""
    # forkserver, not fork: forking a process that already runs threads (Ray's client, NCCL, OpenMP pools) can
    # deadlock the child on a lock held by a thread that does not exist there.
    context = start_loader_server(method_spec(stream.cfg.method).family) if workers else None
    # A fork server's children inherit the server's environment, fixed when it started; a worker takes this
    # process's environment as it is now (object-store endpoint and credentials, set after a first loader).
    init = functools.partial(_adopt_environment, dict(os.environ)) if workers else None
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                                       persistent_workers=False, prefetch_factor=2 if workers else None,
                                       multiprocessing_context=context, worker_init_fn=init)


def _adopt_environment(environ: dict[str, str], worker_id: int) -> None:
    os.environ.clear()
    os.environ.update(environ)


def loader_batches(loader: torch.utils.data.DataLoader) -> Iterator[dict[str, Any]]:
    """The loader's batches; a ``ShardError`` raised in a loader worker is raised here as the worker raised it.

    torch's ``ExceptionWrapper`` re-raises a worker's exception as ``type(text)``, the text being "Caught
    ShardError in DataLoader worker process N. Original Traceback ..." with the worker's formatted traceback,
    whose last line is ``regionshards.shards.tario.ShardError: <message>``; the message is taken back from there.
    """
    try:
        yield from loader
    except ShardError as exc:
        original = worker_shard_error(exc)
        if original is exc:
            raise
        raise original from exc


def worker_shard_error(exc: ShardError) -> ShardError:
    """The ``ShardError`` a loader worker raised, from the one torch re-raised in this process (``exc`` itself
    when it did not come through torch's worker wrapper)."""
    text = str(exc)
    if exc.code or not text.startswith(f"Caught {ShardError.__name__} in DataLoader worker"):
        return exc
    marker = f"\n{ShardError.__module__}.{ShardError.__qualname__}: "
    at = text.rfind(marker)
    if at < 0:
        return exc
    return ShardError(text[at + len(marker):].rstrip("\n"))
