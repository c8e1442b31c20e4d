"""Watching a run: DetCon's online linear probe and optional TensorBoard scalars.

**Online linear probe** (google-deepmind/detcon ``detcon_b.py`` ``run_detcon_b_forward_on_view`` and
``pretrain_common.py`` ``_classifier_loss``): a linear classifier on the *stop-gradient* mean-pooled final
feature map of the first view, trained alongside with softmax cross-entropy on the dataset's class labels, so
the top-1 accuracy shows how linearly separable the representation becomes while it trains; no label reaches
the network (the official code uses the same ``stop_gradient``). Here it is its own module with its own LARS
(same learning-rate schedule, weight decay and trust ratio as the network's LARS, biases excluded — the
official classifier sits in the online parameters under the one LARS), kept out of the method's state, so
exports and the method's optimizer state are unchanged. It reads the features with a forward hook on the
online trunk's ``layer4`` (C5): the first call in a step is the online network's pass over ``view0`` first
(DetCon: ``cat(view0, view1)``; SoCo: the views of ``view0``'s size; DetCo: the query view), of which the
first B rows are ``view0``. It runs when the dataset records class names (``build`` of an ImageNet-style
folder or a list with classes; at least 2) and skips samples without a class; its gradients are averaged over
the ranks. Logged per step: ``probe_loss`` and ``probe_top1`` (mean over ranks, on the step's own batch, before
the probe's update).

**TensorBoard**: when the ``tensorboard`` package is importable, rank 0 also writes every metrics field as a
scalar under ``RUN/tensorboard`` (``tensorboard --logdir RUN``); without it nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .lars import LARS, param_groups

PROBE_SEED = 0x50524F  # the probe's own init generator: the network's random stream stays as without a probe
_SOURCE_TAIL = ',"source":'


def sample_label(raw: bytes | str | Mapping[str, Any]) -> int:
    """The class index of a sample's JSON (``source.class_index``), or -1 when it has none.

    Sample JSON is canonical (keys sorted, ``source`` last), so only its tail after ``,"source":`` is parsed;
    anything else falls back to parsing the whole document.
    """
    if isinstance(raw, Mapping):
        meta: Any = raw
    else:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        at = text.rfind(_SOURCE_TAIL)
        try:
            meta = json.loads("{" + text[at + 1:]) if at >= 0 else json.loads(text)
        except json.JSONDecodeError:
            meta = json.loads(text)
    source = meta.get("source") if isinstance(meta, Mapping) else None
    value = source.get("class_index") if isinstance(source, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else -1


def batch_labels(samples: Sequence[Mapping[str, Any]]) -> Tensor:
    """(B,) int64 class indices of a batch's samples (-1: no class)."""
    return torch.tensor([sample_label(s["json"]) if "json" in s else -1 for s in samples], dtype=torch.int64)


def dataset_classes(data: str | Path) -> int:
    """Classes a built dataset records (its manifest's build config ``source.classes``); 0 when none."""
    from ..shards import read_manifest
    from .preflight import manifest_source

    config = read_manifest(manifest_source(data)).get("config") or {}
    classes = (config.get("source") or {}).get("classes") or []
    return len(classes) if isinstance(classes, list) else 0


class OnlineProbe:
    """The linear probe of one run (module docstring). ``capture`` hooks the trunk; per step call ``step``."""

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int, weight_decay: float, momentum: float,
                 eta: float, device: torch.device) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PROBE_SEED)
            self.linear = nn.Linear(channels, num_classes).to(device)
        self.optimizer = LARS(param_groups(self.linear, weight_decay), lr=0.0, momentum=momentum, eta=eta)
        self.features: Tensor | None = None
        self.window: list[tuple[Tensor, Tensor]] = []
        self.hook = trunk.layer4.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self.features is None and torch.is_grad_enabled():  # the online pass, not the no-grad target's
            self.features = output.detach()

    def step(self, labels: Tensor, lr: float, world_size: int) -> None:
        """One probe update on the captured features of the step's first view; records loss and top-1."""
        feats, self.features = self.features, None
        if feats is None:
            raise RuntimeError("the online trunk's layer4 did not run this step")
        labels = labels.to(feats.device)
        keep = labels >= 0
        x = feats[: labels.shape[0]].float().mean((2, 3))
        logits = self.linear(x)
        per_sample = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        n = keep.sum().clamp(min=1)
        loss = (per_sample * keep).sum() / n
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world_size > 1:
            grads = [p.grad for p in self.linear.parameters()]
            flat = torch.cat([g.reshape(-1) for g in grads]) / world_size
            dist.all_reduce(flat)
            for g, v in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                g.copy_(v.view_as(g))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        top1 = ((logits.argmax(1) == labels) & keep).sum() / n
        self.window.append((loss.detach(), top1.detach()))

    def flush(self, world_size: int) -> list[dict[str, float]]:
        """``{"probe_loss", "probe_top1"}`` per step since the last flush, means over the ranks."""
        if not self.window:
            return []
        values = torch.stack([torch.stack(w) for w in self.window]).float()
        if world_size > 1:
            dist.all_reduce(values)
            values /= world_size
        self.window = []
        return [{"probe_loss": a, "probe_top1": b} for a, b in values.cpu().tolist()]

    def state_dict(self) -> dict[str, Any]:
        return {"linear": self.linear.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.linear.load_state_dict(state["linear"])
        self.optimizer.load_state_dict(state["optimizer"])


def make_probe(method: nn.Module, num_classes: int, cfg: Any, device: torch.device) -> OnlineProbe | None:
    """The run's probe when the dataset has classes (>= 2) and the online network a ResNet trunk."""
    trunk = getattr(method.online, "backbone", None)
    if num_classes < 2 or trunk is None or not hasattr(trunk, "layer4"):
        return None
    return OnlineProbe(trunk, int(trunk.out_channels), num_classes, cfg.weight_decay, cfg.lars_momentum,
                       cfg.lars_eta, device)


def tensorboard_writer(run: Path) -> Any:
    """A ``SummaryWriter`` on ``RUN/tensorboard`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(Path(run) / "tensorboard"))


def write_scalars(writer: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Every numeric metrics field of each row as a TensorBoard scalar at its step."""
    for row in rows:
        for name, value in row.items():
            if name != "step" and isinstance(value, int | float):
                writer.add_scalar(name, value, row["step"])
    writer.flush()
