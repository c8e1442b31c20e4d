"""DetCo (Xie et al. 2021, eq. 1–5): MoCo v2 with multi-level supervision and global ↔ local contrast.

Query encoder (``online``) and momentum key encoder (``target``, ``k ← m k + (1 - m) q`` with m = 0.999, no
gradient): a ResNet trunk; per level i = Res2..Res5 a global head (avg-pool C_i → Linear(C_i, C_i) → ReLU →
Linear(C_i, 128), MoCo v2's MLP) and a local head over the 9 concatenated avg-pooled patch features
(Linear(9 C_i, C_i) → ReLU → Linear(C_i, 128)); outputs L2-normalised.

Loss with temperature τ, per level i (q: query view 0, k: key view 1; g global, l local):

    L_gg = NCE(q_g, k_g, Queue_g[i]),  L_ll = NCE(q_l, k_l, Queue_l[i]),  L_gl = NCE(q_l, k_g, Queue_g[i])
    L = Σ_i w_i (L_gg + L_ll + L_gl),  w = (0.1, 0.4, 0.7, 1.0)

``NCE(q, k+, Q) = mean_b -log(exp(q·k+/τ) / (exp(q·k+/τ) + Σ_j exp(q·Q_j/τ)))`` (MoCo's cross-entropy with the
positive first). The queues are separate per level and per kind (global keys, local keys): (4, K, 128) float32
buffers with one write pointer; after each loss the keys of the whole global batch (gathered over ranks, so
every rank holds the same queues) replace the oldest K entries (``enqueue``). MoCo's shuffled BN: with several
ranks the key encoder sees the gathered key batch in a random permutation (broadcast from rank 0), one slice per
rank, and the keys are gathered back and unshuffled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..collectives import all_gather, world
from ..config import TrainConfig
from ..networks import ResNetTrunk, ema_update, stage_channels, stage_features


def moco_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """MoCo v2's head: Linear(in → hidden) → ReLU → Linear(hidden → out) (no BatchNorm)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


