"""DetCo: global and jigsaw views from image-only shards, InfoNCE and the multi-level loss against hand-computed
values, queue enqueue/dequeue semantics, the momentum encoder, and one training step."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

import torch.nn.functional as F  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from regionshards.cli.main import main  # noqa: E402
from regionshards.shards import InputRecord, Source, config_hash, iter_shard, write_manifest, write_shard  # noqa: E402
from regionshards.trainer.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.methods.detco_config import DetCoConfig  # noqa: E402
from regionshards.trainer.methods.detco_model import DetCo, DetCoNet, detco_loss, info_nce  # noqa: E402
from regionshards.trainer.methods.detco_views import jigsaw_offsets  # noqa: E402
from regionshards.trainer.methods.detco_views import make_batch as make_detco_batch  # noqa: E402
from regionshards.trainer.transforms import normalize  # noqa: E402

torch.set_num_threads(1)
IMAGES_CONFIG = {"segments": None, "proposals": None, "filters": []}
SMALL = {"queue_size": 16, "dim": 8}


def make_image_dataset(out: Path, sizes: list[int], h: int = 72, w: int = 96) -> Path:
    """Shards of images only (what ``build --segments none --proposals none`` writes): no segments, no proposals."""
    out.mkdir(parents=True)
    digest = config_hash(IMAGES_CONFIG)
    infos = []
    for s, n in enumerate(sizes):
        records = []
        for i in range(n):
            pixels = np.random.default_rng(s * 100 + i).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).resize((w, h), Image.NEAREST).save(buf, format="JPEG", quality=90)
            records.append(InputRecord(key=f"s{s}_{i:03d}", source=Source(f"s{s}_{i:03d}.jpg"), image=buf.getvalue(),
                                       image_format="JPEG", image_mode="RGB", width=w, height=h))
        infos.append(write_shard(out, s, records, config_hash=digest))
    write_manifest(out, IMAGES_CONFIG, infos)
    return out


def detco_cfg(**kw) -> TrainConfig:
    base = dict(method="detco", backbone="resnet18", image_size=64, batch_size=4, workers=0)
    detco = kw.pop("detco", {})
    base.update(kw)
    return TrainConfig(**base, detco=DetCoConfig(**{**SMALL, **detco}))


@pytest.fixture(scope="module")
def image_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_dataset(tmp_path_factory.mktemp("detco") / "ds", [5, 4])


def samples_of(ds: Path) -> list[dict]:
    return [s for shard in sorted(ds.glob("*.tar")) for s in iter_shard(str(shard), parse_json=False)]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- views --------------------------------------------------------------------------------------------------


def test_views_from_image_only_shards(image_ds: Path) -> None:
    samples = samples_of(image_ds)
    assert b'"proposals":null' in samples[0]["json"] and b'"segments":null' in samples[0]["json"]
    cfg = detco_cfg()
    assert cfg.detco.sizes(224) == (255, 64) and cfg.detco.sizes(64) == (73, 18)
    batch = make_detco_batch(samples[:4], cfg, np.random.default_rng(0))
    assert batch["view0"].shape == batch["view1"].shape == (4, 3, 64, 64)
    assert batch["local0"].shape == batch["local1"].shape == (4, 9, 3, 18, 18)
    assert all(batch[k].dtype == torch.uint8 for k in batch)
    again = make_detco_batch(samples[:4], cfg, np.random.default_rng(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    # the patches of one image differ in colour statistics: each is augmented on its own
    means = batch["local0"][0].float().mean((1, 2, 3))
    assert len(set(means.tolist())) == 9


def test_jigsaw_patches_stay_in_their_cells() -> None:
    offsets = jigsaw_offsets(np.random.default_rng(0), 3, 85, 64)
    for c, (y, x) in enumerate(offsets):
        r, col = divmod(c, 3)
        assert r * 85 <= y <= r * 85 + 85 - 64 and col * 85 <= x <= col * 85 + 85 - 64


def test_patches_are_cut_from_the_jigsaw_crop(image_ds: Path) -> None:
    """Without colour, a patch equals its window of the jigsaw crop (recomputed from the same draws)."""
    from regionshards.trainer.decode import DecodedImage, sample_meta
    from regionshards.trainer.methods.detco_views import detco_view
    from regionshards.trainer.transforms import sample_crop

    cfg = detco_cfg(colour=False)
    sample = samples_of(image_ds)[0]
    batch = make_detco_batch([sample], cfg, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    _, field, h, w = sample_meta(sample)
    crops = [sample_crop(rng, h, w, detco_view(cfg)) for _ in range(4)]
    image = DecodedImage(sample[field], field, h, w, crops, [64, 64, 73, 73])
    big = image.view(image.grid_crop(crops[2]), 73)
    offsets = jigsaw_offsets(rng, 3, 24, 18)
    for c, (y, x) in enumerate(offsets):
        assert np.array_equal(batch["local0"][0, c].permute(1, 2, 0).numpy(), big[y : y + 18, x : x + 18])


# --- loss ---------------------------------------------------------------------------------------------------


def test_info_nce_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    t = 0.2
    # row 0: logits (0.6, 1, -1, 0) / t, positive first; row 1: (1, 0, 0, -1) / t
    row0 = -0.6 / t + math.log(sum(math.exp(v / t) for v in (0.6, 1.0, -1.0, 0.0)))
    row1 = -1.0 / t + math.log(sum(math.exp(v / t) for v in (1.0, 0.0, 0.0, -1.0)))
    assert info_nce(q, k, queue, t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_multi_level_loss_weights_three_terms_per_level() -> None:
    g = torch.Generator().manual_seed(0)

    def unit() -> torch.Tensor:
        return F.normalize(torch.randn(3, 4, generator=g), dim=1)

    q_g, q_l, k_g, k_l = ([unit() for _ in range(4)] for _ in range(4))
    queue_g = F.normalize(torch.randn(4, 5, 4, generator=g), dim=2)
    queue_l = F.normalize(torch.randn(4, 5, 4, generator=g), dim=2)
    weights = (0.1, 0.4, 0.7, 1.0)
    got = detco_loss(q_g, q_l, k_g, k_l, queue_g, queue_l, weights, 0.2)

    def nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> float:  # the formula, one row at a time
        total = 0.0
        for b in range(q.shape[0]):
            pos = math.exp(float(q[b] @ k[b]) / 0.2)
            neg = sum(math.exp(float(q[b] @ n) / 0.2) for n in queue)
            total += -math.log(pos / (pos + neg))
        return total / q.shape[0]

    want = sum(w * (nce(q_g[i], k_g[i], queue_g[i]) + nce(q_l[i], k_l[i], queue_l[i])
                    + nce(q_l[i], k_g[i], queue_g[i])) for i, w in enumerate(weights))
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_queues_are_fifo_per_level_and_kind() -> None:
    method = DetCo(detco_cfg(detco={"queue_size": 5, "dim": 2}))
    assert method.queue_global.shape == method.queue_local.shape == (4, 5, 2)
    assert torch.allclose(method.queue_global.norm(dim=2), torch.ones(4, 5))

    def keys(start: int, n: int, sign: float = 1.0) -> torch.Tensor:  # (4, n, 2), level i row j = (i, start + j)
        rows = torch.arange(start, start + n, dtype=torch.float32)
        return sign * torch.stack([torch.stack([torch.full_like(rows, i), rows], 1) for i in range(4)])

    method.enqueue(keys(0, 3), keys(0, 3, -1.0))
    assert int(method.queue_ptr) == 3
    assert method.queue_global[2, :3, 1].tolist() == [0, 1, 2] and method.queue_global[2, :3, 0].tolist() == [2] * 3
    assert method.queue_local[1, :3, 1].tolist() == [0, -1, -2]  # the local queue holds the local keys
    old = method.queue_global[:, 3:].clone()
    method.enqueue(keys(3, 4), keys(3, 4, -1.0))  # wraps: rows 3, 4, then 0, 1 — the oldest replaced first
    assert int(method.queue_ptr) == 2
    assert method.queue_global[0, :, 1].tolist() == [5, 6, 2, 3, 4]
    assert not torch.equal(method.queue_global[:, 3:], old)
    method.enqueue(keys(10, 7), keys(10, 7, -1.0))  # more keys than the queue holds: the last 5 are kept
    assert sorted(method.queue_global[3, :, 1].tolist()) == [12, 13, 14, 15, 16]
    assert int(method.queue_ptr) == 2
    state = method.state_dict()
    assert {"queue_global", "queue_local", "queue_ptr"} <= set(state)  # checkpointed with the model


def test_forward_shapes_momentum_encoder_and_a_training_step(image_ds: Path) -> None:
    cfg = detco_cfg()
    torch.manual_seed(0)
    method = DetCo(cfg)
    net: DetCoNet = method.online
    assert [h[0].in_features for h in net.global_heads] == [64, 128, 256, 512]
    assert [h[0].in_features for h in net.local_heads] == [9 * 64, 9 * 128, 9 * 256, 9 * 512]
    batch = make_detco_batch(samples_of(image_ds)[:4], cfg, np.random.default_rng(0))
    images = {k: normalize(v.flatten(0, v.dim() - 4), cfg.mean, cfg.std).reshape(v.shape) for k, v in batch.items()}
    q_g, q_l = net(images["view0"], images["local0"])
    assert len(q_g) == len(q_l) == 4 and all(t.shape == (4, 8) for t in q_g + q_l)
    assert torch.allclose(q_l[3].norm(dim=1), torch.ones(4), atol=1e-5)
    ptr = int(method.queue_ptr)
    loss = method.loss(images)
    assert torch.isfinite(loss) and int(method.queue_ptr) == (ptr + 4) % 16
    loss.backward()
    assert net.local_heads[0][0].weight.grad is not None and all(p.grad is None for p in method.target.parameters())
    before = method.target.global_heads[0][0].weight.clone()
    with torch.no_grad():
        net.global_heads[0][0].weight.add_(1.0)
    assert method.update_target(0, 10) == 0.999
    assert torch.allclose(method.target.global_heads[0][0].weight, before + 0.001, atol=1e-6)


# --- the command line and two gloo processes ------------------------------------------------------------------


def detco_args(data: Path, run: Path, config: Path, *extra: str) -> list[str]:
    return ["train", "--method", "detco", "--data", str(data), "--out", str(run), "--backbone", "resnet18",
            "--image-size", "64", "--batch-size", "4", "--log-every", "1", "--config", str(config), *extra]


def test_train_and_exact_resume_carry_the_queues(image_ds: Path, tmp_path: Path) -> None:
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"detco": SMALL}))
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    result = CliRunner().invoke(main, detco_args(image_ds, whole, config, "--steps", "4", "--workers", "0"))
    assert result.exit_code == 0, result.output
    rows = metrics(whole)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["ema"] == 0.999 for r in rows)
    saved = json.loads((whole / "config.json").read_text())
    assert saved["base_lr"] == 0.03 and saved["weight_decay"] == 1e-4 and saved["run"]["warmup_steps"] == 0
    assert saved["detco"]["level_weights"] == [0.1, 0.4, 0.7, 1.0] and saved["detco"]["temperature"] == 0.2
    assert saved["detco"]["momentum"] == 0.999 and saved["detco"]["queue_size"] == 16
    state = load_checkpoint(list_checkpoints(whole)[-1][1])["model"]
    assert int(state["queue_ptr"]) == (4 * 4) % 16 and state["queue_local"].shape == (4, 16, 8)
    first = CliRunner().invoke(main, detco_args(image_ds, parts, config, "--steps", "4", "--workers", "0",
                                                "--stop-at", "2"))
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, detco_args(image_ds, parts, config, "--steps", "4", "--workers", "0",
                                                 "--resume"))
    assert second.exit_code == 0, second.output
    for a, b in zip(rows, metrics(parts), strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["lr"] == b["lr"]
    export = CliRunner().invoke(main, ["export", str(whole), "--out", str(tmp_path / "r18.pt")])
    assert export.exit_code == 0, export.output
    refused = CliRunner().invoke(main, ["export", str(whole), "--out", str(tmp_path / "d.pt"), "--format",
                                        "detectron2", "--head"])
    assert refused.exit_code == 2 and "has no box head" in refused.output


def test_two_gloo_processes_under_torchrun(image_ds: Path, tmp_path: Path) -> None:
    """Two ranks: shuffled BN for the key encoder and queues filled with both ranks' keys."""
    from test_trainer_soco import torchrun

    config = tmp_path / "small.json"
    config.write_text(json.dumps({"detco": SMALL}))
    run = tmp_path / "ddp"
    args = detco_args(image_ds, run, config, "--steps", "2", "--workers", "0")
    args[args.index("--batch-size") + 1] = "2"  # 9 samples, 2 ranks: 4 each, 2 batches of 2 per epoch
    done = torchrun(args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [r["step"] for r in metrics(run)] == [1, 2]
    state = load_checkpoint(list_checkpoints(run)[-1][1])["model"]
    assert int(state["queue_ptr"]) == 2 * 2 * 2  # 2 steps x global batch 4 keys enqueued
