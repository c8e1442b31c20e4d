"""Training: runtime selection, LARS and schedules, EMA, the networks, the loss falling on a repeated batch, the
command-line contract (train / export / resume), exact resume, and a 2-process gloo run under torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

import torchvision  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from regionshards.cli.main import main  # noqa: E402
from regionshards.trainer.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint  # noqa: E402
from regionshards.trainer.config import TrainConfig, config_differences  # noqa: E402
from regionshards.trainer.data import ShardStream  # noqa: E402
from regionshards.trainer.lars import LARS, learning_rate, param_groups, peak_learning_rate  # noqa: E402
from regionshards.trainer.loop import build  # noqa: E402
from regionshards.trainer.methods.detcon_model import DetCon, DetConNet, grid_masks, mask_pool  # noqa: E402
from regionshards.trainer.networks import cosine_momentum  # noqa: E402
from regionshards.trainer.runtime import select_runtime, to_device  # noqa: E402
from test_trainer_data import make_dataset  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SMALL_HEADS = {"proj_hidden": 256, "pred_hidden": 256}


@pytest.fixture(scope="module")
def blocks_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three shards of 9, 5 and 7 samples, 64 x 80 images of coloured blocks with their segments."""
    return make_dataset(tmp_path_factory.mktemp("train") / "ds", [9, 5, 7], h=64, w=80)


# --- runtime, optimiser, schedules ------------------------------------------------------------------------


def test_cuda_runtime_is_nccl_bf16_channels_last_on_the_local_rank() -> None:
    rt = select_runtime(True, "auto", {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (rt.device, rt.backend, rt.amp_dtype, rt.channels_last) == (torch.device("cuda", 1), "nccl",
                                                                        torch.bfloat16, True)
    assert (rt.rank, rt.world_size, rt.distributed, rt.is_main) == (3, 4, True, False)
    cpu = select_runtime(True, "cpu", {})
    assert (cpu.device.type, cpu.backend, cpu.amp_dtype, cpu.channels_last) == ("cpu", "gloo", None, False)
    assert select_runtime(False, "auto", {}).backend == "gloo"
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_runtime(False, "cuda", {})
    with select_runtime(False, "auto", {}).autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_lars_update_by_hand() -> None:
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.1, "lars": True}, {"params": [b], "weight_decay": 0.0,
                                                                   "lars": False}], lr=0.5, momentum=0.9, eta=0.01)
    w.grad, b.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([2.0])
    opt.step()
    u = torch.tensor([[0.3, 1.4]])  # grad + wd * w
    u = u * 0.01 * 5.0 / torch.linalg.vector_norm(u)  # trust ratio eta * |w| / |u|
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.5 * u)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))
    w.grad, b.grad = torch.zeros(1, 2), torch.zeros(1)
    opt.step()  # momentum carries the previous step on
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.5 * 2.0 * 1.9]))


def test_biases_and_norms_are_excluded_from_decay_and_trust() -> None:
    groups = param_groups(DetConNet("resnet18", 32, 16, 32), 1.5e-6)
    assert groups[0]["lars"] and groups[0]["weight_decay"] == 1.5e-6 and all(p.ndim > 1 for p in groups[0]["params"])
    assert not groups[1]["lars"] and groups[1]["weight_decay"] == 0 and all(p.ndim == 1 for p in groups[1]["params"])


def test_learning_rate_warms_up_then_follows_a_cosine_and_momentum_rises() -> None:
    peak = peak_learning_rate(0.2, 4096)
    assert peak == pytest.approx(3.2)
    lrs = [learning_rate(s, 100, peak, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.32) and lrs[9] == pytest.approx(3.2) and lrs[10] == pytest.approx(3.2)
    assert lrs[55] == pytest.approx(1.6) and lrs[-1] < 0.002
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))
    assert cosine_momentum(0, 100, 0.996) == 0.996 and cosine_momentum(100, 100, 0.996) == 1.0
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert TrainConfig(steps=1000).resolved_warmup_steps == 10


