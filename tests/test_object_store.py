"""Object stores end to end: SOURCE and OUT as ``s3://`` against an S3-compatible server (moto) on 127.0.0.1.

Builds run the real CLI in a subprocess (its own local Ray, whose workers inherit the endpoint and credentials
from the environment, as every node of a cluster must); reading, verify and the reports run in this process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip("moto", reason="moto[server] is in the test extra")

from build_inputs import FAST_ARGS, make_imagenet, photo  # noqa: E402
from regionshards.shards import open_dataset, verify  # noqa: E402
from regionshards.shards.store import Store, check_name  # noqa: E402
from s3_server import make_bucket as _make_bucket  # noqa: E402
from s3_server import s3_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def s3():
    with s3_server() as server:
        yield server


def bucket() -> str:
    name = f"rs-{uuid.uuid4().hex[:12]}"  # moto keeps its buckets for the whole process: one per test
    _make_bucket(name)
    return name


def upload(folder: Path, url: str) -> None:
    from pyarrow import fs as pafs

    store = Store(url)
    pafs.copy_files(str(folder), store.root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=store.fs)


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.run([sys.executable, "-m", "regionshards", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def build_args(source: str, out: str, *extra: str) -> list[str]:
    return ["build", source, out, "--shard-size", "2", "--num-cpus", "2", "--no-progress", "--proposals", "none",
            *FAST_ARGS, *extra]


# --- the seam -----------------------------------------------------------------------------------------------


def test_store_on_s3_writes_whole_objects_lists_and_refuses_what_it_must(s3) -> None:
    b = bucket()
    store = Store(f"s3://{b}/run/")
    assert store.url == f"s3://{b}/run" and store.folder_problem() == "missing" and store.names() == []
    store.make()  # the bucket exists: nothing to create
    with pytest.raises(FileNotFoundError, match="bucket 'rs-nope-none' does not exist"):
        Store("s3://rs-nope-none/run").make()
    store.write("a.json", b'{"x": 1}')
    assert store.write_with("b.bin", lambda f: f.write(b"0123456789")) == 10
    assert store.names() == ["a.json", "b.bin"] and store.folder_problem() is None
    assert store.problem("a.json") is None and store.problem("zz") == "missing" and store.size("b.bin") == 10
    assert store.read("a.json", 100) == b'{"x": 1}'
    with pytest.raises(ValueError, match="10 bytes > limit of 4"):  # refused from its size, before reading
        store.read("b.bin", 4)
    Store(f"s3://{b}/run/sub").write("c", b"c")  # a prefix is a "folder": never opened as an object
    assert store.problem("sub") == "a folder (prefix)"
    with pytest.raises(OSError, match="only objects are read"):
        store.open("sub")
    for bad in ("..", ".", "", "../x", "a/b"):
        with pytest.raises(ValueError, match="not a plain file name"):
            check_name(bad)
    store.delete("a.json")
    store.delete("a.json")  # absent: nothing to do
    assert store.names() == ["b.bin", "sub"]


def test_lock_object_refuses_a_second_build_and_takes_over_a_dead_one(s3) -> None:
    import socket

    from regionshards.builder.lock import LOCK_NAME, BuildLock, LockedError

    out = Store(f"s3://{bucket()}/ds")
    with BuildLock(out) as lock:
        held = json.loads(out.read(LOCK_NAME, 4096))
        assert held["pid"] == os.getpid() and held["token"] == lock.token
        with pytest.raises(LockedError, match=rf"being built by pid {os.getpid()} .*remove s3://.*/\.regionshards\.lock"):
            BuildLock(out).acquire()
    assert LOCK_NAME not in out.names()  # released
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out.write(LOCK_NAME, json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "token": "x"}).encode())
    with BuildLock(out) as lock:
        assert lock.stale["pid"] == int(dead.stdout)  # a killed driver on this host: taken over
    out.write(LOCK_NAME, json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}).encode())
    with pytest.raises(LockedError, match="on host elsewhere"):  # another host's lock is never guessed at
        BuildLock(out).acquire()


def test_lock_of_two_builds_writing_at_once_goes_to_the_last_writer(s3, monkeypatch) -> None:
    from regionshards.builder.lock import LOCK_NAME, BuildLock, LockedError

    out = Store(f"s3://{bucket()}/ds")
    first, second = BuildLock(out), BuildLock(out)
    write = Store.write

    def racing(self, name, data):  # the second driver writes its lock right after the first one's
        write(self, name, data)
        if name == LOCK_NAME and json.loads(bytes(data))["token"] == first.token:
            write(self, name, json.dumps({**second._me(), "pid": 424242}).encode())

    monkeypatch.setattr(Store, "write", racing)
    with pytest.raises(LockedError, match="being built by pid 424242"):
        first.acquire()  # its token did not read back: it refuses
    assert json.loads(out.read(LOCK_NAME, 4096))["token"] == second.token


def test_missing_bucket_and_foreign_prefix_are_refused_before_ray(s3, tmp_path: Path) -> None:
    from regionshards.builder import OutputError, list_source, make_config, run_build

    listing = list_source(make_imagenet(tmp_path / "src"))
    config = make_config(layout=listing.layout, classes=listing.classes)
    with pytest.raises(OutputError, match="bucket 'rs-missing-bucket' does not exist"):
        run_build(listing, "s3://rs-missing-bucket/out", config, progress=False)
    foreign = Store(f"s3://{bucket()}/data")
    foreign.write("notes.txt", b"mine")
    with pytest.raises(OutputError, match="holds files that are not from a regionshards build .*notes.txt"):
        run_build(listing, foreign.url, config, progress=False)


def test_object_source_listing_layouts_and_unsafe_keys(s3, tmp_path: Path) -> None:
    from regionshards.builder import SourceError, list_source

    b = bucket()
    upload(make_imagenet(tmp_path / "src"), f"s3://{b}/in")
    listing = list_source(f"s3://{b}/in/")
    assert listing.layout == "imagenet" and listing.classes == ["animal", "object"] and len(listing.refs) == 5
    assert listing.refs[0].uri == f"s3://{b}/in/animal/chelsea_0.jpg"
    weird = Store(f"s3://{b}/in/object")
    weird.write("a b%3F?.jpg", b"x")  # '%', '?' and ' ' stay part of the key: read back through its URI
    weird.write(".hidden.jpg", b"x")  # hidden: skipped as on a disk
    boto3 = pytest.importorskip("boto3", reason="comes with moto")  # pyarrow normalises '..' away; S3 keeps it
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).put_object(Bucket=b, Key="in/object/../up.jpg",
                                                                               Body=b"x")
    refs = {r.source.path: r for r in list_source(f"s3://{b}/in").refs}
    from regionshards.builder.worker import read_input

    assert read_input(refs["object/a b%3F?.jpg"].uri)[0] == b"x"
    assert ".hidden.jpg" not in str(sorted(refs))
    unsafe = [r for r in refs.values() if ".." in (r.source.path or "")]
    assert unsafe and all(r.listing_error[0] == "unsupported" and r.uri == "" for r in unsafe), sorted(refs)
    with pytest.raises(SourceError, match="source not found or empty"):
        list_source(f"s3://{b}/nothing")
    with pytest.raises(SourceError, match="imagenet or folder layout"):
        list_source(f"s3://{b}/in/list.txt")


# --- build, resume, verify, reports, trainer ----------------------------------------------------------------


def test_build_resume_verify_and_reports_on_s3(s3, tmp_path: Path) -> None:
    b = bucket()
    src_url, out_url = f"s3://{b}/imagenet", f"s3://{b}/ds"
    upload(make_imagenet(tmp_path / "src"), src_url)
    first = cli(*build_args(src_url, out_url))
    assert first.returncode == 0, first.stderr
    assert "imagenet layout at" in first.stdout and "inputs 5 = ok 5 + failed 0" in first.stdout
    out = Store(out_url)
    assert out.names() == ["manifest.json", "shard-000000.parquet", "shard-000000.tar", "shard-000001.parquet",
                           "shard-000001.tar", "shard-000002.parquet", "shard-000002.tar", "summary.json"]
    report = verify(out_url)
    assert report.ok, str(report)
    assert report.shards == 3 and report.samples_read == 5
    tars = {n: out.read(n, 1 << 20) for n in out.names() if n.endswith(".tar")}

    again = cli(*build_args(src_url, out_url))  # a rerun reuses every shard, listing the objects
    assert again.returncode == 0, again.stderr
    assert "3 reused after verification" in again.stdout, again.stdout
    assert {n: out.read(n, 1 << 20) for n in tars} == tars

    # a changed input recomputes its shard (and only that one), naming the input
    changed = "object/coins_0.jpg"
    sample = next(s for s in open_dataset(out_url) if s["json"]["source"]["path"] == changed)
    import io

    buf = io.BytesIO()
    photo("coins", 70).save(buf, format="JPEG", quality=90)
    Store(f"{src_url}/object").write("coins_0.jpg", buf.getvalue())
    third = cli(*build_args(src_url, out_url))
    assert third.returncode == 0, third.stderr
    assert "2 reused after verification" in third.stdout, third.stdout
    assert f"{changed} changed size" in third.stderr, third.stderr
    now = {n: out.read(n, 1 << 20) for n in tars}
    assert [n for n in tars if now[n] != tars[n]] == [sample["__url__"].rsplit("/", 1)[1]]
    assert verify(out_url).ok

    # verify through the CLI, an object-store manifest URL, and damage it finds
    ran = cli("verify", out_url)
    assert ran.returncode == 0 and "OK: 3 shard(s), 5 sample(s) read" in ran.stdout, ran.stdout + ran.stderr
    assert verify(f"{out_url}/manifest.json").ok
    out.write("shard-000001.tar", now["shard-000001.tar"][:-1024])
    assert "shard-size-mismatch" in verify(out_url).codes
    out.write("shard-000001.tar", now["shard-000001.tar"])


def test_reports_read_an_s3_dataset(s3, tiny_dataset: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from regionshards.cli.main import main
    from regionshards.report.stats import compute_stats

    b = bucket()
    url = f"s3://{b}/tiny"
    upload(tiny_dataset, url)
    local, remote = compute_stats(tiny_dataset), compute_stats(url)
    assert remote.to_json() == {**local.to_json(), "dataset": url}
    runner = CliRunner()
    result = runner.invoke(main, ["stats", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == remote.to_json()
    shown = runner.invoke(main, ["show", url, "--sample", "2", "--out", str(tmp_path / "show")])
    assert shown.exit_code == 0, shown.output
    assert len(list((tmp_path / "show").glob("*.png"))) == 2
    page = runner.invoke(main, ["report", url, "--out", str(tmp_path / "r.html"), "--sample", "1"])
    assert page.exit_code == 0, page.output
    assert "<html" in (tmp_path / "r.html").read_text()
    failures = runner.invoke(main, ["failures", url])
    assert failures.exit_code == 0 and "empty" in failures.output, failures.output
    missing = runner.invoke(main, ["stats", f"s3://{b}/nothing"])
    assert missing.exit_code != 0 and "manifest.json" in missing.output


def test_eval_reads_an_s3_dataset(s3, tmp_path: Path) -> None:
    from regionshards.report.evaluate import evaluate
    from test_report_eval import hand_dataset

    ds, ann = hand_dataset(tmp_path)
    b = bucket()
    upload(ds, f"s3://{b}/hand")
    local, remote = evaluate([ds], ann), evaluate([f"s3://{b}/hand"], ann)
    assert remote["datasets"][0] == {**local["datasets"][0], "dataset": f"s3://{b}/hand"}


def test_trainer_stream_reads_an_s3_dataset(s3, tiny_dataset: Path) -> None:
    pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")
    from regionshards.trainer.config import TrainConfig
    from regionshards.trainer.data import ShardStream, make_loader

    b = bucket()
    upload(tiny_dataset, f"s3://{b}/tiny")
    cfg = TrainConfig(image_size=32, batch_size=2, num_masks=4, shuffle_buffer=4, workers=0)
    local = next(iter(ShardStream(tiny_dataset, cfg, epochs=1)))
    remote = next(iter(ShardStream(f"s3://{b}/tiny", cfg, epochs=1)))
    assert remote["keys"] == local["keys"] and remote["view0"].shape == (2, 3, 32, 32)
    assert bool((remote["view0"] == local["view0"]).all())
    loader = make_loader(ShardStream(f"s3://{b}/tiny", cfg, epochs=1), 2)  # forkserver workers: each its own client
    same = make_loader(ShardStream(tiny_dataset, cfg, epochs=1), 2)  # the plan depends on the worker count
    assert [x["keys"] for x in loader] == [x["keys"] for x in same]


def test_train_command_reads_an_s3_dataset(s3, tiny_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")
    from click.testing import CliRunner

    from regionshards.cli.main import main

    b = bucket()
    upload(tiny_dataset, f"s3://{b}/tiny")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--method", "detcon-b", "--data", f"s3://{b}/tiny", "--out", str(run),
                                       "--backbone", "resnet18", "--image-size", "32", "--batch-size", "2",
                                       "--steps", "2", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    gone = CliRunner().invoke(main, ["train", "--method", "detcon-b", "--data", f"s3://{b}/none", "--out",
                                     str(tmp_path / "r2"), "--steps", "1"])
    assert gone.exit_code != 0 and f"s3://{b}/none" in gone.output


# --- the server goes away mid-build -------------------------------------------------------------------------


def test_server_dying_mid_build_is_a_clear_error_and_a_rerun_resumes(s3, tmp_path: Path) -> None:
    b = bucket()
    out_url = f"s3://{b}/ds"
    src = make_imagenet(tmp_path / "src")
    s3.die_after_puts(2, ".tar")  # the server goes away once two shards are stored
    broken = cli(*build_args(str(src), out_url, "--shard-size", "1", "--num-cpus", "1"))
    assert not s3.running
    assert broken.returncode == 3, broken.stdout + broken.stderr
    message = broken.stderr.strip().splitlines()[-1]
    assert "Error:" in message and out_url in message and "Traceback" not in broken.stderr, broken.stderr
    down = cli("verify", out_url)
    assert down.returncode == 1 and "Error:" in down.stderr and "Traceback" not in down.stderr, down.stderr
    s3.start()  # back, with what it had stored
    out = Store(out_url)
    assert "manifest.json" not in out.names() and "shard-000000.tar" in out.names()
    again = cli(*build_args(str(src), out_url, "--shard-size", "1", "--num-cpus", "1"))
    assert again.returncode == 0, again.stderr
    reused = int(re.search(r"\((\d+) reused after verification\)", again.stdout).group(1))
    assert 2 <= reused < 5, again.stdout  # what was stored before the outage is reused, the rest computed
    assert verify(out_url).ok
    shutil.rmtree(src)
