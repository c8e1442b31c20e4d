"""The epoch plan: which samples each rank and loader worker reads, in which order (torch-free).

**Epoch plan** (``EpochPlan``, a pure function of the manifest's per-shard sample counts, the seed, the epoch,
the world size, the rank, the batch size and the loader workers):

1. The shards are permuted with a generator seeded by ``(seed, epoch)`` — the same order on every rank — and
   their samples laid end to end: N sample positions.
2. Every rank gets ``n = N // world_size`` consecutive positions (rank r: ``[r n, (r + 1) n)``) and uses the
   first ``Q * batch_size`` of them, ``Q = n // batch_size``. So **every rank yields exactly Q batches per
   epoch** and no sample is served twice within an epoch; the remainder (fewer than
   ``world_size * (batch_size + 1)`` samples) is dropped for that epoch — a different remainder each epoch,
   since the order changes. Nothing is padded.
3. **Mixing.** The rank's samples (pieces of about ``1 / world_size`` of the shards) are read as DetCon's
   ``tf.data`` pipeline reads its TFRecords: **interleaved** — ``interleave`` shards open at once, one sample
   from each in turn (``cycle_length`` = ``interleave``, ``block_length`` 1; an exhausted shard's slot takes
   the next shard) — then through a seeded shuffle buffer (``shuffle_buffer`` samples). Batch b is samples
   ``[b B, (b + 1) B)`` of that stream. So consecutive samples come from different shards, and a batch mixes as
   many shards as it has samples, however the dataset was ordered when it was built (class-sorted included).
4. A rank's Q batches are split between its W loader workers: virtual worker v makes (decodes, augments) the
   batches ``b ≡ v (mod W)``. Every worker of a rank reads the rank's whole stream (the same shards at the
   same time, so the page cache serves the W reads of one file) and decodes only its own batches; the others'
   samples are dropped unparsed. ``mix_ranks``: every rank reads the epoch's whole stream (the first
   ``world_size * Q * batch_size`` positions, shuffled alike on every rank) and takes its batches
   ``g ≡ rank (mod world_size)``, so each rank's own batches mix all shards (world_size x the reads).

**Order across workers.** ``torch.utils.data.DataLoader`` asks its workers for batches round-robin and returns
them in request order, so physical worker p serves global batches ``t ≡ p - t0 (mod W)`` counted from the
start step ``t0``; in epoch e it therefore plays virtual worker ``(p + t0 - e Q) mod W``. With that mapping the
stream is one endless sequence of batches ``t = t0, t0 + 1, ...`` (epoch ``t // Q``, batch ``t % Q``), the same
for any resume point: **resuming at step t0 yields exactly the batches an uninterrupted run yields from t0 on**
(same world size, batch size, workers, interleave and seed). Skipped batches are read and shuffled but not
decoded.

**Randomness.** The shuffle of rank r uses ``(seed, epoch, rank)`` (the same in all of its workers); the
augmentations and id sampling of batch b use ``(seed, epoch, rank, b)`` — nothing depends on process-global
random state.

Samples are read with ``regionshards.shards.iter_shard`` (checked tar headers, no pickle) as raw members: every
loader worker reads its rank's whole stream but decodes only its own batches, so the validating parser runs
later, on the samples a batch uses (``ShardStream.make_batch``), once each. A shard holding fewer samples than
its manifest entry is an error (the epoch plan would no longer be equal across ranks). ``batch_mixing``
measures the plan's class mixing without reading any file.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..shards import ShardError
from ..shards.reader import iter_shard
from .config import TrainConfig


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
        """[start, stop) positions of virtual worker v's own contiguous run (``interleave = 0``: the plan of runs
        saved before interleaving existed, kept so that they resume exactly)."""
        start = self.rank * self.samples_per_rank + sum(self.worker_batches(u) for u in range(v)) * self.batch_size
        return start, start + self.worker_batches(v) * self.batch_size

    def rank_range(self) -> tuple[int, int]:
        """[start, stop) sample positions of this rank's Q batches in the epoch's concatenated shard order."""
        start = self.rank * self.samples_per_rank
        return start, start + self.batches * self.batch_size

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


def interleaved(spans: Sequence[Span], cycle: int,
                read: Callable[[Span], Iterator[Any]] | None = None) -> Iterator[Any]:
    """The samples of ``spans`` interleaved like ``tf.data.Dataset.interleave(cycle_length=cycle,
    block_length=1)``: ``cycle`` spans open at once, one sample from each in turn; an exhausted span's slot takes
    the next span (and serves at once), a slot with no span left closes. Deterministic; every sample once.

    ``read(span)`` yields a span's samples (default: ``read_spans([span])``).
    """
    read = read or (lambda span: read_spans([span]))
    pending = iter(spans)
    slots = [read(s) for s in itertools.islice(pending, max(1, cycle))]
    i = 0
    while slots:
        i %= len(slots)
        item = next(slots[i], _END)
        if item is _END:
            following = next(pending, None)
            if following is None:
                del slots[i]
            else:
                slots[i] = read(following)
            continue
        yield item
        i += 1


_END = object()


def read_spans(spans: Sequence[Span]) -> Iterator[dict[str, Any]]:
    """Samples of each span (raw bytes, JSON unparsed and not yet validated: ``shards.validated_sample`` does
    that for the samples used), verifying that every shard holds what the plan expects."""
    for span in spans:
        got = 0
        if span.take <= 0:
            continue
        for i, sample in enumerate(iter_shard(span.url, parse_json=False, validate=False)):
            if i < span.skip:
                continue
            yield sample
            got += 1
            if got == span.take:
                break
        if got < span.take:
            raise ShardError("count-mismatch", span.url, None, f"holds fewer samples than its manifest entry "
                             f"(needed samples {span.skip}..{span.skip + span.take - 1})")


def rank_stream(plan: EpochPlan, cfg: TrainConfig, read: Callable[[Span], Iterator[Any]] | None = None
                ) -> Iterator[Any]:
    """A rank's samples of one epoch in batch order: its spans interleaved (``cfg.interleave`` at once), then
    through the shuffle buffer seeded by ``(seed, epoch, rank)`` — identical in every worker of the rank.
    ``read(span)`` replaces the shard reader (the batch-mixing benchmark and tests feed class labels)."""
    if cfg.mix_ranks and plan.world_size > 1:
        # every rank reads the epoch's whole stream (seeded alike on all ranks) and takes every W-th batch of it
        rng = np.random.default_rng([cfg.seed, plan.epoch, 0x5348, 0x4D52])
        stop = plan.world_size * plan.batches * plan.batch_size
        stream = shuffled(interleaved(plan.spans(0, stop), cfg.interleave, read), cfg.shuffle_buffer, rng)
        return _every_nth_batch(stream, plan.batch_size, plan.world_size, plan.rank)
    rng = np.random.default_rng([cfg.seed, plan.epoch, plan.rank, 0x5348])
    return shuffled(interleaved(plan.spans(*plan.rank_range()), cfg.interleave, read), cfg.shuffle_buffer, rng)


def _every_nth_batch(stream: Iterator[Any], size: int, every: int, offset: int) -> Iterator[Any]:
    """The samples of batches ``offset, offset + every, ...`` of a stream cut into batches of ``size``."""
    while True:
        for j in range(every):
            chunk = list(itertools.islice(stream, size))
            if len(chunk) < size:
                return
            if j == offset:
                yield from chunk


def runs_stream(plan: EpochPlan, cfg: TrainConfig, v: int, read: Callable[[Span], Iterator[Any]] | None = None
                ) -> Iterator[Any]:
    """``interleave = 0``: virtual worker v's own contiguous run through its own buffer (the plan of runs saved
    before interleaving existed; batches then hold few shards)."""
    rng = np.random.default_rng([cfg.seed, plan.epoch, plan.rank, v, 0x5348])
    spans = plan.spans(*plan.worker_range(v))
    items = read_spans(spans) if read is None else itertools.chain.from_iterable(read(s) for s in spans)
    return shuffled(items, cfg.shuffle_buffer, rng)


def expected_distinct(class_sizes: Sequence[int], batch: int) -> float:
    """Expected number of distinct classes in ``batch`` samples drawn without replacement, uniformly, from a
    pool with ``class_sizes`` samples per class (the i.i.d. reference for batch mixing)."""
    n = sum(class_sizes)
    # P(class c absent) = C(n - n_c, batch) / C(n, batch), as a running product (no huge binomials)
    total = 0.0
    for size in class_sizes:
        absent = 1.0
        for i in range(batch):
            absent *= max(n - size - i, 0) / (n - i)
        total += 1.0 - absent
    return total


def batch_mixing(counts: Sequence[int], classes: Sequence[Sequence[int]], cfg: TrainConfig, world_size: int = 1,
                 batches: int = 100, epoch: int = 0, sets: bool = False) -> list[Any]:
    """Distinct classes in each of the first ``batches`` batches of every rank (rank after rank), through the
    trainer's own epoch plan, interleave and shuffle buffer, for shards of ``counts`` samples whose class labels
    are ``classes[shard]`` (no files are read). ``cfg.workers`` virtual workers (they only matter for
    ``interleave = 0``). ``sets``: per rank, the list of each batch's set of classes instead."""
    urls = tuple(str(i) for i in range(len(counts)))

    def read(span: Span) -> Iterator[int]:
        return iter(classes[int(span.url)][span.skip : span.skip + span.take])

    out = []
    for rank in range(world_size):
        workers = max(cfg.workers, 1)
        plan = EpochPlan(urls, tuple(counts), cfg.seed, epoch, world_size, rank, cfg.batch_size, workers)
        wanted = min(batches, plan.batches)
        if cfg.interleave:
            stream = rank_stream(plan, cfg, read)
            per_batch = [list(itertools.islice(stream, cfg.batch_size)) for _ in range(wanted)]
        else:
            streams = [runs_stream(plan, cfg, v, read) for v in range(workers)]
            per_batch = [list(itertools.islice(streams[b % workers], cfg.batch_size)) for b in range(wanted)]
        out += [[set(b) for b in per_batch]] if sets else [len(set(b)) for b in per_batch]
    return out
