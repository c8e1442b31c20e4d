"""A trainer that fails politely: one ``Error:`` line and exit 2 for every refusal (once under torchrun),
loader workers from the cores, ``--resume --extend``, and DetCo's DDP gradient layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from click.testing import CliRunner  # noqa: E402

from regionshards.cli.main import main  # noqa: E402
from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.lars import learning_rate  # noqa: E402
from regionshards.trainer.preflight import PreflightError, default_workers, extension, largest_batch  # noqa: E402
from regionshards.trainer.runtime import select_runtime, to_device  # noqa: E402
from test_trainer_data import make_dataset  # noqa: E402
from test_trainer_train import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL_HEADS = {"proj_hidden": 64, "pred_hidden": 64}


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards of 4 and 3 samples (7 in all), 64 x 80 block images with their segments."""
    return make_dataset(tmp_path_factory.mktemp("polite") / "ds", [4, 3], h=64, w=80)


@pytest.fixture
def heads(tmp_path: Path) -> Path:
    path = tmp_path / "heads.json"
    path.write_text(json.dumps(SMALL_HEADS))
    return path


def args(data: Path, run: Path, heads: Path, *extra: str, method: str = "detcon-b", workers: bool = True
         ) -> list[str]:
    return ["train", "--method", method, "--data", str(data), "--out", str(run), "--backbone", "resnet18",
            "--image-size", "64", *(["--workers", "0"] if workers else []), "--config", str(heads),
            "--log-every", "1", *extra]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_default_workers_follow_the_cores_per_rank() -> None:
    assert default_workers({}, cores=2) == 1  # one core trains, one loads
    assert default_workers({"LOCAL_WORLD_SIZE": "2"}, cores=2) == 0  # a core per rank: load in the rank
    assert default_workers({"LOCAL_WORLD_SIZE": "2"}, cores=16) == 7
    assert default_workers({}, cores=64) == 8  # capped
    assert default_workers({}) == max(0, min(8, len(os.sched_getaffinity(0)) - 1))
    assert largest_batch(7, 1) == 7 and largest_batch(7, 2) == 3 and largest_batch(1, 2) == 0


def test_refusals_are_one_error_line_and_exit_2(ds: Path, tmp_path: Path, heads: Path) -> None:
    runner = CliRunner()
    big = runner.invoke(main, args(ds, tmp_path / "a", heads, "--batch-size", "64", "--steps", "2"))
    assert big.exit_code == 2 and error_lines(big.output) == [
        f"Error: {ds} holds 7 samples: a batch of 64 per rank on 1 rank needs 64; use --batch-size 7 or less"]
    assert not (tmp_path / "a").exists()
    lacking = runner.invoke(main, args(ds, tmp_path / "b", heads, "--batch-size", "2", "--steps", "2",
                                       method="soco"))
    assert lacking.exit_code == 2 and len(error_lines(lacking.output)) == 1
    assert "--proposals none: soco needs proposals" in lacking.output
    bad = runner.invoke(main, args(ds, tmp_path / "c", heads, "--batch-size", "0", "--steps", "2"))
    assert bad.exit_code == 2 and error_lines(bad.output) == ["Error: batch_size must be >= 1, got 0"]
    # the default --workers of a fresh run, recorded in config.json
    ok = runner.invoke(main, args(ds, tmp_path / "d", heads, "--batch-size", "2", "--steps", "1", workers=False))
    assert ok.exit_code == 0, ok.output
    saved = json.loads((tmp_path / "d" / "config.json").read_text())
    assert saved["workers"] == default_workers()
    mismatch = runner.invoke(main, args(ds, tmp_path / "d", heads, "--batch-size", "3", "--steps", "1", "--resume",
                                        workers=False))
    assert mismatch.exit_code == 2 and len(error_lines(mismatch.output)) == 1 and "batch_size" in mismatch.output


