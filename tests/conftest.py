"""Shared fixtures: bundled sample photos and the optional eval photos beside the checkout."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real dataset (read-only: copy it before changing it): six bundled photos at 48 px in an
    ImageNet-style layout plus two undecodable inputs, three inputs per shard."""
    from fixtures.tiny_build import Source, TinyInput, build_dataset, imagenet_inputs

    out = tmp_path_factory.mktemp("tiny") / "ds"
    bad = [TinyInput(Source("object/empty.jpg", None, 1, "object"), b""),
           TinyInput(Source("person/notes.png", None, 2, "person"), b"not an image")]
    build_dataset(out, imagenet_inputs() + bad, shard_size=3)
    return out


@pytest.fixture
def dataset_copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_dataset`` that a test may damage."""
    import shutil

    return Path(shutil.copytree(tiny_dataset, tmp_path / "ds"))


@pytest.fixture(scope="session")
def ray_local():
    ray = pytest.importorskip("ray", reason="ray[data] is not installed (it is in the test extra)")
    before = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a local, loopback-only Ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    else:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = before
