"""Shared fixtures: bundled sample photos and the optional eval photos beside the checkout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
EVAL_PHOTOS = ROOT.parent / "shared" / "eval-photos"


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def eval_photos_dir() -> Path:
    if not (EVAL_PHOTOS / "annotations.json").is_file():
        pytest.skip(f"eval photos not found at {EVAL_PHOTOS} (they live in ../shared, never in the project)")
    return EVAL_PHOTOS
