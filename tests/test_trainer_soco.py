"""SoCo / SoCo*: views and boxes from real shards (boxes land on their image pixels, through DCT-scaled decoding
too), the whole-image fallback, RoIs pooled only at their assigned FPN level, the loss against a hand-computed
case and against its definition, the EMA target, and the loss falling on a repeated batch."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

from regionshards.cli.main import main  # noqa: E402
from regionshards.proposals import apply_filter  # noqa: E402
from regionshards.shards import (  # noqa: E402
    FilterKeep,
    InputRecord,
    ProposalsData,
    Source,
    config_hash,
    iter_shard,
    write_manifest,
    write_shard,
)
from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.lars import LARS, param_groups  # noqa: E402
from regionshards.trainer.methods.soco_boxes import NO_ID, assign_levels  # noqa: E402
from regionshards.trainer.methods.soco_model import SoCo, SoCoNet, box_byol_loss  # noqa: E402
from regionshards.trainer.methods.soco_views import make_batch as make_soco_batch  # noqa: E402
from regionshards.trainer.transforms import normalize  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
FILTER = "ratio3size0308"
PROPOSALS_CONFIG = {"segments": None, "proposals": {"method": "selective_search", "params": {}}, "filters": [FILTER]}
SMALL_HEADS = {"proj_hidden": 64, "pred_hidden": 64}
# three disjoint boxes that pass ratio3size0308 in a 96 x 128 image, and one tiny one that does not
BOXES = np.array([[4, 4, 40, 40], [60, 10, 50, 36], [20, 52, 60, 40], [100, 70, 6, 6]], np.float32)
COLOURS = np.array([[250, 40, 40], [40, 250, 40], [40, 40, 250], [250, 250, 40]], np.uint8)


def proposal_record(key: str, image: np.ndarray, boxes: np.ndarray, fmt: str = "PNG") -> InputRecord:
    """A record with the image and ``boxes`` ([x, y, w, h]) as proposals, the filter's keep list recorded."""
    h, w = image.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    keep, used = apply_filter(boxes, (h, w), FILTER)
    n = len(boxes)
    props = ProposalsData("selective_search", {}, boxes, np.full(n, -1), np.full(n, -1),
                          {FILTER: FilterKeep(used, np.flatnonzero(keep).astype(np.int64))})
    return InputRecord(key=key, source=Source(f"{key}.{fmt.lower()}"), image=buf.getvalue(), image_format=fmt,
                       image_mode="RGB", width=w, height=h, proposals=props)


def painted(h: int, w: int, boxes: np.ndarray, scale: int = 1) -> np.ndarray:
    """(h, w, 3) uint8 black image with box i painted in ``COLOURS[i]`` (boxes in units of ``scale`` pixels)."""
    image = np.zeros((h, w, 3), np.uint8)
    for (x, y, bw, bh), colour in zip((boxes * scale).astype(int), COLOURS, strict=False):
        image[y : y + bh, x : x + bw] = colour
    return image


def make_proposals_dataset(out: Path, sizes: list[int], h: int = 96, w: int = 128) -> Path:
    """Shards of noisy painted images with proposals; every 5th sample keeps nothing (→ whole-image)."""
    out.mkdir(parents=True)
    digest = config_hash(PROPOSALS_CONFIG)
    infos = []
    for s, n in enumerate(sizes):
        records = []
        for i in range(n):
            rng = np.random.default_rng(s * 100 + i)
            image = np.clip(painted(h, w, BOXES).astype(int) + rng.integers(-30, 30, (h, w, 3)), 0, 255)
            boxes = BOXES[3:] if i % 5 == 4 else BOXES
            records.append(proposal_record(f"s{s}_{i:03d}", image.astype(np.uint8), boxes))
        infos.append(write_shard(out, s, records, config_hash=digest))
    write_manifest(out, PROPOSALS_CONFIG, infos)
    return out


def soco_cfg(method: str = "soco", **kw) -> TrainConfig:
    base = dict(method=method, backbone="resnet18", image_size=64, batch_size=4, workers=0, **SMALL_HEADS)
    base.update(kw)
    return TrainConfig(**base)


