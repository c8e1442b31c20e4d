"""SoCo's released-recipe parts: box cutout on V2/V3, the crop re-draw loop, and the SoCo-C4 variant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from click.testing import CliRunner  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

from regionshards.cli.main import main  # noqa: E402
from regionshards.trainer.methods.soco_boxes import crop_corners, cutout_in_boxes, intersection, overlapping  # noqa: E402
from regionshards.trainer.methods.soco_model import SoCo, SoCoC4Net  # noqa: E402
from regionshards.trainer.methods.soco_views import draw_overlapping_crops, pair_views  # noqa: E402
from regionshards.trainer.methods.soco_views import make_batch as make_soco_batch  # noqa: E402
from test_trainer_soco import SMALL_HEADS, make_proposals_dataset, metrics, samples_of, soco_args, soco_cfg  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def soco_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_proposals_dataset(tmp_path_factory.mktemp("soco_recipes") / "ds", [6, 5])


def _within_reach(ys: np.ndarray, xs: np.ndarray, boxes: np.ndarray, ratio_hi: float) -> np.ndarray:
    """Whether each pixel centre lies within half a maximal cutout side of some box (square centred in it)."""
    ok = np.zeros(len(ys), bool)
    for x0, y0, x1, y1 in boxes:
        half = np.sqrt(ratio_hi * (x1 - x0) * (y1 - y0)) / 2 + 1
        ok |= (xs + 0.5 >= x0 - half) & (xs + 0.5 <= x1 + half) & (ys + 0.5 >= y0 - half) & (ys + 0.5 <= y1 + half)
    return ok


def test_cutout_fills_squares_centred_in_the_boxes() -> None:
    fill = np.array([124, 116, 104], np.uint8)
    boxes = np.array([[4.0, 4.0, 20.0, 24.0], [30.0, 40.0, 60.0, 62.0]])
    image = np.full((64, 64, 3), 7, np.uint8)
    cut = cutout_in_boxes(image.copy(), boxes, np.random.default_rng(0), 1.0, (0.1, 0.3), fill)
    changed = np.any(cut != image, axis=-1)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 0 and np.all(cut[changed] == fill)
    assert np.all(_within_reach(ys, xs, boxes, 0.3))
    # each square holds about 10-30 % of its box's area (side // 2 on each side of the centre, clipped)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert changed.sum() <= sum(0.3 * a + 2 * np.sqrt(0.3 * a) + 1 for a in areas)
    untouched = cutout_in_boxes(image.copy(), boxes, np.random.default_rng(0), 0.0, (0.1, 0.3), fill)
    assert np.array_equal(untouched, image)
    hits = [np.any(cutout_in_boxes(image.copy(), boxes[:1], np.random.default_rng(s), 0.5, (0.1, 0.3), fill) != 7)
            for s in range(200)]
    assert 0.35 < np.mean(hits) < 0.65  # p 0.5 per box


@pytest.mark.parametrize("method", ["soco", "soco-star", "soco-c4"])
def test_cutout_changes_only_v2_and_v3_inside_their_boxes(soco_ds: Path, method: str) -> None:
    """Same generator with and without cutout (it draws last): V1 (and SoCo*'s V4) identical; V2/V3 differ only
    by mean-colour pixels near their own boxes."""
    samples = samples_of(soco_ds)
    fill = np.round(np.array(soco_cfg().mean) * 255).astype(np.uint8)
    plain_cfg = soco_cfg(method, colour=False)
    cut_cfg = soco_cfg(method, colour=False, soco={"cutout_p": 1.0})
    cut_views = {1, 2} if method != "soco-c4" else {1}
    seen = 0
    for s, sample in enumerate(samples[:6]):
        a = make_soco_batch([sample], plain_cfg, np.random.default_rng(s))
        b = make_soco_batch([sample], cut_cfg, np.random.default_rng(s))
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["box_ids"], b["box_ids"])
        for p, v in enumerate(pair_views(plain_cfg)):
            x, y = a[f"view{v}"][0].permute(1, 2, 0).numpy(), b[f"view{v}"][0].permute(1, 2, 0).numpy()
            changed = np.any(x != y, axis=-1)
            if v not in cut_views:
                assert not changed.any(), (method, v)
                continue
            ys, xs = np.nonzero(changed)
            assert np.all(y[changed] == fill)
            assert np.all(_within_reach(ys, xs, a["boxes"][p, 1, 0].numpy(), 0.3))
            seen += int(changed.any())
        assert torch.equal(a["view0"], b["view0"])
    assert seen > 0


def test_crops_are_drawn_again_until_the_pairs_overlap_proposals() -> None:
    """Proposals only in the top-left corner: SoCo's loader re-draws V2/V3 up to 5 times; one try is the old
    behaviour and consumes the same draws when it passes."""
    h, w = 200, 200
    candidates = np.array([[0, 0, 40, 40], [5, 5, 45, 45], [20, 0, 60, 40]], np.float64)

    def passes(cfg, seed: int, least: int = 1) -> bool:
        crops = draw_overlapping_crops(np.random.default_rng(seed), h, w, cfg, candidates)
        v1 = crop_corners(crops[0])
        counts = [int(np.count_nonzero(overlapping(candidates, r))) if (r := intersection(v1, crop_corners(crops[v])))
                  is not None else 0 for v in (1, 2)]
        return min(counts) >= least

    once = soco_cfg(soco={"max_tries": 1, "crop_scale": (0.1, 0.3)})
    five = soco_cfg(soco={"crop_scale": (0.1, 0.3)})
    assert five.soco.max_tries == 5
    rate_once = np.mean([passes(once, s) for s in range(300)])
    rate_five = np.mean([passes(five, s) for s in range(300)])
    assert rate_five > 3 * rate_once and rate_five > rate_once + 0.1  # ≈ 1 - (1 - p)^5
    for s in range(50):  # a first draw that passes is the one-try draw, so seeds that passed before keep their crops
        if passes(once, s, least=2):  # the first try's test: max(K // 2, 1) = 2 proposals per pair
            a = draw_overlapping_crops(np.random.default_rng(s), h, w, once, candidates)
            b = draw_overlapping_crops(np.random.default_rng(s), h, w, five, candidates)
            assert a == b


def test_soco_c4_pools_c4_and_runs_res5_as_the_head(soco_ds: Path) -> None:
    cfg = soco_cfg("soco-c4")
    batch = make_soco_batch(samples_of(soco_ds)[:4], cfg, np.random.default_rng(0))
    assert set(k for k in batch if k.startswith("view")) == {"view0", "view1"}
    assert batch["boxes"].shape == (1, 2, 4, 4, 4) and batch["box_ids"].shape == (1, 2, 4, 4)
    torch.manual_seed(0)
    method = SoCo(cfg)
    net = method.online
    assert isinstance(net, SoCoC4Net) and not hasattr(net, "fpn") and net.roi_size == 14
    net.eval()
    views = [torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)]
    boxes = [torch.tensor([[[0.0, 0.0, 40.0, 40.0], [10.0, 20.0, 60.0, 50.0]]]).expand(2, 2, 4).contiguous()] * 2
    with torch.no_grad():
        proj, _ = net(views, boxes, [torch.zeros(2, 2, dtype=torch.long)] * 2)
        t = net.backbone
        x = t.maxpool(t.relu(t.bn1(t.conv1(torch.cat(views)))))
        c4 = t.layer3(t.layer2(t.layer1(x)))
        rois = torch.cat([torch.tensor([[i] for i in (0, 0, 1, 1)], dtype=torch.float), boxes[0].reshape(-1, 4)], 1)
        feats = t.layer4(roi_align(c4[:2], rois, 14, spatial_scale=4 / 64, aligned=True)).mean((2, 3))
        want = net.projector(feats).reshape(2, 2, -1)
    assert torch.allclose(proj[0], want, atol=1e-5)
    loss = method.loss({**batch, "view0": batch["view0"].float() / 255, "view1": batch["view1"].float() / 255})
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in method.online.parameters())


def test_soco_c4_trains_from_the_command_line(soco_ds: Path, tmp_path: Path) -> None:
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps(SMALL_HEADS))
    run = tmp_path / "c4"
    result = CliRunner().invoke(main, soco_args(soco_ds, run, "soco-c4", "--steps", "2", "--workers", "0",
                                                "--config", str(heads)))
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in metrics(run)] == [1, 2]
    refused = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "d.pth"), "--format", "detectron2",
                                        "--head"])
    assert refused.exit_code == 2 and "has no box head" in refused.output


def test_recipe_and_epochs_from_the_command_line(soco_ds: Path, tmp_path: Path) -> None:
    """--recipe sets the official fields, options given on the command line (and --config) win, --epochs
    becomes steps for this dataset (11 samples, batch 4: 2 steps per epoch)."""
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({**SMALL_HEADS, "soco": {"cutout_ratio": [0.1, 0.2]}}))
    run = tmp_path / "recipe"
    args = soco_args(soco_ds, run, "soco", "--recipe", "soco-fpn-100ep", "--epochs", "1.5", "--workers", "0",
                     "--config", str(heads))
    args.remove("--method")
    args.remove("soco")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["recipe"] == "soco-fpn-100ep" and saved["method"] == "soco" and saved["epochs"] == 1.5
    assert saved["steps"] == 3 and saved["run"]["batches_per_epoch"] == 2
    assert saved["soco"]["cutout_p"] == 0.5 and saved["soco"]["cutout_ratio"] == [0.1, 0.2]  # the file won
    assert saved["backbone"] == "resnet18" and saved["batch_size"] == 4 and saved["base_lr"] == 1.0
    assert saved["warmup_epochs"] == 10.0
    both = CliRunner().invoke(main, soco_args(soco_ds, tmp_path / "b", "soco", "--steps", "2", "--epochs", "1"))
    assert both.exit_code == 2 and "not both" in both.output
    neither = CliRunner().invoke(main, soco_args(soco_ds, tmp_path / "n", "soco"))
    assert neither.exit_code == 2 and "--steps or --epochs" in neither.output


def test_each_view_is_padded_on_its_own_as_the_reference(soco_ds: Path) -> None:
    """SoCo pads V1's and Vj's boxes with duplicates drawn independently (pad_bboxs_with_common per view): both
    sides hold the same distinct proposals first, then their own duplicates; the loss matches by id per side."""
    cfg = soco_cfg(soco={"num_boxes": 6})
    differ = 0
    for seed in range(8):
        batch = make_soco_batch(samples_of(soco_ds)[:4], cfg, np.random.default_rng(seed))
        ids = batch["box_ids"]
        for p in range(ids.shape[0]):
            for i in range(ids.shape[2]):
                one, other = ids[p, 0, i].tolist(), ids[p, 1, i].tolist()
                unique = len(set(other))
                assert one[:unique] == other[:unique] and set(one) == set(other)
                differ += one != other
    assert differ > 0
    same = soco_cfg(soco={"num_boxes": 6, "pad_independently": False})
    batch = make_soco_batch(samples_of(soco_ds)[:4], same, np.random.default_rng(0))
    assert torch.equal(batch["box_ids"][:, 0], batch["box_ids"][:, 1])
