"""The fixed-memory distribution behind `regionshards stats`: exact where documented, 0.5 % elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regionshards.report.sketch import EXACT_INTEGERS, FLUSH_VALUES, RELATIVE_ACCURACY, Sketch

QS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def exact(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q, method="inverted_cdf"))  # nearest rank, as documented


def test_float_quantiles_are_within_the_documented_relative_accuracy() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.lognormal(0, 3, 50_000), np.zeros(1000), [1e-12, 5e13]])
    sketch = Sketch()
    for chunk in np.array_split(rng.permutation(values), 37):  # flushes happen mid-stream
        sketch.add(chunk)
    assert sketch.count == values.size and sketch.min == values.min() and sketch.max == values.max()
    assert sketch.mean == pytest.approx(values.mean(), rel=1e-12)
    for q in QS:
        want = exact(values, q)
        assert abs(sketch.quantile(q) - want) <= RELATIVE_ACCURACY * want * (1 + 1e-9), q
    assert sketch.quantile(0.0005) == 0.0  # the exact zero bucket
    assert sketch.quantile(0) == values.min() and sketch.quantile(1) == values.max()
    values_, counts = sketch.buckets()
    assert counts.sum() == values.size and np.all(np.diff(values_) >= 0)


def test_integer_quantiles_are_exact_below_4096_and_close_above() -> None:
    rng = np.random.default_rng(2)
    small = rng.integers(0, 300, 20_001)
    sketch = Sketch(integer=True)
    sketch.add(small)
    for q in QS:
        assert sketch.quantile(q) == exact(small, q)
    assert sketch.summary() == {"count": small.size, "mean": pytest.approx(small.mean()), "min": int(small.min()),
                                "median": int(exact(small, 0.5)), "p95": int(exact(small, 0.95)),
                                "max": int(small.max())}
    big = rng.integers(EXACT_INTEGERS, 10**9, 5000)
    sketch = Sketch(integer=True)
    sketch.add(big)
    for q in QS:
        assert abs(sketch.quantile(q) - exact(big, q)) <= RELATIVE_ACCURACY * exact(big, q) + 0.5


def test_memory_is_fixed_whatever_is_added() -> None:
    sketch = Sketch(integer=True)
    arrays = (sketch._pending, sketch._log, sketch._exact)
    rng = np.random.default_rng(3)
    for n in (1, 5, FLUSH_VALUES - 3, 7, 3 * FLUSH_VALUES, 1, *[1] * 10_000):
        sketch.add(rng.integers(0, 10**6, n))
    # the same three arrays, never reallocated: nothing grows with the values added
    assert all(a is b for a, b in zip(arrays, (sketch._pending, sketch._log, sketch._exact), strict=True))
    assert sketch.count == sum((1, 5, FLUSH_VALUES - 3, 7, 3 * FLUSH_VALUES, 1, *[1] * 10_000))
    assert sketch.buckets()[1].sum() == sketch.count


def test_empty_and_invalid_input() -> None:
    sketch = Sketch()
    assert math.isnan(sketch.quantile(0.5)) and sketch.summary()["median"] is None
    sketch.add([])
    assert sketch.count == 0
    with pytest.raises(ValueError, match=">= 0"):
        sketch.add([1.0, -2.0])
    with pytest.raises(ValueError, match="finite"):
        sketch.add([np.inf])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sketch.quantile(1.5)
