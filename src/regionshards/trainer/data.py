"""Streaming shards into DDP: an iterable dataset of ready-made batches of any method.

**Epoch plan** (``EpochPlan``, a pure function of the manifest's per-shard sample counts, the seed, the epoch,
the world size, the rank, the batch size and the loader workers):

1. The shards are permuted with a generator seeded by ``(seed, epoch)`` — the same order on every rank — and
   their samples laid end to end: N sample positions.
2. Every rank gets ``n = N // world_size`` consecutive positions (rank r: ``[r n, (r + 1) n)``) and uses the
   first ``Q * batch_size`` of them, ``Q = n // batch_size``. So **every rank yields exactly Q batches per
   epoch** and no sample is served twice within an epoch; the remainder (fewer than
   ``world_size * (batch_size + 1)`` samples) is dropped for that epoch — a different remainder each epoch,
   since the order changes. Nothing is padded.
3. A rank's Q batches are split between its W loader workers: virtual worker v owns the batches
   ``b ≡ v (mod W)`` and reads a contiguous run of ``q_v * batch_size`` of the rank's positions (runs in order
   of v), shuffled through a seeded buffer (``shuffle_buffer`` samples) before being cut into batches.
   A worker reads only the shards its run overlaps, skipping (without parsing) the samples before its start.

**Order across workers.** ``torch.utils.data.DataLoader`` asks its workers for batches round-robin and returns
them in request order, so physical worker p serves global batches ``t ≡ p - t0 (mod W)`` counted from the
start step ``t0``; in epoch e it therefore plays virtual worker ``(p + t0 - e Q) mod W``. With that mapping the
stream is one endless sequence of batches ``t = t0, t0 + 1, ...`` (epoch ``t // Q``, batch ``t % Q``), the same
for any resume point: **resuming at step t0 yields exactly the batches an uninterrupted run yields from t0 on**
(same world size, batch size, workers and seed). Skipped batches are drawn from the shuffle buffer but not
decoded.

**Randomness.** The shuffle of virtual worker v uses ``(seed, epoch, rank, v)``; the augmentations and id
sampling of batch b use ``(seed, epoch, rank, b)`` — nothing depends on process-global random state.

Samples are read with ``regionshards.shards.iter_shard`` (checked tar headers, no pickle) without parsing the
JSON; only the segments are parsed (``decode.parse_partition``). A shard holding fewer samples than its
manifest entry is an error (the epoch plan would no longer be equal across ranks).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..shards import open_dataset
from ..shards.reader import iter_shard
from .config import TrainConfig
from .methods import method_spec
from .watch import batch_labels


@dataclass(frozen=True)
class Span:
    """Samples ``[skip, skip + take)`` of one shard, in the shard's order."""

    url: str
    skip: int
    take: int


@dataclass(frozen=True)
class EpochPlan:
    """Which samples a (rank, virtual worker) reads in one epoch (see the module docstring)."""

    shard_urls: tuple[str, ...]
    shard_samples: tuple[int, ...]
    seed: int
    epoch: int
    world_size: int
    rank: int
    batch_size: int
    workers: int

    @property
    def order(self) -> np.ndarray:
        """(n_shards,) int64 permutation of the shards for this epoch (equal on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch, 0x5A4D])
        return rng.permutation(len(self.shard_urls))

    @property
    def samples_per_rank(self) -> int:
        return sum(self.shard_samples) // self.world_size

    @property
    def batches(self) -> int:
        """Q: batches every rank yields per epoch."""
        return self.samples_per_rank // self.batch_size

    def worker_batches(self, v: int) -> int:
        """q_v: batches of virtual worker v (those b in 0..Q-1 with b % W == v)."""
        q, w = self.batches, self.workers
        return q // w + (1 if v < q % w else 0)

    def worker_range(self, v: int) -> tuple[int, int]:
        """[start, stop) sample positions of virtual worker v in the epoch's concatenated shard order."""
        start = self.rank * self.samples_per_rank + sum(self.worker_batches(u) for u in range(v)) * self.batch_size
        return start, start + self.worker_batches(v) * self.batch_size

    def spans(self, start: int, stop: int) -> list[Span]:
        """The shard pieces covering positions [start, stop)."""
        out, pos = [], 0
        for s in self.order:
            n = self.shard_samples[s]
            lo, hi = max(start, pos), min(stop, pos + n)
            if lo < hi:
                out.append(Span(self.shard_urls[s], lo - pos, hi - lo))
            pos += n
        return out


def shuffled(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """A seeded shuffle buffer: fill ``size`` items, then emit a random one for each new item, then drain."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(0, size))
        buffer[j], item = item, buffer[j]
        yield item
    order = rng.permutation(len(buffer))
    for j in order:
        yield buffer[j]


def read_spans(spans: Sequence[Span]) -> Iterator[dict[str, Any]]:
    """Samples of each span (raw bytes, JSON unparsed), verifying that every shard holds what the plan expects."""
    for span in spans:
        got = 0
        if span.take <= 0:
            continue
        for i, sample in enumerate(iter_shard(span.url, parse_json=False)):
            if i < span.skip:
                continue
            yield sample
            got += 1
            if got == span.take:
                break
        if got < span.take:
            raise RuntimeError(f"{span.url}: holds fewer samples than its manifest entry "
                               f"(needed samples {span.skip}..{span.skip + span.take - 1})")


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
        q = self.batches_per_epoch
        first = self.start_step // q
        last = None if self.epochs is None else first + self.epochs
        for epoch in itertools.count(first) if last is None else range(first, last):
            v = (p + self.start_step - epoch * q) % w
            yield from self._epoch(self.plan(epoch, w), v)

    def _epoch(self, plan: EpochPlan, v: int) -> Iterator[dict[str, Any]]:
        cfg, q = self.cfg, plan.batches
        start, stop = plan.worker_range(v)
        rng = np.random.default_rng([cfg.seed, plan.epoch, self.rank, v, 0x5348])
        stream = shuffled(read_spans(plan.spans(start, stop)), cfg.shuffle_buffer, rng)
        for j in range(plan.worker_batches(v)):
            b = v + j * plan.workers
            chunk = list(itertools.islice(stream, cfg.batch_size))
            if len(chunk) < cfg.batch_size:
                raise RuntimeError(f"epoch {plan.epoch}: worker {v} ran out of samples (plan error)")
            t = plan.epoch * q + b
            if t < self.start_step:
                continue
            yield self.make_batch(chunk, plan.epoch, b, t)

    def make_batch(self, samples: Sequence[dict[str, Any]], epoch: int, b: int, t: int) -> dict[str, Any]:
        """Decode and augment one batch with the generator of ``(seed, epoch, rank, b)``."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, epoch, self.rank, b, 0x4254])
        batch = method_spec(cfg.method).make_batch(samples, cfg, rng)
        return {**batch, "label": batch_labels(samples), "keys": [s["__key__"] for s in samples], "step": t,
                "epoch": epoch}


def _single_threaded() -> None:
    """Loader workers use one thread each (the ranks' cores are shared between many workers)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def make_loader(stream: ShardStream, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ready batches (``batch_size=None``), workers in the fixed round-robin order."""
    # forkserver, not fork: forking a process that already runs threads (Ray's client, NCCL, OpenMP pools) can
    # deadlock the child on a lock held by a thread that does not exist there.
    context = "forkserver" if workers else None
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                                       persistent_workers=False, prefetch_factor=2 if workers else None,
                                       multiprocessing_context=context)
