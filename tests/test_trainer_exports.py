"""Exports named for what they load into: torchvision backbones, torchvision Mask R-CNN v1 / v2, detectron2.

The detectron2 names are checked against the renaming rules of SoCo's converter
(hologerry/SoCo ``converter_detectron2/convert_detectron2_Head.py``) applied to the names SoCo's own modules
give the same tensors; detectron2 itself is not installable here. The Mask R-CNN exports are *consumed*: a
torchvision Mask R-CNN is built from each and trained a few steps on the bundled COCO sample.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from click.testing import CliRunner  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.ops import FeaturePyramidNetwork  # noqa: E402

from regionshards.cli.main import main  # noqa: E402
from regionshards.trainer.checkpoint import save_checkpoint  # noqa: E402
from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.exports import export_weights  # noqa: E402
from regionshards.trainer.loop import make_method  # noqa: E402
from regionshards.trainer.networks import stage_channels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "data" / "sample" / "coco"
SMALL = {"proj_hidden": 32, "pred_hidden": 32, "proj_dim": 16}


def saved_run(tmp_path: Path, method: str, backbone: str = "resnet50", fpn_norm: bool = True, **kw) -> nn.Module:
    """A run folder with one checkpoint of a freshly built ``method`` model; SoCo's FPN gets BatchNorm after
    every lateral and output conv when ``fpn_norm`` (as SoCo's mmdet FPN with ``norm_cfg=BN``)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(method=method, backbone=backbone, image_size=64, batch_size=2, **SMALL, **kw)
    torch.manual_seed(0)
    model = make_method(cfg)
    for net in (model.online, getattr(model, "target", None)):
        if net is not None and hasattr(net, "fpn") and fpn_norm and not _has_norm(net.fpn):
            net.fpn = FeaturePyramidNetwork(stage_channels(net.backbone), net.fpn.inner_blocks[0][0].out_channels,
                                            norm_layer=nn.BatchNorm2d)
    save_checkpoint(tmp_path, 5, {"model": model.state_dict(), "optimizer": {}, "config": cfg.to_dict()}, keep=2)
    return model


def _has_norm(fpn: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in fpn.modules())


# --- detectron2: SoCo's converter rules ------------------------------------------------------------------------


def soco_source_name(part: str, key: str) -> str:
    """The name SoCo's own modules give the tensor our ``part`` holds under ``key``: its ResNet has
    torchvision's names; its neck is mmdet's FPN (``lateral_convs.i`` / ``fpn_convs.i`` ConvModules with
    ``conv`` and ``bn``); its head (``contrast/models/fast_rcnn_conv_fc_head.py``) has ``conv1..4``, ``bn1..4``
    and ``fc1``."""
    if part == "backbone":
        return key
    if part == "fpn":
        m = re.fullmatch(r"(inner|layer)_blocks\.(\d)\.([01])\.(.+)", key)
        assert m, key
        module = "lateral_convs" if m[1] == "inner" else "fpn_convs"
        return f"{module}.{m[2]}.{'conv' if m[3] == '0' else 'bn'}.{m[4]}"
    m = re.fullmatch(r"(\d)\.(?:([01])\.)?(.+)", key)
    assert m, key
    if m[2] is None:
        return f"fc1.{m[3]}"
    return f"{'conv' if m[2] == '0' else 'bn'}{int(m[1]) + 1}.{m[3]}"


def soco_converter(part: str, k: str, start: int = 2, num_outs: int = 4) -> str:
    """The renaming of convert_detectron2_Head.py (its string replacements, in its order), prefix removed."""
    if part == "backbone":
        if "layer" not in k:
            k = "stem." + k
        for a, b in (("layer1", "res2"), ("layer2", "res3"), ("layer3", "res4"), ("layer4", "res5"),
                     ("bn1", "conv1.norm"), ("bn2", "conv2.norm"), ("bn3", "conv3.norm"),
                     ("downsample.0", "shortcut"), ("downsample.1", "shortcut.norm")):
            k = k.replace(a, b)
        return k
    if part == "fpn":
        for i in range(num_outs):
            k = k.replace(f"lateral_convs.{i}.conv", f"fpn_lateral{start + i}")
            k = k.replace(f"lateral_convs.{i}.bn", f"fpn_lateral{start + i}.norm")
            k = k.replace(f"fpn_convs.{i}.conv", f"fpn_output{start + i}")
            k = k.replace(f"fpn_convs.{i}.bn", f"fpn_output{start + i}.norm")
        return k
    k = "box_head." + k
    for i in range(1, 5):
        k = k.replace(f"bn{i}", f"conv{i}.norm")
    return k


# where the converter's names sit in detectron2's GeneralizedRCNN (its checkpointer matches them by suffix)
D2_PREFIX = {"backbone": "backbone.bottom_up.", "fpn": "backbone.", "head": "roi_heads."}


def test_detectron2_names_follow_socos_converter(tmp_path: Path) -> None:
    model = saved_run(tmp_path, "soco")
    out = tmp_path / "d2.pth"
    info = export_weights(tmp_path, out, "detectron2", head=True)
    assert info["parts"] == ["backbone", "fpn", "head"] and info["loads_into"] == "detectron2 R-50-FPN"
    data = torch.load(out, weights_only=True)  # no pickle needed
    assert data["__author__"] == "regionshards" and data["matching_heuristics"] is True
    cfg = data["config"]
    assert cfg["MODEL.RESNETS.STRIDE_IN_1X1"] is False and cfg["INPUT.FORMAT"] == "RGB"
    assert cfg["MODEL.FPN.NORM"] == "SyncBN" and cfg["MODEL.ROI_BOX_HEAD.NUM_CONV"] == 4
    state = data["model"]
    expected = {}
    for name, value in model.online.state_dict().items():
        part, _, key = name.partition(".")
        if part in D2_PREFIX:
            expected[D2_PREFIX[part] + soco_converter(part, soco_source_name(part, key))] = value
    assert set(state) == set(expected)
    for k, v in state.items():
        assert torch.equal(v, expected[k]), k
    # detectron2 R-50-FPN shapes (build_resnet_backbone / FPN / FastRCNNConvFCHead with norms, no conv bias)
    shapes = {"backbone.bottom_up.stem.conv1.weight": (64, 3, 7, 7),
              "backbone.bottom_up.stem.conv1.norm.running_var": (64,),
              "backbone.bottom_up.res2.0.shortcut.weight": (256, 64, 1, 1),
              "backbone.bottom_up.res3.0.conv2.weight": (128, 128, 3, 3),
              "backbone.bottom_up.res5.2.conv3.norm.weight": (2048,),
              "backbone.fpn_lateral2.weight": (256, 256, 1, 1), "backbone.fpn_lateral5.weight": (256, 2048, 1, 1),
              "backbone.fpn_output3.weight": (256, 256, 3, 3), "backbone.fpn_output5.norm.bias": (256,),
              "roi_heads.box_head.conv4.weight": (256, 256, 3, 3), "roi_heads.box_head.conv1.norm.weight": (256,),
              "roi_heads.box_head.fc1.weight": (1024, 256 * 7 * 7), "roi_heads.box_head.fc1.bias": (1024,)}
    for k, shape in shapes.items():
        assert tuple(state[k].shape) == shape, k
    assert not any(k.startswith("backbone.fpn_") and k.endswith(".bias") and ".norm." not in k for k in state)
    # res4: 6 blocks x 3 convs with their norms (1 + 5 tensors each) and one shortcut with its norm
    assert len([k for k in state if k.startswith("backbone.bottom_up.res4.")]) == 6 * 3 * (1 + 5) + (1 + 5)


def test_detectron2_without_head_and_for_other_depths(tmp_path: Path) -> None:
    saved_run(tmp_path, "detcon-b", backbone="resnet18")
    info = export_weights(tmp_path, tmp_path / "d2.pth", "detectron2")
    data = torch.load(tmp_path / "d2.pth", weights_only=True)
    assert info["parts"] == ["backbone"] and data["config"]["MODEL.RESNETS.DEPTH"] == 18
    assert data["config"]["MODEL.RESNETS.RES2_OUT_CHANNELS"] == 64
    assert "backbone.bottom_up.res3.0.shortcut.norm.weight" in data["model"]  # BasicBlock's projection
    assert all(k.startswith("backbone.bottom_up.") for k in data["model"])
    with pytest.raises(ValueError, match="name the file .pth"):
        export_weights(tmp_path, tmp_path / "d2.pkl", "detectron2")


# --- torchvision detectors: every key lands, mismatches are one-line refusals -------------------------------


def test_maskrcnn_v2_takes_socos_norm_fpn_and_head(tmp_path: Path) -> None:
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    model = saved_run(tmp_path, "soco")
    info = export_weights(tmp_path, tmp_path / "v2.pt", "maskrcnn_resnet50_fpn_v2", head=True)
    assert info["parts"] == ["backbone", "fpn", "head"]
    state = torch.load(tmp_path / "v2.pt", weights_only=True)
    detector = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
    own = detector.state_dict()
    covered = {k for k in own if k.startswith(("backbone.", "roi_heads.box_head."))}
    assert set(state) == covered  # every backbone, FPN (with its BatchNorms) and box-head tensor
    result = detector.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    fpn_bn = detector.backbone.fpn.inner_blocks[2][1]
    assert torch.equal(fpn_bn.running_var, model.online.fpn.inner_blocks[2][1].running_var)
    assert torch.equal(detector.roi_heads.box_head[5].weight, model.online.head[5].weight)


def test_refusals_name_the_mismatch(tmp_path: Path) -> None:
    soco = tmp_path / "soco"
    saved_run(soco, "soco")
    with pytest.raises(ValueError, match="has no norm layers, this run's FPN has BatchNorm"):
        export_weights(soco, tmp_path / "x.pt", "maskrcnn_resnet50_fpn")
    with pytest.raises(ValueError, match="no 4conv1fc box head"):
        export_weights(soco, tmp_path / "x.pt", "maskrcnn_resnet50_fpn", head=True)
    plain = tmp_path / "plain"
    saved_run(plain, "soco", fpn_norm=False, backbone="resnet18")
    with pytest.raises(ValueError, match="resnet50 backbone, this run trained a resnet18"):
        export_weights(plain, tmp_path / "x.pt", "maskrcnn_resnet50_fpn_v2")
    detcon = tmp_path / "detcon"
    saved_run(detcon, "detcon-b", backbone="resnet18")
    with pytest.raises(ValueError, match="has no box head"):
        export_weights(detcon, tmp_path / "x.pt", "detectron2", head=True)
    runner = CliRunner()
    used = runner.invoke(main, ["export", str(detcon), "--out", str(tmp_path / "x.pt"), "--head"])
    assert used.exit_code == 2 and "--head needs --format" in used.output
    refused = runner.invoke(main, ["export", str(plain), "--out", str(tmp_path / "x.pt"), "--format",
                                   "maskrcnn_resnet50_fpn"])
    assert refused.exit_code == 2, refused.output
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: maskrcnn_resnet50_fpn has a resnet50 backbone")
    ok = runner.invoke(main, ["export", str(detcon), "--out", str(tmp_path / "d2.pth"), "--format", "detectron2"])
    assert ok.exit_code == 0 and "detectron2 R-18-FPN (backbone, " in ok.output


# --- consumed: torchvision Mask R-CNN trained from each export on the bundled COCO sample -------------------


def coco_batch(n: int = 2, size: int = 128) -> tuple[list, list]:
    """``n`` bundled COCO images resized to ``size`` px and their targets (boxes xyxy, labels, masks)."""
    import cv2

    from regionshards.proposals.groundtruth import annotation_to_mask

    data = json.loads((COCO / "instances.json").read_text())
    anns: dict[int, list] = {}
    for a in data["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    images, targets = [], []
    for info in [i for i in data["images"] if i["id"] in anns][:n]:
        img = cv2.imread(str(COCO / "images" / info["file_name"]), cv2.IMREAD_COLOR)[..., ::-1]
        h, w = img.shape[:2]
        sx, sy = size / w, size / h
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        boxes, labels, masks = [], [], []
        for a in anns[info["id"]]:
            x, y, bw, bh = a["bbox"]
            boxes.append([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy])
            labels.append(a["category_id"])
            m = annotation_to_mask(a, h, w)
            masks.append(cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST))
        images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                        "masks": torch.from_numpy(np.stack(masks))})
    return images, targets


