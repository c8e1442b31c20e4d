"""The reference selective search (PyPI ``selectivesearch`` 0.4) and SoCo's variant of it, for tests and benchmarks.

SoCo's vendored copy differs from 0.4 in one place that changes results: the texture histogram range is
(0, 255) instead of (0, 1). ``soco_reference`` patches exactly that function for the duration of one call.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import selectivesearch.selectivesearch as alpacadb


def _texture_hist_0_255(img: np.ndarray) -> np.ndarray:
    # 0.4's _calc_texture_hist with SoCo's one change: range (0, 255).
    hist = np.array([])
    for colour_channel in (0, 1, 2):
        hist = np.concatenate([hist] + [np.histogram(img[:, colour_channel], 10, (0.0, 255.0))[0]])
    return hist / len(img)


@contextlib.contextmanager
def _quiet():
    # The reference runs skimage's LBP on float images, which warns; that warning is the reference's own.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def reference_regions(image: np.ndarray, variant: str, scale=300, sigma=0.9, min_size=100) -> tuple:
    """(rects (N, 4) int64 in the reference convention, sizes (N,) int64) from the reference package."""
    original = alpacadb._calc_texture_hist
    try:
        if variant == "soco":
            alpacadb._calc_texture_hist = _texture_hist_0_255
        elif variant != "alpacadb":
            raise ValueError(variant)
        with _quiet():
            _, regions = alpacadb.selective_search(image, scale=scale, sigma=sigma, min_size=min_size)
    finally:
        alpacadb._calc_texture_hist = original
    rects = np.array([r["rect"] for r in regions], dtype=np.int64).reshape(-1, 4)
    sizes = np.array([r["size"] for r in regions], dtype=np.int64)
    return rects, sizes