class DetCoNet(nn.Module):
    """Trunk + per-level global and local heads.

    ``forward(images, patches)`` with images (B, 3, S, S) and patches (B, G², 3, P, P) float returns
    ``(global, local)``: two lists of 4 (B, dim) float32 L2-normalised vectors (Res2..Res5).
    """

    def __init__(self, backbone: str, dim: int, cells: int, *, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(backbone, zero_init_residual=zero_init_residual)
        channels = stage_channels(self.backbone)
        self.global_heads = nn.ModuleList(moco_mlp(c, c, dim) for c in channels)
        self.local_heads = nn.ModuleList(moco_mlp(cells * c, c, dim) for c in channels)
        self.cells = cells

    def forward(self, images: Tensor, patches: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        b = images.shape[0]
        glob = [f.mean((2, 3)) for f in stage_features(self.backbone, images)]
        local = [f.mean((2, 3)).reshape(b, -1) for f in stage_features(self.backbone, patches.flatten(0, 1))]
        out_g = [F.normalize(h(x).float(), dim=1) for h, x in zip(self.global_heads, glob, strict=True)]
        out_l = [F.normalize(h(x).float(), dim=1) for h, x in zip(self.local_heads, local, strict=True)]
        return out_g, out_l


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """Scalar MoCo InfoNCE: q (B, D) against its positive k (B, D) and the negatives queue (K, D), all
    L2-normalised; mean over the batch of the cross-entropy with the positive at index 0."""
    pos = (q * k).sum(1, keepdim=True)
    logits = torch.cat([pos, q @ queue.t()], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def detco_loss(q_g: Sequence[Tensor], q_l: Sequence[Tensor], k_g: Sequence[Tensor], k_l: Sequence[Tensor],
               queue_g: Tensor, queue_l: Tensor, weights: Sequence[float], temperature: float) -> Tensor:
    """Scalar ``Σ_i w_i (NCE(q_g, k_g, Qg_i) + NCE(q_l, k_l, Ql_i) + NCE(q_l, k_g, Qg_i))`` (eq. 1, 2, 5, 4).

    Args:
        q_g, q_l, k_g, k_l: per level (B, D) L2-normalised query/key, global/local vectors (keys detached).
        queue_g, queue_l: (levels, K, D) negatives per level; weights: one per level; temperature: τ.
    """
    total = q_g[0].new_zeros((), dtype=torch.float32)
    for i, w in enumerate(weights):
        kg, kl = k_g[i].float(), k_l[i].float()
        total = total + w * (info_nce(q_g[i], kg, queue_g[i], temperature)
                             + info_nce(q_l[i], kl, queue_l[i], temperature)
                             + info_nce(q_l[i], kg, queue_g[i], temperature))
    return total


class DetCo(nn.Module):
    """Networks, queues and loss of DetCo for one config (``online`` is the module to wrap in DDP)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dc = cfg.detco
        cells = dc.grid ** 2
        zero = bool(cfg.zero_init_residual)
        self.online = DetCoNet(cfg.backbone, dc.dim, cells, zero_init_residual=zero)
        self.target = DetCoNet(cfg.backbone, dc.dim, cells, zero_init_residual=zero)
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        self.register_buffer("queue_global", F.normalize(torch.randn(4, dc.queue_size, dc.dim), dim=2))
        self.register_buffer("queue_local", F.normalize(torch.randn(4, dc.queue_size, dc.dim), dim=2))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys_global: Tensor, keys_local: Tensor) -> None:
        """Write (4, N, D) keys over the oldest queue entries (FIFO, wrapping); the pointer advances by N mod K.

        With N > K only the last K keys are kept.
        """
        size = self.queue_global.shape[1]
        n = keys_global.shape[1]
        if n > size:
            keys_global, keys_local, n = keys_global[:, -size:], keys_local[:, -size:], size
        rows = (int(self.queue_ptr) + torch.arange(n, device=self.queue_ptr.device)) % size
        self.queue_global[:, rows] = keys_global.to(self.queue_global.dtype)
        self.queue_local[:, rows] = keys_local.to(self.queue_local.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + n) % size)

    @torch.no_grad()
    def keys(self, images: Tensor, patches: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Key encoder outputs for this rank's (B, ...) key views, through MoCo's batch shuffle when distributed."""
        rank, size = world()
        if size == 1 or not self.cfg.detco.shuffle_bn:
            return self.target(images, patches)
        all_images, all_patches = all_gather(images), all_gather(patches)
        n = all_images.shape[0]
        perm = torch.randperm(n, device=images.device)
        dist.broadcast(perm, src=0)
        mine = perm.view(size, -1)[rank]
        kg, kl = self.target(all_images[mine], all_patches[mine])
        unshuffle = torch.argsort(perm).view(size, -1)[rank]
        return [all_gather(k)[unshuffle] for k in kg], [all_gather(k)[unshuffle] for k in kl]

    def loss(self, batch: Mapping[str, Tensor], online: nn.Module | None = None,
             autocast: Callable[[], AbstractContextManager] = nullcontext) -> Tensor:
        """Scalar float32 loss of a batch; then enqueues the batch's keys (all ranks').

        Args:
            batch: ``view0``/``view1`` (B, 3, S, S) and ``local0``/``local1`` (B, G², 3, P, P) normalised float
                tensors on the device (query, key; ``runtime.to_device``).
            online: the (possibly DDP-wrapped) query network; defaults to ``self.online``.
            autocast: context for the networks (bf16 on CUDA); logits and loss are float32.
        """
        src = batch
        online = online or self.online
        dc = self.cfg.detco
        with autocast():
            q_g, q_l = online(src["view0"], src["local0"])
        with autocast():
            k_g, k_l = self.keys(src["view1"], src["local1"])
        # copies: the backward pass needs the negatives as they were, and enqueue overwrites the queues
        total = detco_loss(q_g, q_l, k_g, k_l, self.queue_global.clone(), self.queue_local.clone(),
                           dc.level_weights, dc.temperature)
        self.enqueue(torch.stack([all_gather(k) for k in k_g]), torch.stack([all_gather(k) for k in k_l]))
        return total

    @torch.no_grad()
    def update_target(self, step: int, total: int) -> float:
        """Momentum update of the key encoder (constant ``detco.momentum``); returns it."""
        m = self.cfg.detco.momentum
        ema_update(self.target, self.online, m)
        return m


Model = DetCo
