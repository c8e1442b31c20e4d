"""DetCon's contrastive losses (Hénaff et al. 2021, eq. 2; google-deepmind/detcon ``utils/losses.py``), equal
to lightly's ``DetConBLoss`` / ``DetConSLoss``.

Notation: B images per rank, K sampled masks per view, D features, W ranks; ``view0`` is the paper's view 1.
For each sampled mask (b, k) of view 0, with temperature τ and L2-normalised vectors:

* logits against every gathered view-1 target (W·B·K of them) and every gathered view-0 target, except the view-0
  targets of the same image with the same id (the mask itself and its duplicates), which are removed;
* positives: the view-1 targets of the same image with the same id, the target spread evenly over them;
* loss ``-w · Σ_pos log softmax / n_pos`` with ``w = 1 / (#duplicates of the id in view 0)``, and ``w = 0`` when
  the id is absent from view 1; mean over the B·K slots; the same with the views swapped; the sum of both.

DetCon-S is the same loss with the projections themselves as targets (gathered with their gradient).
Targets are gathered across ranks (``gather_with_grad``) when a process group with more than one rank exists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..collectives import gather_with_grad, world


def _one_direction(pred_a: Tensor, targets_b: Tensor, targets_a: Tensor, ids_a: Tensor, ids_b: Tensor,
                   offset: int, temperature: float) -> Tensor:
    """Mean over view a's B·K slots of the weighted cross-entropy; targets are (W·B, K, D), this rank at offset."""
    b, k, _ = pred_a.shape
    n = targets_b.shape[0]
    logits_ab = torch.einsum("ikd,jld->ikjl", pred_a, targets_b) / temperature  # (B, K, W·B, K)
    logits_aa = torch.einsum("ikd,jld->ikjl", pred_a, targets_a) / temperature
    own = torch.arange(b, device=pred_a.device) + offset
    same_ab = ids_a[:, :, None] == ids_b[:, None, :]  # (B, K, K): same id in the same image across views
    same_aa = ids_a[:, :, None] == ids_a[:, None, :]
    # remove the same image's view-a targets with the same id (the mask itself and its duplicates)
    removed = torch.zeros(b, k, n, k, dtype=torch.bool, device=pred_a.device)
    removed[torch.arange(b), :, own, :] = same_aa
    logits_aa = logits_aa.masked_fill(removed, float("-inf"))
    logits = torch.cat([logits_ab, logits_aa], dim=2).reshape(b, k, -1)
    log_norm = torch.logsumexp(logits, dim=-1)  # (B, K)
    positives = logits_ab[torch.arange(b), :, own, :]  # (B, K, K): logits against the same image's view b
    n_pos = same_ab.sum(-1)
    pos_mean = (positives * same_ab).sum(-1) / n_pos.clamp(min=1)
    weight = (n_pos > 0).to(pred_a.dtype) / same_aa.sum(-1).to(pred_a.dtype)
    return (weight * (log_norm - pos_mean)).mean()


def detcon_b_loss(pred_view0: Tensor, pred_view1: Tensor, target_view0: Tensor, target_view1: Tensor,
                  mask_view0: Tensor, mask_view1: Tensor, temperature: float = 0.1,
                  gather_distributed: bool = True) -> Tensor:
    """DetCon-B loss (lightly's ``DetConBLoss.forward`` arguments, in the same order).

    Args:
        pred_view0, pred_view1: (B, K, D) float online predictions of the mask-pooled features per view.
        target_view0, target_view1: (B, K, D) float target projections (detach them for BYOL-style training).
        mask_view0, mask_view1: (B, K) integer sampled segment ids (duplicates allowed; equal ids in the two views
            of one image are the positives).
        temperature: τ (0.1).
        gather_distributed: gather the targets from every rank when a process group is initialised.

    Returns:
        Scalar float tensor: the sum of both view orders' mean weighted cross-entropies.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rank, size = world() if gather_distributed else (0, 1)
    b = pred_view0.shape[0]
    pred0, pred1 = F.normalize(pred_view0, dim=-1), F.normalize(pred_view1, dim=-1)
    t0, t1 = target_view0, target_view1
    if size > 1:
        t0, t1 = gather_with_grad(t0), gather_with_grad(t1)
    t0, t1 = F.normalize(t0, dim=-1), F.normalize(t1, dim=-1)
    offset = rank * b
    return (_one_direction(pred0, t1, t0, mask_view0, mask_view1, offset, temperature)
            + _one_direction(pred1, t0, t1, mask_view1, mask_view0, offset, temperature))


def detcon_s_loss(view0: Tensor, view1: Tensor, mask_view0: Tensor, mask_view1: Tensor, temperature: float = 0.1,
                  gather_distributed: bool = True) -> Tensor:
    """DetCon-S loss (lightly's ``DetConSLoss.forward`` arguments): DetCon-B with the projections as targets.

    Args:
        view0, view1: (B, K, D) float mask-pooled projections of the two views (gradients flow through both roles).
        mask_view0, mask_view1: (B, K) integer sampled segment ids.
    """
    return detcon_b_loss(view0, view1, view0, view1, mask_view0, mask_view1, temperature, gather_distributed)
