"""Build robustness, each in its own process and its own Ray: a killed driver, a killed worker, 1 vs 2 CPUs, and
a real two-node Ray cluster. Outputs must be byte-identical to an uninterrupted build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from build_inputs import FAST_ARGS, make_imagenet
from regionshards.shards import verify

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "regionshards"]


def _env(marker: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", REGIONSHARDS_TEST_RUN=marker, **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def _kill_leftovers(marker: str) -> None:
    """Ray processes started by a killed driver outlive it: end every process that carries our marker."""
    needle = f"REGIONSHARDS_TEST_RUN={marker}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue


def _build(src: Path, out: Path, *args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [*CLI, "build", str(src), str(out), "--no-progress", *FAST_ARGS, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "summary.json"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_imagenet(tmp_path_factory.mktemp("faults") / "src", copies=4, long_side=160)


@pytest.fixture(scope="module")
def reference(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """An uninterrupted build on 2 CPUs."""
    marker = uuid.uuid4().hex
    out = tmp_path_factory.mktemp("reference") / "out"
    try:
        done = _build(source, out, "--shard-size", "2", "--num-cpus", "2", env=_env(marker))
    finally:
        _kill_leftovers(marker)
    assert done.returncode == 0, done.stdout + done.stderr
    assert verify(out).ok
    return _files(out)


def test_one_cpu_gives_the_same_bytes_as_two(source: Path, reference: dict[str, bytes], tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    try:
        done = _build(source, tmp_path / "out", "--shard-size", "2", "--num-cpus", "1", env=_env(marker))
    finally:
        _kill_leftovers(marker)
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path / "out") == reference


def test_killed_driver_then_rerun_gives_the_same_bytes(source: Path, reference: dict[str, bytes],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    marker = uuid.uuid4().hex
    cmd = [*CLI, "build", str(source), str(out), "--no-progress", *FAST_ARGS, "--shard-size", "2", "--num-cpus", "1"]
    proc = subprocess.Popen(cmd, env=_env(marker), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(out.glob("*.tar"))) < 2:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill_leftovers(marker)
    written = len(list(out.glob("*.tar")))
    assert 2 <= written < len(reference) // 2, "the driver was not killed mid-build"
    assert not (out / "manifest.json").exists()
    assert "manifest-missing" in verify(out).codes
    marker = uuid.uuid4().hex
    try:
        done = _build(source, out, "--shard-size", "2", "--num-cpus", "1", env=_env(marker))
    finally:
        _kill_leftovers(marker)
    assert done.returncode == 0, done.stderr
    assert "reused after verification" in done.stdout and "(0 reused" not in done.stdout
    assert _files(out) == reference


def test_killed_worker_is_retried_and_gives_the_same_bytes(source: Path, reference: dict[str, bytes],
                                                           tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    fired = tmp_path / "worker-killed"
    try:
        done = _build(source, tmp_path / "out", "--shard-size", "2", "--num-cpus", "2",
                      env=_env(marker, REGIONSHARDS_TEST_KILL_WORKER=str(fired)))
    finally:
        _kill_leftovers(marker)
    assert fired.exists(), "the fault was not injected"
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path / "out") == reference


def test_build_on_a_two_node_ray_cluster(source: Path, reference: dict[str, bytes], tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from ray.cluster_utils import Cluster
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False}})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        from click.testing import CliRunner
        from regionshards.cli.main import main
        import ray
        args = ["build", {str(source)!r}, {str(tmp_path / "out")!r}, "--no-progress", "--shard-size", "2",
                "--address", cluster.address, *{FAST_ARGS!r}]
        result = CliRunner().invoke(main, args)
        print(result.output)
        ray.init(address=cluster.address)
        print("nodes alive:", sum(1 for n in ray.nodes() if n["Alive"]))
        ray.shutdown()
        cluster.shutdown()
        sys.exit(result.exit_code)
    """)
    marker = uuid.uuid4().hex
    try:
        done = subprocess.run([sys.executable, "-c", script], env=_env(marker), capture_output=True, text=True,
                              timeout=300, cwd=ROOT)
    finally:
        _kill_leftovers(marker)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nodes alive: 2" in done.stdout and "on 2 CPUs" in done.stdout
    assert _files(tmp_path / "out") == reference