def test_resume_extend_continues_a_finished_run_on_the_new_schedule(ds: Path, tmp_path: Path, heads: Path) -> None:
    run = tmp_path / "run"
    runner = CliRunner()
    first = runner.invoke(main, args(ds, run, heads, "--batch-size", "2", "--steps", "3", "--warmup-steps", "1"))
    assert first.exit_code == 0, first.output
    refused = runner.invoke(main, args(ds, run, heads, "--batch-size", "2", "--steps", "5", "--warmup-steps", "1",
                                       "--resume"))
    assert refused.exit_code == 2 and "pass --extend" in refused.output
    short = runner.invoke(main, args(ds, run, heads, "--batch-size", "2", "--steps", "3", "--resume", "--extend"))
    assert short.exit_code == 2 and "not beyond the 3 steps" in short.output
    alone = runner.invoke(main, args(ds, run, heads, "--batch-size", "2", "--steps", "5", "--extend"))
    assert alone.exit_code == 2 and "--resume" in alone.output
    more = runner.invoke(main, args(ds, run, heads, "--batch-size", "2", "--steps", "5", "--resume", "--extend"))
    assert more.exit_code == 0, more.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 5 and saved["warmup_steps"] == 1
    assert saved["run"]["extensions"] == [{"at_step": 3, "from_steps": 3, "to_steps": 5}]
    peak = saved["run"]["peak_lr"]
    # steps 1-3 on the 3-step cosine, 4-5 on the 5-step one
    assert [r["lr"] for r in rows[:3]] == pytest.approx([learning_rate(t, 3, peak, 1) for t in range(3)])
    assert [r["lr"] for r in rows[3:]] == pytest.approx([learning_rate(t, 5, peak, 1) for t in (3, 4)])
    assert rows[3]["ema"] < rows[2]["ema"] or rows[2]["ema"] == 1.0
    # the extended config is now the run's: a plain resume with the new --steps continues it (its warmup kept)
    again = runner.invoke(main, args(ds, run, heads, "--batch-size", "2", "--steps", "5", "--resume"))
    assert again.exit_code == 0, again.output


def test_extension_rule() -> None:
    saved = {"steps": 10, "warmup_steps": None, "run": {"warmup_steps": 3}}
    assert extension(saved, 20, 10) == {"steps": 20, "warmup_steps": 3}
    with pytest.raises(PreflightError, match="not beyond"):
        extension(saved, 8, 10)


def test_detco_patches_reach_the_network_contiguous() -> None:
    cfg = TrainConfig(method="detco")
    runtime = select_runtime(False, "cpu", env={})
    views = torch.zeros(2, 4, 6, 6, 3, dtype=torch.uint8).permute(0, 1, 4, 2, 3)
    patches = torch.zeros(2, 4, 9, 8, 8, 3, dtype=torch.uint8).permute(0, 1, 2, 5, 3, 4)
    out = to_device({"view0": views[0], "local0": patches[0]}, runtime, cfg.mean, cfg.std)
    assert out["view0"].is_contiguous() and out["local0"].is_contiguous()
    assert out["local0"].flatten(0, 1).is_contiguous()


def torchrun(cmd: list[str], warnings: str | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("torchrun")
    full = [str(exe), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "regionshards", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    if warnings:
        env["PYTHONWARNINGS"] = warnings
    return subprocess.run(full, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_a_refusal_under_torchrun_is_printed_once(ds: Path, tmp_path: Path, heads: Path) -> None:
    done = torchrun(args(ds, tmp_path / "r", heads, "--batch-size", "4", "--steps", "1"))
    assert done.returncode != 0
    ours = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error:")]
    assert ours == [f"Error: {ds} holds 7 samples: a batch of 4 per rank on 2 ranks needs 8; use --batch-size 3 "
                    "or less"], done.stderr[-2000:]
    # no rank prints a traceback; the one traceback is torchrun's own report (ChildFailedError), whose root
    # cause is rank 0's refusal
    assert (done.stdout + done.stderr).count("Traceback") == 1
    assert "bin/torchrun" in done.stderr.split("Traceback")[1].splitlines()[1]
    root = done.stderr.split("Root Cause")[1]
    assert "rank      : 0 (local_rank: 0)" in root and "exitcode  : 2" in root


def test_detco_under_ddp_hands_dense_gradients(ds: Path, tmp_path: Path) -> None:
    """No 'Grad strides do not match bucket view strides' (made an error here) in a 2-process gloo run."""
    cfg = tmp_path / "detco.json"
    cfg.write_text(json.dumps({"detco": {"queue_size": 16, "dim": 8}}))
    done = torchrun(args(ds, tmp_path / "d", cfg, "--batch-size", "2", "--steps", "2", method="detco"),
                    warnings="error:Grad strides do not match bucket view strides")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Grad strides" not in done.stderr