def train_detector(detector: nn.Module, steps: int = 6) -> list[float]:
    """Total torchvision detection loss (RPN + box + mask) per SGD step on one repeated COCO batch."""
    images, targets = coco_batch()
    torch.manual_seed(0)
    detector.train()
    opt = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.002, momentum=0.9)
    totals = []
    for _ in range(steps):
        losses = detector(images, targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                               "loss_rpn_box_reg"}
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    return totals


SMALL_DETECTOR = {"min_size": 128, "max_size": 128, "num_classes": 10, "rpn_batch_size_per_image": 64,
                  "box_batch_size_per_image": 64, "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100}


@pytest.mark.slow
@pytest.mark.parametrize("method, fmt, head", [("detcon-b", "maskrcnn_resnet50_fpn", False),
                                               ("detco", "maskrcnn_resnet50_fpn", False),
                                               ("soco", "maskrcnn_resnet50_fpn_v2", True)])
def test_maskrcnn_trains_from_each_export(tmp_path: Path, method: str, fmt: str, head: bool) -> None:
    from torchvision.models import detection

    extra = {"detco": {"queue_size": 16, "dim": 8}} if method == "detco" else {}
    model = saved_run(tmp_path, method, **extra)
    args = ["export", str(tmp_path), "--out", str(tmp_path / "w.pt"), "--format", fmt] + (["--head"] if head else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    detector = getattr(detection, fmt)(weights=None, weights_backbone=None, **SMALL_DETECTOR)
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    loaded = detector.load_state_dict(state, strict=False)
    assert not loaded.unexpected_keys
    left = {k.split(".")[0] + "." + k.split(".")[1] for k in loaded.missing_keys}
    expected_left = {"rpn.head", "roi_heads.box_predictor", "roi_heads.mask_head", "roi_heads.mask_predictor"}
    if method != "soco":
        expected_left |= {"backbone.fpn", "roi_heads.box_head"}
    assert left == expected_left
    assert torch.equal(detector.backbone.body.layer4[2].conv3.weight, model.online.backbone.layer4[2].conv3.weight)
    totals = train_detector(detector)
    assert all(np.isfinite(totals)), totals
    assert np.mean(totals[-2:]) < totals[0], totals
