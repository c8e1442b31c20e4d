"""Named presets that reproduce the authors' released pretraining runs field by field (``--recipe NAME``).

A recipe is a method, a number of epochs and the ``TrainConfig`` values the official script or config sets;
``docs/trainer.md`` maps every official flag (file and line) to the field here. Values the official runs share
with our defaults are written out anyway, so a recipe stays what it says if a default changes. Options given
on the command line (and a ``--config`` file) win over the recipe. ``batch_size`` is the official batch *per
GPU*: launch on the official number of GPUs (``gpus``) for the official global batch; the learning rate scales
with the global batch either way (``base_lr`` x global / 256). No torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """One official run: ``source`` (the authors' file), ``epochs``, the GPUs of the official run (``gpus``, for
    the global batch), and the ``TrainConfig`` values (``config``, nested objects as dicts)."""

    name: str
    source: str
    epochs: int
    gpus: int
    config: Mapping[str, Any] = field(default_factory=dict)


_SOCO_COMMON = {  # hologerry/SoCo tools/SoCo_FPN_*.sh and contrast/option.py defaults
    "backbone": "resnet50", "image_size": 224, "batch_size": 128, "base_lr": 1.0, "weight_decay": 1e-5,
    "warmup_epochs": 10.0, "lr_batch_base": 256, "lars_momentum": 0.9, "proj_hidden": 4096, "proj_dim": 256,
    "pred_hidden": 4096,
}
_SOCO_SETTINGS = {
    "proposal_filter": "ratio3size0308", "num_boxes": 4, "crop_scale": (0.5, 1.0), "jitter_p": 0.5,
    "jitter_ratio": 0.1, "level_thresholds": (48.0, 96.0, 192.0, 224.0), "fpn_channels": 256, "fpn_norm": True,
    "roi_size": 7, "head_fc": 1024, "ema_base": 0.99, "max_tries": 5, "cutout_p": 0.0, "cutout_ratio": (0.1, 0.3),
}


def _soco(method: str, **settings: Any) -> dict[str, Any]:
    return {"method": method, **_SOCO_COMMON, "soco": {**_SOCO_SETTINGS, **settings}}


_DETCO = {  # OpenSelfSup configs/selfsup/moco/r50_v2.py (MoCo v2) + DetCo's own numbers (eq. 1, Sec. 3.2)
    "method": "detco", "backbone": "resnet50", "image_size": 224, "batch_size": 32, "base_lr": 0.03,
    "lr_batch_base": 256, "weight_decay": 1e-4, "lars_momentum": 0.9, "warmup_epochs": 0.0,
    "zero_init_residual": False,
    "detco": {"queue_size": 65536, "momentum": 0.999, "temperature": 0.2, "dim": 128,
              "level_weights": (0.1, 0.4, 0.7, 1.0), "shuffle_bn": True,
              "view": {"blur_p": 0.5, "solarize_p": 0.0, "crop_scale": (0.2, 1.0), "saturation": 0.4,
                       "brightness": 0.4, "contrast": 0.4, "hue": 0.1, "jitter_p": 0.8, "grayscale_p": 0.2,
                       "blur_sigma": (0.1, 2.0), "flip_p": 0.5}},
}

_RECIPES = (
    Recipe("detcon-b-imagenet", "google-deepmind/detcon detcon_b_config.py (get_config(num_epochs=1000)); paper "
           "Table 1", 1000, 512,
           {"method": "detcon-b", "backbone": "resnet50", "image_size": 224, "batch_size": 8, "base_lr": 0.2,
            "lr_batch_base": 256, "weight_decay": 1.5e-6, "lars_eta": 1e-3, "lars_momentum": 0.9,
            "warmup_epochs": 10.0, "ema_base": 0.996, "temperature": 0.1, "proj_hidden": 4096, "proj_dim": 256,
            "pred_hidden": 4096, "num_masks": 16, "mask_source": "segments", "zero_init_residual": True}),
    Recipe("detcon-b-imagenet-100ep", "google-deepmind/detcon detcon_b_config.py (get_config() defaults)", 100, 512,
           {"method": "detcon-b", "backbone": "resnet50", "image_size": 224, "batch_size": 8, "base_lr": 0.2,
            "lr_batch_base": 256, "weight_decay": 1.5e-6, "lars_eta": 1e-3, "lars_momentum": 0.9,
            "warmup_epochs": 1.0, "ema_base": 0.996, "temperature": 0.1, "proj_hidden": 4096, "proj_dim": 256,
            "pred_hidden": 4096, "num_masks": 16, "mask_source": "segments", "zero_init_residual": True}),
    Recipe("soco-fpn-100ep", "hologerry/SoCo tools/SoCo_FPN_100ep.sh", 100, 16,
           _soco("soco", cutout_p=0.5)),
    Recipe("soco-fpn-400ep", "hologerry/SoCo tools/SoCo_FPN_400ep.sh", 400, 16, _soco("soco")),
    Recipe("soco-star-fpn-400ep", "hologerry/SoCo tools/SoCo_FPN_Star_400ep.sh", 400, 16,
           _soco("soco-star", star_crop_size=192, star_small_size=112)),
    Recipe("soco-c4-100ep", "hologerry/SoCo tools/SoCo_C4_100ep.sh", 100, 16,
           _soco("soco-c4", crop_scale=(0.6, 1.0), jitter_p=0.0, cutout_p=0.5)),
    Recipe("soco-c4-400ep", "hologerry/SoCo tools/SoCo_C4_400ep.sh", 400, 16,
           _soco("soco-c4", crop_scale=(0.6, 1.0), jitter_p=0.0, cutout_p=0.5)),
    Recipe("detco-200ep", "DetCo paper (Xie et al. 2021) Sec. 4 + OpenSelfSup configs/selfsup/moco/r50_v2.py", 200,
           8, _DETCO),
    Recipe("detco-800ep", "DetCo paper (Xie et al. 2021) Sec. 4 (800 epochs) + OpenSelfSup r50_v2.py", 800, 8, _DETCO),
)

RECIPES: Mapping[str, Recipe] = MappingProxyType({r.name: r for r in _RECIPES})


def recipe(name: str) -> Recipe:
    """The recipe of ``name``.

    Raises:
        ValueError: unknown name (the message lists the recipes).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_values(name: str) -> dict[str, Any]:
    """The recipe's ``TrainConfig`` values plus ``epochs`` (tuples as lists, ready to merge with JSON)."""
    found = recipe(name)
    return _jsonable({**found.config, "epochs": found.epochs, "recipe": found.name})


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
