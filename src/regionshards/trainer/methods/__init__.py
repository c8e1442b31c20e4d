"""The methods the trainer can run, as one table: what a method is, and nothing else.

Every other part of the trainer (config, loader, loop, export, command line) reads this table instead of
spelling a method's name. A method belongs to a *family* whose modules live here, one role each:

* ``<family>_model.py``: ``Model(cfg)``, an ``nn.Module`` holding the networks (``online`` — the module wrapped
  in DDP, one forward call per step — and the momentum/EMA ``target`` if any), its loss and its target update:
  ``loss(batch, online=None, autocast=nullcontext) -> scalar float32`` on a batch whose image tensors are
  normalised float on the device (``runtime.to_device``), and ``update_target(step, total) -> momentum``;
* ``<family>_views.py``: ``make_batch(samples, cfg, rng) -> dict`` — a list of ``iter_shard`` samples to one
  batch of torch tensors (uint8 images ``view0`` …, plus the method's grids, ids, boxes or patches);
* optionally ``<family>_config.py`` (the family's own settings, a ``TrainConfig`` field named ``settings``) and
  helpers named ``<family>_<kind>.py``. Families never import each other; what they share lives in
  ``regionshards.trainer`` (``networks``, ``collectives``, ``decode``, ``transforms``).

A variant within a family (DetCon-B / DetCon-S, SoCo / SoCo* / SoCo-C4) is told apart by ``options``, which
only that family's modules read. No torch here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    """One row of the table.

    Attributes:
        name: the ``--method`` value (and ``config.json``'s ``method``).
        family: prefix of the modules in this package (``detcon`` → ``detcon_model``, ``detcon_views``).
        summary: one line for ``--help``.
        base_lr, weight_decay, warmup_epochs: optimiser defaults (lr per 256 images; warmup in epochs, None:
            ``warmup_fraction`` of the steps) used when the config leaves them unset.
        needs: what the dataset must store: ``"masks"`` (the ``mask_source`` partition), ``"proposals"``
            (proposals with the method's recorded ``proposal_filter``).
        settings: the ``TrainConfig`` field holding the family's own settings (None: top-level fields only).
        optimizer: ``"lars"`` (LARS; biases and norms without weight decay and trust ratio) or ``"sgd"`` (SGD
            with momentum, weight decay on every parameter: MoCo v2's).
        momentum_target: whether the method keeps an EMA / momentum network (its momentum is logged as ``ema``).
        sync_bn: whether BatchNorm becomes SyncBatchNorm on the multi-GPU CUDA path (False keeps per-GPU BN).
        zero_init_residual: the default of ``TrainConfig.zero_init_residual`` (the last BatchNorm γ of every
            residual block starts at 0).
        options: variant switches read by the family's modules only.
        defaults: the method's own defaults of shared ``TrainConfig`` fields (``views``, ``proj_hidden``,
            ``proj_dim``) where they differ from DetCon-B's (used when the config leaves them unset).
    """

    name: str
    family: str
    summary: str
    base_lr: float
    weight_decay: float
    warmup_epochs: float | None = None
    needs: tuple[str, ...] = ()
    settings: str | None = None
    optimizer: str = "lars"
    momentum_target: bool = True
    sync_bn: bool = True
    zero_init_residual: bool = True
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def module(self, kind: str) -> Any:
        """The family's module of ``kind`` (``model``, ``views``, ``config``), imported on first use."""
        return importlib.import_module(f"{__name__}.{self.family}_{kind}")

    @property
    def make_batch(self) -> Callable[..., dict[str, Any]]:
        """``make_batch(samples, cfg, rng)`` of the family's views module."""
        return self.module("views").make_batch

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


def _opts(**kw: Any) -> Mapping[str, Any]:
    return MappingProxyType(kw)


# SimCLR's augmentation (Chen et al. 2020, Appendix A) as ``config.ViewConfig`` fields: crop [0.08, 1], flip,
# colour distortion of strength 1 — jitter (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale p 0.2 — and Gaussian blur
# with p 0.5 (sigma [0.1, 2], kernel 10 % of the side); no solarisation; both views alike.
_SIMCLR_VIEW = {"blur_p": 0.5, "solarize_p": 0.0, "brightness": 0.8, "contrast": 0.8, "saturation": 0.8,
                "hue": 0.2, "jitter_p": 0.8, "grayscale_p": 0.2}


_TABLE = (
    MethodSpec("detcon-b", "detcon", "DetCon-B: BYOL on FH-segment masks (Hénaff et al. 2021)",
               base_lr=0.2, weight_decay=1.5e-6, needs=("masks",), options=_opts(objective="byol")),
    MethodSpec("detcon-s", "detcon", "DetCon-S: SimCLR on FH-segment masks (Hénaff et al. 2021)",
               base_lr=0.2, weight_decay=1.5e-6, needs=("masks",), momentum_target=False,
               options=_opts(objective="simclr"),
               # the DetCon paper: each variant adopts its base method's augmentations and architecture; SimCLR's
               # (Chen et al. 2020, App. A; its head: 2048 → 128): the same view twice, colour strength 1
               defaults=_opts(views=(_SIMCLR_VIEW, _SIMCLR_VIEW), proj_hidden=2048, proj_dim=128)),
    MethodSpec("soco", "soco", "SoCo: BYOL on selective-search boxes, FPN + RoI head (Wei et al. 2021)",
               base_lr=1.0, weight_decay=1e-5, warmup_epochs=10.0, needs=("proposals",), settings="soco",
               options=_opts(star=False)),
    MethodSpec("soco-star", "soco", "SoCo*: SoCo with a fourth view (V2 at S/2) and a 6S/7 crop",
               base_lr=1.0, weight_decay=1e-5, warmup_epochs=10.0, needs=("proposals",), settings="soco",
               options=_opts(star=True)),
    MethodSpec("soco-c4", "soco", "SoCo-C4: SoCo with RoIAlign on C4 and res5 as the head, views V1 and V2",
               base_lr=1.0, weight_decay=1e-5, warmup_epochs=10.0, needs=("proposals",), settings="soco",
               options=_opts(star=False, c4=True)),
    MethodSpec("detco", "detco", "DetCo: MoCo v2 on Res2-Res5, global and jigsaw-local views (Xie et al. 2021)",
               base_lr=0.03, weight_decay=1e-4, warmup_epochs=0.0, settings="detco", optimizer="sgd",
               # MoCo v2 (and OpenSelfSup, which DetCo builds on) keeps per-GPU BN and shuffles the key batch
               # across GPUs; SyncBN would pool the statistics again and make the shuffle pointless. Its ResNet
               # is torchvision's / OpenSelfSup's default: no zero-init of the residual BN γ.
               sync_bn=False, zero_init_residual=False),
)

METHODS: Mapping[str, MethodSpec] = MappingProxyType({m.name: m for m in _TABLE})
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
DEFAULT_METHOD = "detcon-b"


def method_spec(name: str) -> MethodSpec:
    """The table row of ``name``.

    Raises:
        ValueError: not a method of the table (the message lists them).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {METHOD_NAMES}, got {name!r}") from None

