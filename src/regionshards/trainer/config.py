"""The training configuration: one dataclass whose defaults are the papers' and the authors' code's.

Every number a method uses is a field here (a family's own settings in its sub-object, ``soco`` / ``detco``,
defined in ``methods/<family>_config.py``), so a run's ``config.json`` records all of them and a resumed run
can be refused when any of them changed. ``base_lr``, ``weight_decay`` and ``warmup_epochs`` left unset take
the method's values from the method table (``methods.METHODS``). No torch in this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .methods import DEFAULT_METHOD, METHOD_NAMES, METHODS, method_spec
from .methods.detco_config import DetCoConfig
from .methods.soco_config import SoCoConfig

__all__ = ["METHODS", "METHOD_NAMES", "TrainConfig", "ViewConfig", "config_differences"]
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Fields that only steer how a run is watched or stored; a resumed run may change them.
RUNTIME_FIELDS = frozenset({"data", "out", "log_every", "checkpoint_every", "keep_checkpoints", "progress",
                            "stop_at"})


@dataclass
class ViewConfig:
    """One view's augmentations (BYOL's asymmetric photometric pipeline, Grill et al. 2020, Table 6).

    Geometry: a random resized crop with area fraction in ``crop_scale`` and aspect ratio (w/h) log-uniform in
    ``crop_ratio``, a horizontal flip with ``flip_p``, both applied identically to image and mask; the image is
    resized bicubic, the mask nearest. Colour: jitter with ``jitter_p`` (brightness, contrast, saturation, hue
    in a random order, torchvision ``ColorJitter`` semantics), grayscale with ``grayscale_p``, Gaussian blur with
    ``blur_p`` (sigma uniform in ``blur_sigma``, kernel ``blur_kernel_fraction`` of the image side, made odd),
    solarize with ``solarize_p`` (pixels >= ``solarize_threshold`` of 255 are inverted).
    """

    blur_p: float
    solarize_p: float
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_threshold: int = 128


def _view1() -> ViewConfig:
    return ViewConfig(blur_p=1.0, solarize_p=0.0)


def _view2() -> ViewConfig:
    return ViewConfig(blur_p=0.1, solarize_p=0.2)


@dataclass
class TrainConfig:
    """A whole training run. ``batch_size`` is per process; the global batch is ``batch_size * world_size``."""

    method: str = DEFAULT_METHOD
    data: str = ""
    out: str = ""
    backbone: str = "resnet50"
    image_size: int = 224
    batch_size: int = 64
    steps: int = 0
    epochs: float | None = None  # instead of steps: steps = ceil(epochs x batches per epoch), resolved at start
    recipe: str | None = None  # the --recipe the values came from (recipes.RECIPES), for the record
    seed: int = 0
    # loader
    workers: int = 4
    shuffle_buffer: int = 1000
    interleave: int = 1024  # shards read at once, one sample each in turn (DetCon's tf.data interleave); 0: none
    mix_ranks: bool = False  # every rank reads all shards, so its own batches (not just the global one) mix them
    mask_source: str = "segments"
    colour: bool = True  # False skips every photometric augmentation (geometry only)
    # None: the method's (its table row's ``defaults``), else BYOL's asymmetric pair (DetCon-B, SoCo)
    views: tuple[ViewConfig, ViewConfig] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # DetCon
    feature_stride: int = 32
    num_masks: int = 16
    temperature: float = 0.1
    proj_hidden: int | None = None  # None: the method's (4096; DetCon-S: SimCLR's 2048)
    proj_dim: int | None = None  # None: the method's (256; DetCon-S: SimCLR's 128)
    pred_hidden: int = 4096
    ema_base: float = 0.996
    # BatchNorm per view: each view's batch normalised on its own (DetCon's and SoCo's references run the network
    # per view); false: all views of a step in one BatchNorm batch
    bn_per_view: bool = True
    # network init: the last BN γ of each residual block starts at 0 (None: the method's, see the method table)
    zero_init_residual: bool | None = None
    # the families' own settings (methods/<family>_config.py; the heads' sizes above are shared)
    soco: SoCoConfig = field(default_factory=SoCoConfig)
    detco: DetCoConfig = field(default_factory=DetCoConfig)
    # optimiser: LARS, lr = base_lr * global batch / lr_batch_base, linear warmup then cosine to 0;
    # base_lr / weight_decay / warmup_epochs None → the method's (0.2 / 1.5e-6 / - for DetCon)
    base_lr: float | None = None
    lr_batch_base: int = 256
    weight_decay: float | None = None
    lars_momentum: float = 0.9
    lars_eta: float = 1e-3
    warmup_fraction: float = 0.01
    warmup_epochs: float | None = None  # when set (SoCo: 10), warmup = epochs x batches per epoch
    warmup_steps: int | None = None
    # runtime
    device: str = "auto"
    sync_bn: bool = True
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    progress: bool = True
    stop_at: int | None = None

    def __post_init__(self) -> None:
        spec = METHODS.get(self.method, METHODS[DEFAULT_METHOD])
        shared = {"views": (_view1(), _view2()), "proj_hidden": 4096, "proj_dim": 256}
        for name, value in shared.items():
            if getattr(self, name) is None:
                setattr(self, name, spec.defaults.get(name, value))
        self.views = tuple(v if isinstance(v, ViewConfig) else ViewConfig(**_tuples(v)) for v in self.views)
        for name in ("mean", "std"):
            setattr(self, name, tuple(getattr(self, name)))
        self.soco = sub_config(SoCoConfig, self.soco)
        self.detco = sub_config(DetCoConfig, self.detco)
        for name in ("base_lr", "weight_decay", "warmup_epochs", "zero_init_residual"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(spec, name))

    @property
    def grid_size(self) -> int:
        """Side of the C5 feature grid (7 at 224 px with stride 32)."""
        return self.image_size // self.feature_stride

    @property
    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(math.ceil(self.warmup_fraction * self.steps))

    def warmup_for(self, batches_per_epoch: int) -> int:
        """Warmup steps of a run with ``batches_per_epoch`` steps per epoch: ``warmup_steps``, else
        ``warmup_epochs`` epochs (at most ``steps``), else ``warmup_fraction`` of the steps."""
        if self.warmup_steps is None and self.warmup_epochs is not None:
            return min(self.steps, int(math.ceil(self.warmup_epochs * batches_per_epoch)))
        return self.resolved_warmup_steps

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first bad field; return self."""
        spec = method_spec(self.method)
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.image_size < self.feature_stride or self.image_size % self.feature_stride:
            raise ValueError(f"image_size must be a positive multiple of feature_stride {self.feature_stride}, "
                             f"got {self.image_size}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.steps < (0 if self.epochs is not None else 1):
            raise ValueError(f"steps must be >= 1 (or give epochs), got {self.steps}")
        for name in ("batch_size", "num_masks", "proj_hidden", "proj_dim", "pred_hidden", "lr_batch_base",
                     "log_every", "checkpoint_every", "keep_checkpoints", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.interleave < 0:
            raise ValueError(f"interleave must be >= 0 (0: no interleaving), got {self.interleave}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.ema_base <= 1:
            raise ValueError(f"ema_base must lie in [0, 1], got {self.ema_base}")
        if self.warmup_steps is not None and self.steps and not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must lie in 0..steps, got {self.warmup_steps}")
        if self.mask_source not in ("segments", "ground_truth"):
            raise ValueError(f"mask_source must be 'segments' or 'ground_truth', got {self.mask_source!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if spec.settings:
            getattr(self, spec.settings).validate(self.image_size)
        if len(self.views) != 2:
            raise ValueError("views must hold exactly two view configs")
        for v in self.views:
            lo, hi = v.crop_scale
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {v.crop_scale}")
            if not 0 < v.crop_ratio[0] <= v.crop_ratio[1]:
                raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {v.crop_ratio}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-native dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}")
        values = _tuples(dict(data))
        if "views" in values:
            values["views"] = tuple(ViewConfig(**_tuples(v)) if isinstance(v, Mapping) else v for v in values["views"])
        return cls(**values)


def _tuples(d: Mapping[str, Any]) -> dict[str, Any]:
    """Lists of numbers become tuples (the dataclasses' field types)."""
    return {k: tuple(v) if isinstance(v, list) and k != "views" else v for k, v in d.items()}


# Settings added after runs were saved, whose behaviour before they existed differs from their default: a saved
# config without one ran with the value here. ``complete_saved`` fills it in and ``adopt_legacy`` makes a resumed
# run keep it (an old SoCo run resumes with its FPN without BatchNorm).
LEGACY_VALUES: dict[tuple[str, ...], Any] = {("zero_init_residual",): False, ("soco", "fpn_norm"): False,
                                             ("interleave",): 0, ("soco", "max_tries"): 1,
                                             ("soco", "pad_independently"): False, ("bn_per_view",): False}


def _lacks(saved: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = saved
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return True
        node = node[key]
    return False


def complete_saved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved ``to_dict`` config with the fields it lacks (top-level or inside ``soco``/``detco``) filled in: the
    ``LEGACY_VALUES`` where they apply, else the defaults of its method."""
    defaults = TrainConfig(method=saved.get("method", DEFAULT_METHOD)).to_dict()
    out = {**defaults, **saved}
    for key, value in defaults.items():
        if isinstance(value, dict) and isinstance(saved.get(key), Mapping):
            out[key] = {**value, **saved[key]}
    for path, value in LEGACY_VALUES.items():
        if _lacks(saved, path):
            node = out
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
    return out


def adopt_legacy(cfg: TrainConfig, saved: Mapping[str, Any]) -> list[str]:
    """Set on ``cfg`` the ``LEGACY_VALUES`` of the fields ``saved`` lacks, and the saved values of the fields whose
    default became the method's own (the table row's ``defaults``, e.g. DetCon-S's SimCLR views) where ``saved``
    holds the shared default and ``cfg`` the method's; returns their (dotted) names."""
    adopted = []
    spec = METHODS.get(cfg.method)
    if spec is not None and spec.defaults and saved.get("method") == cfg.method:
        shared, now = TrainConfig(method=DEFAULT_METHOD).to_dict(), cfg.to_dict()
        for name in spec.defaults:
            if saved.get(name) == shared[name] and now[name] != shared[name]:
                setattr(cfg, name, saved[name])
                adopted.append(name)
        cfg.views = tuple(v if isinstance(v, ViewConfig) else ViewConfig(**_tuples(v)) for v in cfg.views)
    for path, value in LEGACY_VALUES.items():
        if _lacks(saved, path):
            node: Any = cfg
            for key in path[:-1]:
                node = getattr(node, key)
            setattr(node, path[-1], value)
            adopted.append(".".join(path))
    return adopted


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Keys (outside ``RUNTIME_FIELDS``) whose values differ between two ``to_dict`` configs, sorted.

    Fields missing from ``saved`` (added after that run was started) count as ``complete_saved`` fills them in,
    so such runs resume.
    """
    full = complete_saved(saved)
    keys = (set(full) | set(current)) - RUNTIME_FIELDS
    return sorted(k for k in keys if full.get(k) != current.get(k, full.get(k)))


def sub_config(cls: type, value: Any) -> Any:
    """A ``SoCoConfig``/``DetCoConfig`` from itself or from its ``to_dict`` mapping (lists → tuples)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{cls.__name__} must be an object, got {type(value).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if "view" in values:
        values["view"] = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(values["view"]).items()}
    return cls(**values)
