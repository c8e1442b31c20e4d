"""The method table: one row per method, the only place that names one; one batch/loss signature for all."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from regionshards.trainer.methods import METHOD_NAMES, METHODS, method_spec

TRAINER = Path(__file__).resolve().parents[1] / "src" / "regionshards" / "trainer"
CLI = TRAINER.parent / "cli" / "train_cmd.py"


def _string_constants(path: Path) -> set[str]:
    """String literals of a module other than docstrings."""
    tree = ast.parse(path.read_text("utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_no_module_outside_the_table_spells_a_method_name() -> None:
    # recipes.py names the method of each official run, as a config.json does
    shared = [p for p in TRAINER.glob("*.py") if p.name != "recipes.py"] + [CLI]
    fields = {spec.settings for spec in METHODS.values()}  # config field names ("soco" is one), not methods
    offenders = {p.name: sorted(_string_constants(p) & set(METHOD_NAMES) - (fields if p.name == "config.py" else set()))
                 for p in shared}
    assert not {k: v for k, v in offenders.items() if v}
    # nor do the family modules compare cfg.method with a literal (variants are told apart by the table's options)
    for path in (TRAINER / "methods").glob("*_*.py"):
        assert not re.search(r"cfg\.method\s*(==|!=|in)", path.read_text("utf-8")), path.name


def test_families_do_not_import_each_other() -> None:
    families = {spec.family for spec in METHODS.values()}
    for path in (TRAINER / "methods").glob("*_*.py"):
        family = path.stem.split("_")[0]
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                other = node.module.split("_")[0]
                assert other not in families - {family}, f"{path.name} imports {node.module}"


def test_the_cli_choices_come_from_the_table() -> None:
    from regionshards.cli.train_cmd import train_command

    option = next(p for p in train_command.params if p.name == "method")
    assert tuple(option.type.choices) == METHOD_NAMES


def test_unknown_method_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="method must be one of .*'nope'"):
        method_spec("nope")


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_family_has_the_same_entry_points(name: str) -> None:
    pytest.importorskip("torch", reason="the families' modules need the train extra")
    spec = METHODS[name]
    assert list(inspect.signature(spec.make_batch).parameters) == ["samples", "cfg", "rng"]
    model = spec.module("model").Model
    assert list(inspect.signature(model.loss).parameters) == ["self", "batch", "online", "autocast"]
    assert list(inspect.signature(model.update_target).parameters) == ["self", "step", "total"]
    assert spec.optimizer in ("lars", "sgd") and set(spec.needs) <= {"masks", "proposals"}
    if spec.settings:
        from regionshards.trainer.config import TrainConfig

        assert spec.settings in TrainConfig().to_dict()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_batchnorm_regime_on_the_distributed_cuda_path(name: str) -> None:
    """DetCo keeps per-GPU BatchNorm in both encoders (MoCo v2's key-encoder batch shuffle needs it); the
    others get SyncBatchNorm. Checked on CPU with the runtime a 2-GPU torchrun process would select."""
    torch = pytest.importorskip("torch", reason="the trainer needs the train extra")
    from regionshards.trainer.config import TrainConfig
    from regionshards.trainer.loop import apply_norm_regime, make_method, uses_sync_bn
    from regionshards.trainer.runtime import select_runtime

    runtime = select_runtime(True, "auto", {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert runtime.distributed and runtime.device.type == "cuda"
    cfg = TrainConfig(method=name, backbone="resnet18", image_size=64, batch_size=2, steps=2, proj_hidden=16,
                      proj_dim=8, pred_hidden=16, detco={"queue_size": 8, "dim": 8}).validate()
    model = apply_norm_regime(make_method(cfg), cfg, runtime)
    kinds = {type(m) for m in model.modules()}
    if name == "detco":
        assert not METHODS[name].sync_bn and not uses_sync_bn(cfg, runtime)
        assert torch.nn.SyncBatchNorm not in kinds and torch.nn.BatchNorm2d in kinds
        assert cfg.detco.shuffle_bn  # the shuffle is what replaces SyncBN there
    else:
        assert uses_sync_bn(cfg, runtime)
        assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    single = select_runtime(True, "auto", {"WORLD_SIZE": "1"})
    assert not uses_sync_bn(cfg, single)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_last_batchnorm_of_every_residual_block_starts_at_zero_as_the_authors_do(name: str) -> None:
    """DetCon (haiku BlockV1) and SoCo (contrast/resnet.py) start each residual block's last BN γ at 0; DetCo's
    MoCo v2 / OpenSelfSup ResNet does not. Online and target trunks alike; the setting is recorded."""
    pytest.importorskip("torch", reason="the trainer needs the train extra")
    from regionshards.trainer.config import TrainConfig
    from regionshards.trainer.loop import make_method

    # Bottleneck (ResNet-50) for one method of each kind keeps the test fast; BasicBlock (ResNet-18) for all
    cases = [("resnet18", "bn2")] + ([("resnet50", "bn3")] if name in ("detcon-b", "detco") else [])
    for backbone, last in cases:
        cfg = TrainConfig(method=name, backbone=backbone, image_size=64, batch_size=2, steps=2, proj_hidden=16,
                          proj_dim=8, pred_hidden=16, detco={"queue_size": 8, "dim": 8}).validate()
        assert cfg.zero_init_residual is METHODS[name].zero_init_residual
        assert cfg.to_dict()["zero_init_residual"] is cfg.zero_init_residual
        model = make_method(cfg)
        for net in (model.online, model.target):
            if net is None:
                continue
            gammas = [m.weight for n, m in net.backbone.named_modules() if n.endswith(last)]
            others = [m.weight for n, m in net.backbone.named_modules() if n.endswith("bn1")]
            assert len(gammas) == (8 if backbone == "resnet18" else 16)
            want = 0.0 if cfg.zero_init_residual else 1.0
            assert all(bool((g == want).all()) for g in gammas)
            assert all(bool((g == 1.0).all()) for g in others)
    assert METHODS["detcon-b"].zero_init_residual and METHODS["soco"].zero_init_residual
    assert not METHODS["detco"].zero_init_residual
    assert TrainConfig(method="detcon-b", zero_init_residual=False).zero_init_residual is False


# --- recipes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["detcon-b-imagenet", "detcon-b-imagenet-100ep", "soco-fpn-100ep", "soco-fpn-400ep",
                                  "soco-star-fpn-400ep", "soco-c4-100ep", "soco-c4-400ep", "detco-200ep",
                                  "detco-800ep"])
def test_every_recipe_is_a_valid_config_of_its_official_run(name: str) -> None:
    from regionshards.trainer.config import TrainConfig
    from regionshards.trainer.recipes import recipe_values

    values = recipe_values(name)
    cfg = TrainConfig.from_dict(values).validate()
    assert cfg.recipe == name and cfg.epochs == values["epochs"] and cfg.steps == 0
    assert cfg.method in METHOD_NAMES
    if name.startswith("soco"):
        assert cfg.soco.cutout_p == (0.5 if name in ("soco-fpn-100ep", "soco-c4-100ep", "soco-c4-400ep") else 0.0)
        assert cfg.batch_size * 16 == 2048 and cfg.soco.ema_base == 0.99 and cfg.soco.max_tries == 5
        assert cfg.soco.crop_scale == ((0.6, 1.0) if "c4" in name else (0.5, 1.0))
        assert cfg.soco.jitter_p == (0.0 if "c4" in name else 0.5)
    if name.startswith("detco-"):
        assert cfg.batch_size * 8 == 256 and cfg.base_lr == 0.03 and not cfg.zero_init_residual
        assert cfg.epochs == (200 if name == "detco-200ep" else 800)
    if name.startswith("detcon"):
        assert cfg.batch_size * 512 == 4096 and cfg.warmup_epochs == cfg.epochs / 100


def test_unknown_recipe_is_refused_naming_the_recipes() -> None:
    from regionshards.trainer.recipes import recipe

    with pytest.raises(ValueError, match="unknown recipe 'x'; recipes: detcon-b-imagenet"):
        recipe("x")


def test_detcon_s_adopts_simclr_views_and_head_and_old_runs_keep_theirs() -> None:
    """The DetCon paper: each variant adopts its base method's augmentations and architecture (SimCLR's for
    DetCon-S). A DetCon-S run saved with DetCon-B's views and head resumes with them."""
    from regionshards.trainer.config import TrainConfig, adopt_legacy, config_differences

    s, b = TrainConfig(method="detcon-s"), TrainConfig(method="detcon-b")
    assert s.views[0] == s.views[1]  # symmetric, as SimCLR
    v = s.views[0]
    assert (v.brightness, v.contrast, v.saturation, v.hue, v.jitter_p, v.grayscale_p) == (0.8, 0.8, 0.8, 0.2, 0.8, 0.2)
    assert (v.blur_p, v.solarize_p, v.crop_scale) == (0.5, 0.0, (0.08, 1.0))
    assert (s.proj_hidden, s.proj_dim) == (2048, 128)
    assert (b.views[0].blur_p, b.views[1].blur_p, b.views[1].solarize_p, b.proj_hidden, b.proj_dim) == (
        1.0, 0.1, 0.2, 4096, 256)
    assert TrainConfig(method="detcon-s", proj_dim=64).proj_dim == 64  # an explicit value wins
    old = TrainConfig(method="detcon-s", views=b.views, proj_hidden=4096, proj_dim=256).to_dict()
    current = TrainConfig(method="detcon-s")
    assert config_differences(old, current.to_dict()) == ["proj_dim", "proj_hidden", "views"]
    assert adopt_legacy(current, old) == ["views", "proj_hidden", "proj_dim"]
    assert config_differences(old, current.to_dict()) == [] and current.views == b.views