def samples_of(ds: Path) -> list[dict]:
    return [s for shard in sorted(ds.glob("*.tar")) for s in iter_shard(str(shard), parse_json=False)]


@pytest.fixture(scope="module")
def soco_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_proposals_dataset(tmp_path_factory.mktemp("soco") / "ds", [6, 5])


# --- views and boxes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["soco", "soco-star"])
def test_batch_layout(soco_ds: Path, method: str) -> None:
    cfg = soco_cfg(method)
    batch = make_soco_batch(samples_of(soco_ds)[:4], cfg, np.random.default_rng(0))
    sizes = [64, 64, 32] if method == "soco" else [64, 64, 55, 32]
    pairs = len(sizes) - 1
    for v, s in enumerate(sizes):
        assert batch[f"view{v}"].shape == (4, 3, s, s) and batch[f"view{v}"].dtype == torch.uint8
    assert batch["boxes"].shape == (pairs, 2, 4, 4, 4) and batch["levels"].shape == (pairs, 2, 4, 4)
    assert batch["box_ids"].shape == (pairs, 2, 4, 4)
    for p in range(pairs):
        for side, v in enumerate((0, p + 1)):
            b = batch["boxes"][p, side].numpy()
            assert np.all(b >= 0) and np.all(b <= sizes[v] + 1e-4)
            assert np.all(b[..., 2] > b[..., 0]) and np.all(b[..., 3] > b[..., 1])
            levels = assign_levels(b.reshape(-1, 4).astype(np.float64), cfg.soco.level_thresholds)
            assert np.array_equal(batch["levels"][p, side].reshape(-1).numpy(), levels)
    assert set(batch["box_ids"].unique().tolist()) <= {0, 1, 2, NO_ID}
    if method == "soco-star":  # V4 is V2 resized to half: same boxes (V1 side too), half the size
        assert torch.equal(batch["boxes"][2, 0], batch["boxes"][0, 0])
        assert torch.equal(batch["box_ids"][2], batch["box_ids"][0])
        half = batch["boxes"][2, 1][..., 2:] - batch["boxes"][2, 1][..., :2]
        full = batch["boxes"][0, 1][..., 2:] - batch["boxes"][0, 1][..., :2]
        assert torch.allclose(half, full * 32 / 64, atol=1e-4)
    again = make_soco_batch(samples_of(soco_ds)[:4], cfg, np.random.default_rng(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)


@pytest.mark.parametrize(("fmt", "scale"), [("PNG", 1), ("JPEG", 6)])
def test_view_boxes_land_on_their_painted_pixels(tmp_path: Path, fmt: str, scale: int) -> None:
    """Each proposal is painted in its own colour: every view pixel whose centre is 2+ px inside a view box has
    that colour, through crop, flip, resize and (for the large JPEG) DCT-scaled decoding."""
    h, w = 96 * scale, 128 * scale
    out = tmp_path / "ds"
    out.mkdir()
    digest = config_hash(PROPOSALS_CONFIG)
    record = proposal_record("p", painted(h, w, BOXES, scale), BOXES * scale, fmt)
    write_manifest(out, PROPOSALS_CONFIG, [write_shard(out, 0, [record], config_hash=digest)])
    for method in ("soco", "soco-star"):
        cfg = soco_cfg(method, colour=False, batch_size=1)
        cfg.soco.jitter_p = 0.0  # jittered V1 boxes would not sit on their painted pixels
        checked = 0
        for seed in range(6):
            batch = make_soco_batch(samples_of(out), cfg, np.random.default_rng(seed))
            for p in range(batch["boxes"].shape[0]):
                for side, v in enumerate((0, p + 1)):
                    view = batch[f"view{v}"][0].permute(1, 2, 0).numpy().astype(int)
                    size = view.shape[0]
                    centres = np.arange(size) + 0.5
                    for box, pid in zip(batch["boxes"][p, side, 0].numpy(), batch["box_ids"][p, side, 0].numpy(),
                                        strict=True):
                        xs = (centres > box[0] + 2) & (centres < box[2] - 2)
                        ys = (centres > box[1] + 2) & (centres < box[3] - 2)
                        inner = view[np.ix_(ys, xs)].reshape(-1, 3)
                        assert len(inner) == 0 or np.abs(inner - COLOURS[pid]).max() <= 40, (method, seed, p, v)
                        checked += len(inner)
        assert checked > 5000


def test_whole_image_fallback(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    record = proposal_record("tiny", painted(96, 128, BOXES), BOXES[3:])  # nothing passes: whole image
    write_manifest(out, PROPOSALS_CONFIG, [write_shard(out, 0, [record], config_hash=config_hash(PROPOSALS_CONFIG))])
    sample = samples_of(out)
    assert b'"used":"whole-image"' in sample[0]["json"]
    batch = make_soco_batch(sample, soco_cfg(batch_size=1), np.random.default_rng(0))
    assert batch["box_ids"].unique().tolist() == [NO_ID]
    # V2's and V3's box is the whole view (the whole image clipped to the crop)
    assert torch.equal(batch["boxes"][0, 1, 0], torch.tensor([[0.0, 0, 64, 64]] * 4))
    assert torch.equal(batch["boxes"][1, 1, 0], torch.tensor([[0.0, 0, 32, 32]] * 4))
    cfg = soco_cfg(batch_size=1)
    cfg.soco.proposal_filter = "ratio3"
    with pytest.raises(ValueError, match="no proposal filter 'ratio3'"):
        make_soco_batch(sample, cfg, np.random.default_rng(0))


# --- networks and loss --------------------------------------------------------------------------------------


def test_box_byol_loss_by_hand() -> None:
    pred = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [3.0, 0.0]]])
    target = torch.tensor([[[2.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    ids = torch.tensor([[5, 6], [7, 7]])
    # image 0: pairs (0, 0) cos 1 and (1, 1) cos 1/sqrt2 → (0 + (2 - sqrt2)) / 2
    # image 1: ids 7, 7 match all four: cos (1/sqrt2, 1/sqrt2, 0, 1) → (2 (2 - sqrt2) + 2 + 0) / 4
    r2 = 2**0.5
    want = ((2 - r2) / 2 + (2 * (2 - r2) + 2) / 4) / 2
    assert box_byol_loss(pred, target, ids, ids).item() == pytest.approx(want, abs=1e-6)
    # no match in an image contributes 0
    assert box_byol_loss(pred[:1], target[:1], ids[:1], torch.tensor([[1, 2]])).item() == 0.0


def fake_batch(pairs: int = 2, n: int = 2, k: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sizes = [64, 64, 32, 32][: pairs + 1]
    batch = {f"view{v}": torch.randn(n, 3, s, s, generator=g) for v, s in enumerate(sizes)}
    boxes = torch.empty(pairs, 2, n, k, 4)
    for p in range(pairs):
        for side, v in enumerate((0, p + 1)):
            s = sizes[v]
            xy = torch.rand(n, k, 2, generator=g) * s / 2
            boxes[p, side] = torch.cat([xy, xy + 4 + torch.rand(n, k, 2, generator=g) * s / 2], -1)
    batch["boxes"] = boxes
    batch["levels"] = torch.randint(0, 4, (pairs, 2, n, k), generator=g)
    batch["box_ids"] = torch.randint(0, 2, (pairs, n, k), generator=g)
    return batch


def test_rois_are_pooled_only_at_their_assigned_level() -> None:
    torch.manual_seed(0)
    net = SoCoNet("resnet18", 16, 7, -1, 32, 32, 8, None).eval()  # BN on running stats: views pool alike
    batch = fake_batch()
    views, boxes, levels = SoCo.network_inputs(batch)
    pooled = net.pool(views, boxes, levels)
    assert pooled.shape == (2 * 6 + 2 * 3 + 2 * 3, 16, 7, 7)
    row = 0
    for v, x in enumerate(views):
        feats = net.pyramid(x)
        for i in range(x.shape[0]):
            for j in range(boxes[v].shape[1]):
                level = int(levels[v][i, j])
                roi = torch.cat([torch.tensor([float(i)]), boxes[v][i, j]])[None]
                want = roi_align(feats[level], roi, 7, spatial_scale=1 / 2 ** (level + 2), aligned=True)
                assert torch.allclose(pooled[row], want[0], atol=1e-5), (v, i, j)
                row += 1


def test_loss_is_the_symmetrised_sum_over_pairs_and_the_target_follows_by_ema() -> None:
    torch.manual_seed(0)
    cfg = soco_cfg("soco-star")
    method = SoCo(cfg)
    assert method.target.predictor is None
    batch = fake_batch(pairs=3)
    loss = method.loss(batch)
    views, boxes, levels = method.network_inputs(batch)
    with torch.no_grad():
        _, pred = method.online(views, boxes, levels)
        target, _ = method.target(views, boxes, levels)
    ids, k = batch["box_ids"], 3
    want = sum(box_byol_loss(pred[0][:, p * k : (p + 1) * k], target[p + 1], ids[p], ids[p])
               + box_byol_loss(pred[p + 1], target[0][:, p * k : (p + 1) * k], ids[p], ids[p]) for p in range(3))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    before = method.target.head[5].weight.clone()
    with torch.no_grad():
        method.online.head[5].weight.add_(1.0)
    assert method.update_target(0, 10) == pytest.approx(0.99)
    assert torch.allclose(method.target.head[5].weight, before + 0.01, atol=1e-6)
    assert not any(p.requires_grad for p in method.target.parameters())


def test_every_online_parameter_gets_a_gradient_when_levels_are_empty() -> None:
    """Boxes only at P2: the other levels' FPN outputs stay in the graph with zero gradient (DDP needs every
    parameter to receive one each step)."""
    torch.manual_seed(0)
    method = SoCo(soco_cfg())
    batch = fake_batch()
    batch["levels"].zero_()
    method.loss(batch).backward()
    missing = [n for n, p in method.online.named_parameters() if p.grad is None]
    assert not missing
    assert float(method.online.fpn.layer_blocks[3][0].weight.grad.abs().sum()) == 0.0


def test_loss_falls_on_a_repeated_batch(soco_ds: Path) -> None:
    cfg = soco_cfg()
    torch.manual_seed(0)
    method = SoCo(cfg)
    batch = make_soco_batch(samples_of(soco_ds)[:4], cfg, np.random.default_rng(1))
    images = {k: normalize(v, cfg.mean, cfg.std) for k, v in batch.items() if k.startswith("view")}
    opt = LARS(param_groups(method.online, 1e-5), lr=0.5, momentum=0.9)
    losses = []
    for step in range(6):
        loss = method.loss({**batch, **images})
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.update_target(step, 6)
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


# --- export -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fpn_norm", [True, False])
def test_export_lands_every_tensor_in_torchvision_maskrcnn(tmp_path: Path, fpn_norm: bool) -> None:
    """SoCo's FPN with BatchNorm lands in the v2 detector (whose FPN has BatchNorm); a run saved before the FPN
    had BatchNorm (``fpn_norm`` false) in the v1 detector."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2

    from regionshards.trainer.checkpoint import save_checkpoint
    from regionshards.trainer.exports import export_weights

    cfg = soco_cfg(backbone="resnet50", soco={"fpn_norm": fpn_norm})
    torch.manual_seed(0)
    method = SoCo(cfg)
    save_checkpoint(tmp_path, 3, {"model": method.state_dict(), "optimizer": {}, "config": cfg.to_dict()}, keep=2)
    fmt = "maskrcnn_resnet50_fpn_v2" if fpn_norm else "maskrcnn_resnet50_fpn"
    info = export_weights(tmp_path, tmp_path / "det.pt", fmt, head=fpn_norm)  # v1's box head is the 2-fc kind
    assert info["step"] == 3 and ("head" in info["parts"]) == fpn_norm
    state = torch.load(tmp_path / "det.pt", weights_only=True)
    build = maskrcnn_resnet50_fpn_v2 if fpn_norm else maskrcnn_resnet50_fpn
    det = build(weights=None, weights_backbone=None).state_dict()
    v2 = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()
    body_fpn = {k: v for k, v in state.items() if not k.startswith("roi_heads.")}
    head = {k: v for k, v in state.items() if k.startswith("roi_heads.")}
    assert all(k in det and det[k].shape == v.shape for k, v in body_fpn.items())
    # every backbone and FPN tensor of the detector is covered
    assert {k for k in det if k.startswith("backbone.")} == set(body_fpn)
    assert any(".inner_blocks.0.1.running_var" in k for k in body_fpn) == fpn_norm
    if fpn_norm:
        assert head and all(k in v2 and v2[k].shape == v.shape for k, v in head.items())
        assert {k for k in v2 if k.startswith("roi_heads.box_head.")} == set(head)
    else:
        assert not head
    detector = build(weights=None, weights_backbone=None)
    result = detector.load_state_dict(body_fpn, strict=False)
    assert not result.unexpected_keys and not set(result.missing_keys) & set(body_fpn)
    assert torch.equal(detector.backbone.body.layer3[2].conv2.weight, method.online.backbone.layer3[2].conv2.weight)
    assert torch.equal(detector.backbone.fpn.layer_blocks[1][0].weight, method.online.fpn.layer_blocks[1][0].weight)


# --- the command line: train, resume, export, two gloo processes ----------------------------------------------


def soco_args(data: Path, run: Path, method: str, *extra: str) -> list[str]:
    return ["train", "--method", method, "--data", str(data), "--out", str(run), "--backbone", "resnet18",
            "--image-size", "64", "--batch-size", "4", *extra]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_resume_and_export_contract(soco_ds: Path, tmp_path: Path) -> None:
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps(SMALL_HEADS))
    common = ["--steps", "4", "--workers", "0", "--log-every", "1", "--config", str(heads)]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    result = CliRunner().invoke(main, soco_args(soco_ds, whole, "soco", *common))
    assert result.exit_code == 0, result.output
    rows = metrics(whole)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
    assert rows[0]["ema"] == pytest.approx(0.99) and all(r["img_per_s"] > 0 for r in rows)
    config = json.loads((whole / "config.json").read_text())
    assert config["method"] == "soco" and config["base_lr"] == 1.0 and config["weight_decay"] == 1e-5
    assert config["soco"]["proposal_filter"] == FILTER and config["soco"]["level_thresholds"] == [48, 96, 192, 224]
    assert config["run"]["warmup_steps"] == 4  # 10 warmup epochs of 2 batches, capped at --steps
    # stopped after step 2 (a checkpoint), resumed: the same losses as the uninterrupted run
    first = CliRunner().invoke(main, soco_args(soco_ds, parts, "soco", *common, "--stop-at", "2"))
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, soco_args(soco_ds, parts, "soco", *common, "--resume"))
    assert second.exit_code == 0, second.output
    for a, b in zip(rows, metrics(parts), strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["lr"] == b["lr"]
    det = tmp_path / "det.pt"
    result = CliRunner().invoke(main, ["export", str(whole), "--out", str(det), "--format", "detectron2", "--head"])
    assert result.exit_code == 0, result.output
    assert "detectron2 R-18-FPN (backbone + fpn + head, " in result.output
    state = torch.load(det, weights_only=True)["model"]
    assert "backbone.fpn_output5.weight" in state and "roi_heads.box_head.fc1.weight" in state
    plain = CliRunner().invoke(main, ["export", str(whole), "--out", str(tmp_path / "r18.pt")])
    assert plain.exit_code == 0, plain.output  # the ResNet alone, as torchvision's resnet18
    import torchvision

    torchvision.models.resnet18(weights=None).load_state_dict(torch.load(tmp_path / "r18.pt", weights_only=True))
    wrong = CliRunner().invoke(main, soco_args(soco_ds, tmp_path / "f", "soco", *common, "--proposal-filter", "none"))
    assert wrong.exit_code == 2 and "not 'none'" in wrong.output  # refused up front, naming the dataset


def test_a_run_saved_before_the_fpn_had_batchnorm_resumes_as_it_was(soco_ds: Path, tmp_path: Path) -> None:
    """A SoCo run whose config.json predates ``soco.fpn_norm`` and ``zero_init_residual`` (its FPN convs have
    biases and no BatchNorm) resumes with that network, from the same command line."""
    run = tmp_path / "old"
    old_cfg = tmp_path / "old.json"
    old_cfg.write_text(json.dumps({**SMALL_HEADS, "soco": {"fpn_norm": False}, "zero_init_residual": False}))
    common = ["--steps", "3", "--workers", "0", "--log-every", "1"]
    first = CliRunner().invoke(main, soco_args(soco_ds, run, "soco", *common, "--config", str(old_cfg),
                                               "--stop-at", "2"))
    assert first.exit_code == 0, first.output
    saved = json.loads((run / "config.json").read_text())
    del saved["soco"]["fpn_norm"], saved["zero_init_residual"]  # as an older trainer wrote it
    (run / "config.json").write_text(json.dumps(saved))
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps(SMALL_HEADS))
    second = CliRunner().invoke(main, soco_args(soco_ds, run, "soco", *common, "--config", str(heads), "--resume"))
    assert second.exit_code == 0, second.output
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    from regionshards.trainer.checkpoint import load_checkpoint

    model = load_checkpoint(run / "checkpoint-00000003.pt")["model"]
    assert "online.fpn.inner_blocks.0.0.bias" in model and "online.fpn.inner_blocks.0.1.weight" not in model


def test_config_objects_round_trip_and_older_runs_still_resume() -> None:
    from regionshards.trainer.config import adopt_legacy, config_differences

    cfg = soco_cfg("soco-star", soco={"proposal_filter": "ratio3", "level_thresholds": [32, 64, 128, 256]})
    assert cfg.soco.level_thresholds == (32, 64, 128, 256) and cfg.soco.view_sizes(64, True) == (64, 64, 55, 32)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.soco.proposal_filter == "ratio3"
    assert config_differences(cfg.to_dict(), again.to_dict()) == []
    with pytest.raises(ValueError, match="unknown SoCoConfig"):
        TrainConfig.from_dict({"soco": {"filter": "x"}})
    with pytest.raises(ValueError, match="level_thresholds"):
        soco_cfg(soco={"level_thresholds": [1, 2]}, steps=1).validate()
    # a DetCon run saved before the soco / detco / warmup_epochs fields existed resumes unchanged
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("soco", "detco", "warmup_epochs")}
    current = TrainConfig()
    # settings added since: the run keeps the values it was trained with
    assert adopt_legacy(current, old) == ["soco.fpn_norm", "soco.max_tries", "soco.pad_independently"]
    assert config_differences(old, current.to_dict()) == []
    legacy_soco = {"fpn_norm": False, "max_tries": 1, "pad_independently": False}
    assert config_differences(old, TrainConfig(detco={"queue_size": 8}, soco=legacy_soco).to_dict()) == ["detco"]


@pytest.mark.parametrize("method", ["soco", "soco-star"])
def test_two_gloo_processes_under_torchrun(soco_ds: Path, tmp_path: Path, method: str) -> None:
    run = tmp_path / "ddp"
    (tmp_path / "heads.json").write_text(json.dumps(SMALL_HEADS))
    args = soco_args(soco_ds, run, method, "--steps", "2", "--workers", "0", "--log-every", "1", "--config",
                     str(tmp_path / "heads.json"))
    args[args.index("--batch-size") + 1] = "2"  # 11 samples, 2 ranks: 5 each, 2 batches of 2 per epoch
    done = torchrun(args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["world_size"] == 2 and config["run"]["global_batch"] == 4 and "2 x cpu" in done.stderr


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m regionshards ARGS`` on loopback with a free port, one thread per rank."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("torchrun")
    cmd = [str(exe), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port),
           "-m", "regionshards", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_fpn_has_batchnorm_after_every_lateral_and_output_conv_and_no_conv_bias() -> None:
    """SoCo_FPN.py builds mmdet's FPN with norm_cfg=BN (ConvModule: conv without bias → BN, no activation)."""
    net = SoCo(soco_cfg()).online
    for blocks in (net.fpn.inner_blocks, net.fpn.layer_blocks):
        assert len(blocks) == 4
        for block in blocks:
            conv, norm = block[0], block[1]
            assert isinstance(conv, torch.nn.Conv2d) and conv.bias is None
            assert isinstance(norm, torch.nn.BatchNorm2d) and len(block) == 2  # no activation, as mmdet's FPN
    plain = SoCo(soco_cfg(soco={"fpn_norm": False})).online
    assert all(len(b) == 1 and b[0].bias is not None for b in plain.fpn.inner_blocks)
