"""A progress line over images (done/total, rate, ETA) and the build summary a person reads at the end."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO


class Progress:
    """Images done out of a total, with rate and ETA; redrawn in place on a terminal, else one line per ~10 s."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, images: int) -> None:
        self.done += images
        now = time.monotonic()
        if self.enabled and (self.tty or now - self._last >= 10 or self.done >= self.total):
            self._last = now
            end = "" if self.tty and self.done < self.total else "\n"
            self.stream.write(("\r" if self.tty else "") + self.line(now) + end)
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta == eta else "--:--:--"
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} images  "
                f"{rate:.1f} img/s  ETA {eta_text}")


@dataclass
class BuildSummary:
    """The numbers a build ends with (printed, and saved as ``summary.json``)."""

    inputs: int = 0
    ok: int = 0
    failed: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_reused: int = 0
    segments_per_image: dict[str, float] = field(default_factory=dict)
    proposals_per_image: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    images_per_second: float = 0.0
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
        lines.append(f"{self.images_per_second:.2f} images/s over {self.wall_seconds:.1f} s wall on {self.cpus:g} CPUs")
        if self.core_seconds:
            total = sum(self.core_seconds.values())
            per = ", ".join(f"{k} {v:.1f}" for k, v in self.core_seconds.items())
            lines.append(f"core-seconds (computed shards): {per} (total {total:.1f})")
        return "\n".join(lines)


def distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"median": float(statistics.median(values)), "mean": float(statistics.fmean(values)),
            "max": float(max(values)), "min": float(min(values))}