def test_ema_moves_the_target_towards_the_online_network() -> None:
    method = DetCon(TrainConfig(backbone="resnet18", **SMALL_HEADS))
    assert method.target is not None and method.target.predictor is None
    before = method.target.projector[0].weight.clone()
    with torch.no_grad():
        method.online.projector[0].weight.add_(1.0)
    m = method.update_target(0, 10)
    assert m == 0.996
    assert torch.allclose(method.target.projector[0].weight, before + (1 - m) * 1.0, atol=1e-6)
    assert not any(p.requires_grad for p in method.target.parameters())
    assert DetCon(TrainConfig(method="detcon-s", backbone="resnet18", **SMALL_HEADS)).target is None


def test_trunk_and_mask_pooling() -> None:
    net = DetConNet("resnet18", 64, 16, 64).eval()
    x = torch.randn(2, 3, 64, 64)
    assert net.backbone(x).shape == (2, 512, 2, 2)
    grids = torch.tensor([[[1, 1], [2, 7]], [[4, 4], [4, 4]]])
    ids = torch.tensor([[1, 7, 1], [4, 4, 4]])
    masks = grid_masks(grids, ids)
    assert masks.tolist()[0] == [[1, 1, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0]]
    feats = torch.randn(2, 5, 2, 2)
    pooled = mask_pool(feats, masks)
    assert torch.allclose(pooled[0, 0], feats[0].flatten(1)[:, :2].mean(1))
    assert torch.allclose(pooled[1, 2], feats[1].flatten(1).mean(1))
    proj, pred = net(x, grids, ids)
    assert proj.shape == pred.shape == (2, 3, 16)
    assert set(net.backbone.state_dict()) == {k for k in torchvision.models.resnet18().state_dict()
                                              if not k.startswith("fc.")}


@pytest.mark.parametrize("method", ["detcon-b", "detcon-s"])
def test_loss_is_finite_and_falls_on_a_repeated_batch(blocks_ds: Path, method: str) -> None:
    # lr 1.0: with the zero-initialised residual branches the loss falls slowly in 12 steps at DetCon's 0.2
    cfg = TrainConfig(method=method, backbone="resnet18", image_size=64, batch_size=4, steps=12, workers=0,
                      base_lr=1.0, **SMALL_HEADS)
    runtime = select_runtime(False, "cpu", {})
    detcon, optimizer = build(cfg, runtime)
    moved = to_device(next(iter(ShardStream(blocks_ds, cfg))), runtime, cfg.mean, cfg.std)
    losses = []
    for step in range(12):
        for group in optimizer.param_groups:
            group["lr"] = peak_learning_rate(cfg.base_lr, cfg.batch_size)
        loss = detcon.loss(moved)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        detcon.update_target(step, cfg.steps)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.95 * losses[0] and sum(losses[-3:]) < sum(losses[:3])


# --- the command line -------------------------------------------------------------------------------------


def train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--method", "detcon-b", "--data", str(data), "--out", str(run), "--backbone", "resnet18",
            "--image-size", "64", "--batch-size", "8", *extra]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_and_export_contract(blocks_ds: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(main, train_args(blocks_ds, run, "--steps", "20", "--workers", "0",
                                                  "--checkpoint-every", "10"))
    assert result.exit_code == 0, result.output
    rows = metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert all({"step", "loss", "lr", "img_per_s"} <= set(r) for r in rows)
    assert all(r["img_per_s"] > 0 and r["loss"] == r["loss"] for r in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "detcon-b" and config["num_masks"] == 16 and config["temperature"] == 0.1
    assert config["views"][0]["blur_p"] == 1.0 and config["views"][1]["solarize_p"] == 0.2
    assert config["run"]["world_size"] == 1 and config["run"]["batches_per_epoch"] == 2
    assert [s for s, _ in list_checkpoints(run)] == [10, 20]
    assert load_checkpoint(run / "checkpoint-00000020.pt")["step"] == 20

    weights = tmp_path / "weights.pt"
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(weights)])
    assert result.exit_code == 0, result.output
    state = torch.load(weights, weights_only=True)
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(state, strict=True)
    trained = load_checkpoint(run / "checkpoint-00000020.pt")["model"]["online.backbone.layer4.1.conv2.weight"]
    assert torch.equal(model.layer4[1].conv2.weight, trained)

    again = CliRunner().invoke(main, train_args(blocks_ds, run, "--steps", "20", "--workers", "0"))
    assert again.exit_code == 2 and "already holds a run" in again.output
    other = CliRunner().invoke(main, train_args(blocks_ds, run, "--steps", "20", "--workers", "0", "--num-masks",
                                                "8", "--resume"))
    assert other.exit_code == 2 and "num_masks" in other.output


