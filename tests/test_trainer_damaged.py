"""`regionshards train` on a damaged dataset: one ``Error:`` line naming the shard, no traceback, exit 1 (bad
input, as `stats` / `verify` report an unreadable dataset), with and without loader workers."""

from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from torch._utils import ExceptionWrapper  # noqa: E402

from fixtures.hostile import raw_json  # noqa: E402
from regionshards.shards import ShardError  # noqa: E402
from regionshards.trainer.data import loader_batches, worker_shard_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 12 * 2**30
SHARD = "shard-000001.tar"


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_shard_error_survives_pickle_and_a_loader_worker() -> None:
    error = ShardError("bad-json", "/data/shard-000001.tar", "k.json", "invalid JSON")
    again = pickle.loads(pickle.dumps(error))
    assert (again.code, again.shard, again.member, again.detail, str(again)) == (
        "bad-json", "/data/shard-000001.tar", "k.json", "invalid JSON", str(error))
    try:
        raise error
    except ShardError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ShardError) as caught:  # what torch's DataLoader raises in the main process
        wrapper.reraise()
    assert str(caught.value).startswith("Caught ShardError in DataLoader worker process 0")
    assert str(worker_shard_error(caught.value)) == str(error)
    assert worker_shard_error(error) is error  # not from a worker: unchanged

    def batches():
        yield {"step": 0}
        wrapper.reraise()

    got = loader_batches(batches())
    assert next(got) == {"step": 0}
    with pytest.raises(ShardError) as caught:
        next(got)
    assert str(caught.value) == str(error)


@pytest.fixture
def damaged(dataset_copy: Path) -> Path:
    """The tiny dataset with one sample's JSON member broken in shard 1, its manifest resealed."""
    raw_json(dataset_copy, b'{"segments": [', sample=1, name=SHARD)
    return dataset_copy


@pytest.mark.parametrize("workers", ["0", "1"])
def test_train_on_a_damaged_shard_is_one_error_line(damaged: Path, tmp_path: Path, workers: str) -> None:
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"proj_hidden": 32, "pred_hidden": 32}))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "regionshards", "train", "--data", str(damaged), "--out", str(tmp_path / "run"),
           "--backbone", "resnet18", "--image-size", "32", "--batch-size", "2", "--steps", "3", "--workers",
           workers, "--config", str(heads), "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT, preexec_fn=_limit)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()  # the run's "starting" line, then the error
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and len(lines) <= 2, proc.stderr
    assert errors[0].startswith(f"Error: {damaged / SHARD}: ") and ": bad-json: " in errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("shard", ["shard-000000.tar", "shard-000001.tar"])  # read by rank 1, by rank 0 (seed 0)
def test_damaged_shard_under_torchrun_is_one_error_line(dataset_copy: Path, tmp_path: Path, shard: str) -> None:
    from test_trainer_train import free_port

    raw_json(dataset_copy, b'{"segments": [', sample=1, name=shard)
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"proj_hidden": 32, "pred_hidden": 32}))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "regionshards", "train", "--data", str(dataset_copy), "--out", str(tmp_path / "run"),
           "--backbone", "resnet18", "--image-size", "32", "--batch-size", "1", "--steps", "6", "--workers", "0",
           "--config", str(heads), "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {dataset_copy / shard}: "), proc.stderr
    # the only traceback is torchrun's own ChildFailedError summary; no rank prints one
    assert "[rank" not in proc.stderr and proc.stderr.count("Traceback") <= 1, proc.stderr
