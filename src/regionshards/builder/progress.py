"""A progress line over images (done/total, rate, ETA) and the build summary a person reads at the end.

Rates count only the work done in this run: a resumed build's reused shards advance the bar but not the rate,
and a rerun with nothing to compute reports no rate at all. The summary's per-image distributions cover the
whole dataset: computed shards report theirs, reused ones the stats their index stores.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO


class Progress:
    """Images done out of a total, with the rate of computed images and an ETA; redrawn in place on a terminal,
    else one line per ~10 s."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.computed = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, images: int, computed: bool = True) -> None:
        self.done += images
        self.computed += images if computed else 0
        now = time.monotonic()
        if self.enabled and (self.tty or now - self._last >= 10 or self.done >= self.total):
            self._last = now
            end = "" if self.tty and self.done < self.total else "\n"
            self.stream.write(("\r" if self.tty else "") + self.line(now) + end)
            self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (e.g. why a shard is recomputed), above the progress line; shown even without it."""
        self.stream.write(("\r\033[K" if self.tty and self.enabled else "") + text + "\n")
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.computed / elapsed
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        left = self.total - self.done
        eta = left / rate if rate > 0 else float("nan")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta == eta else "--:--:--"
        reused = self.done - self.computed
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} images"
                + (f" ({reused} reused)" if reused else "") + f"  {rate:.1f} img/s  ETA {eta_text}")


@dataclass
class BuildSummary:
    """The numbers a build ends with (printed, and saved as ``summary.json``): counts and distributions of the
    whole dataset; ``images_computed``, rates and core-seconds of this run only."""

    inputs: int = 0
    ok: int = 0
    failed: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_reused: int = 0
    images_computed: int = 0
    segments_per_image: dict[str, float] = field(default_factory=dict)
    proposals_per_image: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    images_per_second: float | None = None
    core_seconds: dict[str, float] = field(default_factory=dict)
    cpus: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.failure_reasons.items()))
        lines = [
            f"inputs {self.inputs} = ok {self.ok} + failed {self.failed}" + (f" ({reasons})" if reasons else ""),
            f"shards {self.shards} ({self.shards_reused} reused after verification)",
        ]
        if self.segments_per_image:
            s = self.segments_per_image
            lines.append(f"segments per image: median {s['median']:g}, mean {s['mean']:.1f}, max {s['max']:g}")
        if self.proposals_per_image:
            p = self.proposals_per_image
            lines.append(f"proposals per image: median {p['median']:g}, mean {p['mean']:.1f}, max {p['max']:g}")
        if self.images_computed:
            lines.append(f"this run: {self.images_computed} images computed, {self.images_per_second:.2f} images/s "
                         f"over {self.wall_seconds:.1f} s wall on {self.cpus:g} CPUs")
        else:
            lines.append(f"this run: nothing to compute (checked in {self.wall_seconds:.1f} s)")
        if self.core_seconds and self.images_computed:
            total = sum(self.core_seconds.values())
            per = ", ".join(f"{k} {v:.1f}" for k, v in self.core_seconds.items())
            lines.append(f"core-seconds (computed shards): {per} (total {total:.1f})")
        return "\n".join(lines)


def distribution(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"median": float(statistics.median(values)), "mean": float(statistics.fmean(values)),
            "max": float(max(values)), "min": float(min(values))}


def summarise(listed: int, shards: Sequence[Any], results: Mapping[int, Any], wall: float,
              cpus: float) -> BuildSummary:
    """The summary of a build from every shard's result (computed or reused); checks inputs = ok + failed."""
    from .worker import STAGES

    infos = [results[s.index].info for s in shards]
    computed = [results[s.index] for s in shards if not results[s.index].reused]
    reasons: Counter[str] = Counter()
    for info in infos:
        reasons.update(info.failure_reasons)
    images_computed = sum(r.info.inputs for r in computed)
    summary = BuildSummary(
        inputs=sum(i.inputs for i in infos),
        ok=sum(i.samples for i in infos),
        failed=sum(i.failures for i in infos),
        failure_reasons=dict(sorted(reasons.items())),
        shards=len(shards),
        shards_reused=len(shards) - len(computed),
        images_computed=images_computed,
        segments_per_image=distribution([n for s in shards for n in results[s.index].segments]),
        proposals_per_image=distribution([n for s in shards for n in results[s.index].proposals]),
        wall_seconds=round(wall, 3),
        images_per_second=round(images_computed / wall, 3) if images_computed and wall > 0 else None,
        core_seconds={k: round(sum(r.seconds.get(k, 0.0) for r in computed), 3) for k in STAGES},
        cpus=cpus,
    )
    if summary.inputs != listed or summary.inputs != summary.ok + summary.failed:
        raise RuntimeError(f"inputs do not add up: {listed} listed, {summary.inputs} indexed, "
                           f"{summary.ok} ok + {summary.failed} failed")
    return summary