def test_batchnorm_statistics_are_per_view_as_the_references_run_the_network_per_view() -> None:
    """DetCon (detcon_b.py applies the network per view) and SoCo (the encoder per view): with ``bn_per_view`` the
    two views of a step are normalised separately — equal to two separate calls — in one forward call."""
    torch = pytest.importorskip("torch", reason="the trainer needs the train extra")
    from regionshards.trainer.methods.detcon_model import DetConNet
    from regionshards.trainer.methods.soco_model import SoCoNet

    torch.manual_seed(0)
    net = DetConNet("resnet18", 32, 16, 32).train()
    a, b = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64) * 2 + 1
    grids = torch.randint(0, 3, (6, 2, 2))
    ids = grids.flatten(1)[:, :4]
    joint, _ = net(torch.cat([a, b]), grids, ids, views=2)
    apart = torch.cat([net(a, grids[:3], ids[:3])[0], net(b, grids[3:], ids[3:])[0]])
    together, _ = net(torch.cat([a, b]), grids, ids)
    assert torch.allclose(joint, apart, atol=1e-5) and not torch.allclose(together, apart, atol=1e-3)
    soco = SoCoNet("resnet18", 16, 7, -1, 32, 32, 8, None, bn_per_view=True).train()
    boxes = [torch.tensor([[[0.0, 0.0, 40.0, 40.0], [8.0, 8.0, 60.0, 50.0]]]).expand(3, 2, 4).contiguous()] * 2
    levels = [torch.tensor([[2, 3]]).expand(3, 2).contiguous()] * 2
    per_view = soco.pool([a, b], boxes, levels)
    single = torch.cat([soco.pool([a], boxes[:1], levels[:1]), soco.pool([b], boxes[1:], levels[1:])])
    assert torch.allclose(per_view, single, atol=1e-5)
    soco.bn_per_view = False
    assert not torch.allclose(soco.pool([a, b], boxes, levels), single, atol=1e-3)
