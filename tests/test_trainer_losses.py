"""DetCon-B / DetCon-S losses: equal to lightly's DetConBLoss / DetConSLoss and to a loop written from the
method notes' formula, with duplicate and absent ids; the cross-rank gather in a 2-process gloo group."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from regionshards.trainer.methods.detcon_loss import detcon_b_loss, detcon_s_loss  # noqa: E402

torch.set_num_threads(1)


def random_case(seed: int, b: int, k: int, d: int = 8, n_ids: int = 4) -> tuple:
    """Random predictions/targets and ids; few ids, so duplicates and ids absent from one view are common."""
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(b, k, d, generator=g, dtype=torch.float64) for _ in range(4)]
    m0 = torch.randint(0, n_ids, (b, k), generator=g)
    m1 = torch.randint(0, n_ids, (b, k), generator=g)
    return (*x, m0, m1)


def formula_loss(p0, p1, t0, t1, m0, m1, tau: float = 0.1) -> float:
    """The method notes' loss, one slot at a time (single rank)."""
    p0, p1, t0, t1 = (F.normalize(t, dim=-1) for t in (p0, p1, t0, t1))
    b, k, _ = p0.shape
    total = 0.0
    for pa, other, same, ma, mb in ((p0, t1, t0, m0, m1), (p1, t0, t1, m1, m0)):
        acc = 0.0
        for i in range(b):
            for s in range(k):
                positives = [q for q in range(k) if mb[i, q] == ma[i, s]]
                if not positives:
                    continue  # weight 0: the id is absent from the other view
                duplicates = sum(int(ma[i, q] == ma[i, s]) for q in range(k))
                logits = [float(pa[i, s] @ other[j, q]) / tau for j in range(b) for q in range(k)]
                logits += [float(pa[i, s] @ same[j, q]) / tau for j in range(b) for q in range(k)
                           if not (j == i and ma[i, q] == ma[i, s])]
                top = max(logits)
                lse = top + math.log(sum(math.exp(v - top) for v in logits))
                ce = sum(lse - float(pa[i, s] @ other[i, q]) / tau for q in positives) / len(positives)
                acc += ce / duplicates
        total += acc / (b * k)
    return total


@pytest.mark.parametrize("seed", range(6))
def test_detcon_b_matches_the_formula(seed: int) -> None:
    case = random_case(seed, b=3, k=5)
    assert abs(detcon_b_loss(*case).item() - formula_loss(*case)) < 1e-9


def test_detcon_s_is_b_with_projections_as_targets() -> None:
    p0, p1, _, _, m0, m1 = random_case(11, b=2, k=4)
    assert abs(detcon_s_loss(p0, p1, m0, m1).item() - formula_loss(p0, p1, p0, p1, m0, m1)) < 1e-9


def test_ids_absent_from_the_other_view_give_zero_loss() -> None:
    p0, p1, t0, t1, _, _ = random_case(2, b=2, k=3)
    m0, m1 = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)
    assert detcon_b_loss(p0, p1, t0, t1, m0, m1).item() == 0.0


@pytest.mark.parametrize("seed", range(40))
def test_equal_to_lightly_within_1e5(seed: int) -> None:
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is the test-time reference (test extra)")
    g = torch.Generator().manual_seed(1000 + seed)
    b, k = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 17, (1,), generator=g))
    n_ids = int(torch.randint(1, 8, (1,), generator=g))
    case = [t.float() if t.is_floating_point() else t for t in random_case(seed, b, k, d=32, n_ids=n_ids)]
    ours = detcon_b_loss(*case)
    theirs = lightly_loss.DetConBLoss(temperature=0.1)(*case)
    assert abs(ours.item() - theirs.item()) < 1e-5
    p0, p1, _, _, m0, m1 = case
    assert abs(detcon_s_loss(p0, p1, m0, m1).item() - lightly_loss.DetConSLoss(temperature=0.1)(p0, p1, m0, m1).item()
               ) < 1e-5


def test_gradients_equal_lightly() -> None:
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is the test-time reference (test extra)")
    p0, p1, t0, t1, m0, m1 = [t.float() if t.is_floating_point() else t for t in random_case(7, 4, 16, 32, 5)]
    grads = []
    for fn in (detcon_b_loss, lightly_loss.DetConBLoss()):
        a, b_ = p0.clone().requires_grad_(), p1.clone().requires_grad_()
        fn(a, b_, t0, t1, m0, m1).backward()
        grads.append((a.grad, b_.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6) and torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


# --- cross-rank gather ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, world: int, port: int, folder: str) -> None:
    """One rank: its slice of the batch, losses with gathered targets, DetCon-S gradients (written to a file)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        full = torch.load(Path(folder) / "inputs.pt", weights_only=True)
        b = full["p0"].shape[0] // world
        local = {k: v[rank * b : (rank + 1) * b] for k, v in full.items()}
        out = {"b": detcon_b_loss(local["p0"], local["p1"], local["t0"], local["t1"], local["m0"], local["m1"])}
        try:
            from lightly.loss import DetConBLoss

            out["lightly_b"] = DetConBLoss()(local["p0"], local["p1"], local["t0"], local["t1"], local["m0"],
                                             local["m1"])
        except ImportError:
            pass
        v0, v1 = local["p0"].clone().requires_grad_(), local["p1"].clone().requires_grad_()
        loss_s = detcon_s_loss(v0, v1, local["m0"], local["m1"])
        loss_s.backward()
        out.update(s=loss_s.detach(), grad0=v0.grad, grad1=v1.grad)
        torch.save(out, Path(folder) / f"rank{rank}.pt")
        dist.barrier()  # both ranks done before either tears its gloo pairs down
    finally:
        dist.destroy_process_group()


def test_targets_are_gathered_across_two_gloo_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p0, p1, t0, t1, m0, m1 = [t.float() if t.is_floating_point() else t for t in random_case(5, 6, 8, 16, 4)]
    torch.save({"p0": p0, "p1": p1, "t0": t0, "t1": t1, "m0": m0, "m1": m1}, tmp_path / "inputs.pt")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    mp.spawn(_gather_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # the mean of the ranks' losses over all targets is the single-process loss of the whole batch
    assert abs((ranks[0]["b"] + ranks[1]["b"]).item() / 2 - detcon_b_loss(p0, p1, t0, t1, m0, m1).item()) < 1e-5
    for r in ranks:
        if "lightly_b" in r:
            assert abs(r["b"].item() - r["lightly_b"].item()) < 1e-5
    # DetCon-S: each rank's gradient is that of the summed rank losses (2x the whole-batch mean) for its slice
    a, b_ = p0.clone().requires_grad_(), p1.clone().requires_grad_()
    whole = detcon_s_loss(a, b_, m0, m1)
    (2 * whole).backward()
    assert abs((ranks[0]["s"] + ranks[1]["s"]).item() / 2 - whole.item()) < 1e-5
    for r, part in enumerate(ranks):
        assert torch.allclose(part["grad0"], a.grad[r * 3 : (r + 1) * 3], atol=1e-6)
        assert torch.allclose(part["grad1"], b_.grad[r * 3 : (r + 1) * 3], atol=1e-6)