def test_export_of_a_resnet50_run_loads_strictly(tmp_path: Path) -> None:
    cfg = TrainConfig(backbone="resnet50", **SMALL_HEADS)
    torch.manual_seed(3)
    method = DetCon(cfg)
    save_checkpoint(tmp_path, 7, {"model": method.state_dict(), "optimizer": {}, "config": cfg.to_dict()}, keep=2)
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--out", str(tmp_path / "r50.pt"), "--which", "target"])
    assert result.exit_code == 0, result.output
    assert "resnet50 (target network, step 7)" in result.output
    model = torchvision.models.resnet50(weights=None)
    model.load_state_dict(torch.load(tmp_path / "r50.pt", weights_only=True), strict=True)
    assert torch.equal(model.conv1.weight, method.target.backbone.conv1.weight)
    empty = CliRunner().invoke(main, ["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.pt")])
    assert empty.exit_code != 0


def test_stopping_and_resuming_matches_an_uninterrupted_run(blocks_ds: Path, tmp_path: Path) -> None:
    cfg_file = tmp_path / "heads.json"
    cfg_file.write_text(json.dumps(SMALL_HEADS))
    common = ["--steps", "6", "--workers", "2", "--log-every", "1", "--checkpoint-every", "100",
              "--config", str(cfg_file)]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert CliRunner().invoke(main, train_args(blocks_ds, whole, *common)).exit_code == 0
    # 21 samples, batch 8: two batches per epoch, so step 3 stops in the middle of epoch 1
    first = CliRunner().invoke(main, train_args(blocks_ds, parts, *common, "--stop-at", "3"))
    assert first.exit_code == 0, first.output
    assert [s for s, _ in list_checkpoints(parts)] == [3] and len(metrics(parts)) == 3
    second = CliRunner().invoke(main, train_args(blocks_ds, parts, *common, "--resume"))
    assert second.exit_code == 0, second.output
    a, b = metrics(whole), metrics(parts)
    assert [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b, strict=True):
        assert abs(x["loss"] - y["loss"]) < 1e-6 and x["lr"] == y["lr"] and x["epoch"] == y["epoch"]


def test_detcon_s_from_the_command_line(blocks_ds: Path, tmp_path: Path) -> None:
    run = tmp_path / "s"
    args = train_args(blocks_ds, run, "--steps", "2", "--workers", "0")
    args[args.index("detcon-b")] = "detcon-s"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "ema" not in metrics(run)[0] and "predictor" not in str(load_checkpoint(
        list_checkpoints(run)[-1][1])["model"].keys())


def test_the_cli_imports_no_torch() -> None:
    code = "import sys, regionshards.cli.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_config_differences_ignore_runtime_fields() -> None:
    a, b = TrainConfig(steps=5).to_dict(), TrainConfig(steps=5, log_every=3, out="x", seed=2).to_dict()
    assert config_differences(a, b) == ["seed"]
    assert TrainConfig.from_dict(a) == TrainConfig(steps=5)
    with pytest.raises(ValueError, match="unknown config"):
        TrainConfig.from_dict({"stepz": 1})


# --- two processes ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_under_torchrun(blocks_ds: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    (tmp_path / "heads.json").write_text(json.dumps(SMALL_HEADS))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "regionshards", *train_args(blocks_ds, run, "--steps", "3", "--workers", "1", "--log-every", "1",
                                             "--config", str(tmp_path / "heads.json"))]
    cmd[cmd.index("8")] = "4"  # batch 4 per process: 21 samples in 3 shards, 2 ranks -> 10 each, 2 batches per epoch
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and [r["epoch"] for r in rows] == [0, 0, 1]
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["world_size"] == 2 and config["run"]["global_batch"] == 8
    assert "2 x cpu" in done.stderr
