"""Fault injection through the real CLI in a subprocess, under a memory limit (RLIMIT_AS) and a timeout: hostile
inputs become rows, refusals are one line with exit status 2 before Ray starts, a locked OUT is refused."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from build_inputs import FAST_ARGS, corrupt_blp, hostile_coco, jpeg_bytes, lying_jpeg, make_imagenet
from regionshards.shards import verify

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "regionshards", "build"]
# Ray's own processes reserve address space generously: 12 GiB per process still starts it, while one input that
# would need more (a 9000 x 9000 image at the pipeline's ~200 B/px is 16 GB) could not be computed under it.
MEMORY_LIMIT = 12 * 2**30


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONPATH=str(ROOT / "src"))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          preexec_fn=_limit)


def index_rows(out: Path) -> dict[str, dict]:
    return {r["source_path"]: r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()}


def test_hostile_list_builds_with_every_input_accounted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.jpg").write_bytes(jpeg_bytes(48))
    (src / "good2.jpg").write_bytes(jpeg_bytes(48, "coffee"))
    (src / "lying.jpg").write_bytes(lying_jpeg(9000, 9000))  # 30 KB claiming 81 Mpx: refused from its header
    (src / "blp.jpg").write_bytes(corrupt_blp())
    os.mkfifo(src / "pipe.jpg")
    with open(src / "huge.jpg", "wb") as f:
        f.truncate(6 * 2**30)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(["src/good.jpg", "src/good2.jpg", "src/lying.jpg", "src/blp.jpg", "src/pipe.jpg",
                              "src/huge.jpg", "/dev/zero", "http://example.com/a.jpg", "src/gone.jpg"]) + "\n")
    out = tmp_path / "out"
    done = run_cli(str(lst), str(out), "--no-progress", "--num-cpus", "2", "--shard-size", "3",
                   "--proposals", "none", *FAST_ARGS)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "inputs 9 = ok 2 + failed 7" in done.stdout
    rows = index_rows(out)
    assert {k: r["reason"] for k, r in rows.items()} == {
        "src/good.jpg": None, "src/good2.jpg": None, "src/lying.jpg": "too-many-pixels",
        "src/blp.jpg": "undecodable", "src/pipe.jpg": "not-a-regular-file", "src/huge.jpg": "too-many-bytes",
        "dev/zero": "not-a-regular-file", "example.com/a.jpg": "unsupported", "src/gone.jpg": "missing"}
    assert not any(str(tmp_path) in (r["detail"] or "") or " at 0x" in (r["detail"] or "") for r in rows.values())
    assert verify(out).ok
    assert "Traceback" not in done.stderr and "Started a local Ray" not in done.stderr
    assert "Token authentication" not in done.stderr


@pytest.mark.slow
def test_hostile_coco_builds_and_notes_every_dropped_annotation(tmp_path: Path) -> None:
    images, ann, expect = hostile_coco(tmp_path)
    out = tmp_path / "out"
    done = run_cli(str(images), str(out), "--annotations", str(ann), "--no-progress", "--num-cpus", "1",
                   "--proposals", "none", *FAST_ARGS)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["image_id"]: r for r in index_rows(out).values()}
    assert all(want["note"] in (rows[i]["note"] or "") for i, want in expect.items())


def _one_line_refusal(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("case", ["empty", "prefix", "foreign", "nothing-matches", "images-null", "escape"])
def test_refusals_are_one_line_exit_2_and_touch_nothing(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    out = tmp_path / "out"
    extra: list[str] = []
    if case == "empty":
        src.mkdir()
        want = ("no inputs",)
    else:
        make_imagenet(src)
    if case == "prefix":
        extra = ["--prefix", "../evil"]
        want = ("--prefix",)
    if case == "foreign":
        out.mkdir()
        (out / "thesis.pdf").write_bytes(b"%PDF")
        want = ("not from a regionshards build", "thesis.pdf")
    if case in ("nothing-matches", "images-null", "escape"):
        images = {"nothing-matches": [{"id": 1, "file_name": "zzz.jpg"}],
                  "escape": [{"id": 1, "file_name": "../src/animal/chelsea_0.jpg"}],
                  "images-null": None}[case]
        (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": []}))
        extra = ["--annotations", str(tmp_path / "ann.json")]
        want = {"nothing-matches": ("none of the 1 file names",), "images-null": ("'images' must be a list",),
                "escape": ("outside the image folder",)}[case]
        src = src / "animal"
    done = run_cli(str(src), str(out), "--no-progress", *extra, timeout=60)
    _one_line_refusal(done, *want)
    assert not out.exists() or [p.name for p in out.iterdir()] == (["thesis.pdf"] if case == "foreign" else [])
    assert not (tmp_path / "evil-000000.tar").exists()


def test_a_second_build_into_the_same_out_is_refused_naming_the_holder(tmp_path: Path) -> None:
    make_imagenet(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": "now"}  # this test process: alive
    (out / ".regionshards.lock").write_text(json.dumps(holder))
    done = run_cli(str(tmp_path / "src"), str(out), "--no-progress", timeout=60)
    _one_line_refusal(done, f"pid {os.getpid()}", socket.gethostname())
    assert sorted(p.name for p in out.iterdir()) == [".regionshards.lock"]


@pytest.mark.slow
def test_a_stale_lock_from_a_killed_build_is_taken_over(tmp_path: Path) -> None:
    make_imagenet(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".regionshards.lock").write_text(json.dumps({"host": socket.gethostname(),
                                                         "pid": int(dead.stdout), "since": "then"}))
    done = run_cli(str(tmp_path / "src"), str(out), "--no-progress", "--num-cpus", "1", "--proposals", "none",
                   *FAST_ARGS)
    assert done.returncode == 0, done.stderr
    assert "took over a stale lock" in done.stderr and not (out / ".regionshards.lock").exists()


@pytest.mark.slow
def test_a_shard_that_dies_on_every_retry_ends_the_build_naming_it(tmp_path: Path) -> None:
    make_imagenet(tmp_path / "src")
    env_marker = {"REGIONSHARDS_TEST_KILL_WORKER_ALWAYS": "1"}
    os.environ.update(env_marker)
    try:
        done = run_cli(str(tmp_path / "src"), str(tmp_path / "out"), "--no-progress", "--num-cpus", "1",
                       "--shard-size", "2", "--proposals", "none", *FAST_ARGS)
    finally:
        os.environ.pop("REGIONSHARDS_TEST_KILL_WORKER_ALWAYS")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "shard-000000" in done.stderr and "failed on every retry" in done.stderr


@pytest.mark.slow
def test_hostile_folder_builds_with_every_entry_accounted(tmp_path: Path) -> None:
    src = make_imagenet(tmp_path / "src")
    os.mkfifo(src / "object" / "pipe.jpg")
    (src / "object" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (src / "animal" / "loop").symlink_to(src / "animal", target_is_directory=True)
    (src / os.fsdecode(b"object/caf\xe9.jpg")).write_bytes(jpeg_bytes(40))
    (src / "README.txt").write_text("a stray top-level file")
    out = tmp_path / "out"
    done = run_cli(str(src), str(out), "--no-progress", "--num-cpus", "2", "--shard-size", "3",
                   "--proposals", "none", *FAST_ARGS)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "imagenet layout" in done.stdout and "inputs 10 = ok 6 + failed 4" in done.stdout
    rows = index_rows(out)
    assert {k: r["reason"] for k, r in rows.items() if r["reason"]} == {
        "object/pipe.jpg": "not-a-regular-file", "object/dangling.jpg": "missing", "animal/loop": "symlink-loop",
        "README.txt": "stray-file"}
    assert rows["object/caf\\xe9.jpg"]["status"] == "ok"
    assert sum(1 for r in rows.values() if r["class_name"] == "animal" and r["status"] == "ok") == 2
