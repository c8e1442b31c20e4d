"""A streaming distribution of non-negative numbers in fixed memory: exact count, sum, min and max, and
quantiles from fixed buckets (a DDSketch-style log histogram), so statistics over any number of samples use
the same few tens of kilobytes.

Buckets and precision:

* integer sketches (``integer=True``) count every whole value 0..``EXACT_INTEGERS - 1`` (0..4095) exactly, so
  quantiles of counts such as segments per image, proposals per image or box sides are **exact** there;
* every other value > 0 falls in a log bucket ``k`` holding ``(γ^(k-1), γ^k]`` with ``γ = (1 + α) / (1 - α)``
  and ``α = RELATIVE_ACCURACY = 0.005``; the bucket is represented by ``2 γ^k / (γ + 1)``, which lies within
  ``α`` (0.5 %) relative of every value in it. Float zeros have a bucket of their own (exact).
* Quantiles use the nearest-rank definition (the value of rank ``ceil(q n)`` in sorted order, numpy's
  ``method="inverted_cdf"``); an estimate is within 0.5 % relative of that exact value (exact in the integer
  range), and clamped to the exact min and max. Values outside ``[1e-9, 1e12]`` are clamped into the end
  buckets (min and max stay exact).

Memory: the bucket array (~4,800 int64, 38 KiB; plus 4,096 for integer sketches) and a fixed buffer of
``FLUSH_VALUES`` (4,096) float64 values waiting to be binned; nothing grows with the number of values added.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

RELATIVE_ACCURACY = 0.005
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
EXACT_INTEGERS = 4096
LOW, HIGH = 1e-9, 1e12
FLUSH_VALUES = 4096
_LOG_GAMMA = math.log(GAMMA)
_K_LOW = math.ceil(math.log(LOW) / _LOG_GAMMA)
_K_HIGH = math.ceil(math.log(HIGH) / _LOG_GAMMA)
_N_LOG = _K_HIGH - _K_LOW + 1


class Sketch:
    """Streaming distribution of non-negative values (see the module docstring for buckets and precision).

    Args:
        integer: the values are whole numbers (they are counted exactly below ``EXACT_INTEGERS``).
    """

    def __init__(self, integer: bool = False) -> None:
        self.integer = integer
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._exact = np.zeros(EXACT_INTEGERS if integer else 1, np.int64)  # float sketches: [zeros]
        self._log = np.zeros(_N_LOG, np.int64)
        self._pending = np.empty(FLUSH_VALUES, np.float64)  # values not yet binned: a fixed buffer
        self._pending_n = 0

    def add(self, values: float | Iterable[float] | np.ndarray) -> None:
        """Add one value or a 1-D array of values (each >= 0, finite); raises ValueError otherwise."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            return
        lo, hi = float(arr.min()), float(arr.max())
        if not (lo >= 0 and math.isfinite(hi)):
            raise ValueError(f"a sketch takes finite values >= 0, got min {lo}, max {hi}")
        self.count += arr.size
        self.total += float(arr.sum())
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        if self._pending_n + arr.size > FLUSH_VALUES:
            self._flush()
        if arr.size >= FLUSH_VALUES:
            self._bin(arr)
        else:
            self._pending[self._pending_n:self._pending_n + arr.size] = arr
            self._pending_n += arr.size

    def _flush(self) -> None:
        if self._pending_n:
            self._bin(self._pending[: self._pending_n])
            self._pending_n = 0

    def _bin(self, arr: np.ndarray) -> None:
        if self.integer:
            small = arr < EXACT_INTEGERS
            self._exact += np.bincount(np.rint(arr[small]).astype(np.int64), minlength=EXACT_INTEGERS)
            arr = arr[~small]
        else:
            zero = arr == 0
            self._exact[0] += int(np.count_nonzero(zero))
            arr = arr[~zero]
        if arr.size:
            k = np.ceil(np.log(np.clip(arr, LOW, HIGH)) / _LOG_GAMMA).astype(np.int64)
            self._log += np.bincount(np.clip(k - _K_LOW, 0, _N_LOG - 1), minlength=_N_LOG)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, counts)`` of the non-empty buckets in ascending order; values are the representatives
        (the integer itself, 0, or ``2 γ^k / (γ + 1)``). Plots draw histograms from these."""
        self._flush()
        exact_values = np.arange(self._exact.size, dtype=np.float64)
        k = np.arange(_K_LOW, _K_HIGH + 1, dtype=np.float64)
        log_values = 2 * GAMMA**k / (GAMMA + 1)
        values = np.concatenate([exact_values, log_values])
        counts = np.concatenate([self._exact, self._log])
        nz = counts > 0
        values, counts = values[nz], counts[nz]
        if values.size:  # representatives never leave the exact range of the data
            values = np.clip(values, self.min, self.max)
        return values, counts

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile ``q`` in [0, 1] (NaN when empty); see the module docstring for its precision."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return math.nan
        if q == 0:
            return self.min
        if q == 1:
            return self.max
        values, counts = self.buckets()
        rank = max(1, math.ceil(q * self.count))
        i = int(np.searchsorted(np.cumsum(counts), rank))
        value = float(values[min(i, values.size - 1)])
        return round(value) if self.integer and value < EXACT_INTEGERS else value

    def summary(self) -> dict[str, float | int | None]:
        """``{"count", "mean", "min", "median", "p95", "max"}``; an empty sketch gives None for each statistic."""
        if self.count == 0:
            return {"count": 0, "mean": None, "min": None, "median": None, "p95": None, "max": None}
        conv = (lambda v: int(round(v))) if self.integer else float
        return {
            "count": self.count,
            "mean": self.mean,
            "min": conv(self.min),
            "median": conv(self.quantile(0.5)),
            "p95": conv(self.quantile(0.95)),
            "max": conv(self.max),
        }
