"""Images per second of a training step, per method (forward of every view, loss, backward, LARS, EMA/momentum).

    python benchmarks/train_step.py [--method METHOD|all] [--markdown FILE]   # CPU
    python benchmarks/train_step.py --cuda [--method all] [--batch-size 256] [--steps 30] [--markdown FILE]   # GPU

The step is the trainer's own (``loop.build`` + the method's ``loss`` + ``LARS`` + ``update_target``) on a
synthetic batch already on the device, so the figure is the model's rate, not the loader's: random uint8 views
normalised on the device, plus per method DetCon's random 7 x 7 grids with K = 16 ids sampled from them,
SoCo's K = 4 random boxes per view pair (sides 16 px to the view's side, levels from their size, ids shared by
the pair) or DetCo's 3 x 3 jigsaw patches. On CUDA: ResNet-50 at 224 px, bf16 autocast, channels_last, cuDNN
autotuning; the first ``--warmup`` steps are not timed and the device is synchronised before reading the clock.
img/s counts samples (DetCon: two 224 px views; SoCo: 224, 224, 112; SoCo*: 224, 224, 192, 112; SoCo-C4: 224,
224; DetCo: two 224 px views and two sets of nine 64 px patches). ``--method`` takes any row of the method table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.lars import learning_rate, peak_learning_rate  # noqa: E402
from regionshards.trainer.loop import build  # noqa: E402
from regionshards.trainer.methods import METHOD_NAMES, method_spec  # noqa: E402
from regionshards.trainer.methods.soco_boxes import assign_levels  # noqa: E402
from regionshards.trainer.methods.soco_views import pair_views, view_sizes  # noqa: E402
from regionshards.trainer.runtime import Runtime, configure_cuda, select_runtime, to_device  # noqa: E402


def synthetic_batch(cfg: TrainConfig, runtime: Runtime) -> dict:
    """Random views in the loader's layout, moved and normalised, plus per method family DetCon's grids and ids,
    SoCo's boxes or DetCo's patches."""
    rng = np.random.default_rng(0)
    b = cfg.batch_size

    def images(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, 256, size=shape, dtype=np.uint8))

    family = method_spec(cfg.method).family
    if family == "detcon":
        s, grid, k = cfg.image_size, cfg.grid_size, cfg.num_masks
        batch = {}
        for v in range(2):
            batch[f"view{v}"] = images(b, 3, s, s)
            grids = torch.from_numpy(rng.integers(0, 6, size=(b, grid, grid)))
            cells = torch.from_numpy(rng.integers(0, grid * grid, size=(b, k)))
            batch[f"grid{v}"] = grids
            batch[f"ids{v}"] = grids.flatten(1).gather(1, cells)
    elif family == "detco":
        size, (_, patch) = cfg.image_size, cfg.detco.sizes(cfg.image_size)
        cells = cfg.detco.grid ** 2
        batch = {"view0": images(b, 3, size, size), "view1": images(b, 3, size, size),
                 "local0": images(b, cells, 3, patch, patch), "local1": images(b, cells, 3, patch, patch)}
    else:
        sizes, k = view_sizes(cfg), cfg.soco.num_boxes
        pairs = len(pair_views(cfg))
        batch = {f"view{v}": images(b, 3, s, s) for v, s in enumerate(sizes)}
        boxes = np.zeros((pairs, 2, b, k, 4))
        levels = np.zeros((pairs, 2, b, k), np.int64)
        for p, v in enumerate(pair_views(cfg)):
            for side, view in enumerate((0, v)):
                s = sizes[view]
                wh = rng.uniform(16, s, size=(b, k, 2))
                xy = rng.uniform(0, 1, size=(b, k, 2)) * (s - wh)
                boxes[p, side] = np.concatenate([xy, xy + wh], -1)
                levels[p, side] = assign_levels(boxes[p, side].reshape(-1, 4), cfg.soco.level_thresholds).reshape(b, k)
        batch.update(boxes=torch.from_numpy(boxes).float(), levels=torch.from_numpy(levels),
                     box_ids=torch.from_numpy(rng.integers(0, 3, size=(pairs, b, k))))
    return to_device(batch, runtime, cfg.mean, cfg.std)


def measure(cfg: TrainConfig, device: str, steps: int, warmup: int) -> float:
    runtime = select_runtime(torch.cuda.is_available(), device, {})
    configure_cuda(runtime)
    method, optimizer = build(cfg, runtime)
    method.train()
    batch = synthetic_batch(cfg, runtime)
    peak = peak_learning_rate(cfg.base_lr, cfg.batch_size)

    def step(i: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(i, cfg.steps, peak, 0)
        loss = method.loss(batch, autocast=runtime.autocast)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.update_target(i, cfg.steps)

    for i in range(warmup):
        step(i)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="detcon-b", choices=[*METHOD_NAMES, "all"])
    parser.add_argument("--cuda", action="store_true", help="ResNet-50 at 224 px in bf16 on the GPU")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    methods = METHOD_NAMES if args.method == "all" else (args.method,)
    rows = []
    for method in methods:
        if args.cuda:
            if not torch.cuda.is_available():
                sys.exit("--cuda: no CUDA device")
            cfg = TrainConfig(method=method, backbone="resnet50", image_size=224, batch_size=args.batch_size,
                              steps=args.warmup + args.steps)
            rate = measure(cfg, "cuda", args.steps, args.warmup)
            rows.append((method, f"{torch.cuda.get_device_name()} ResNet-50 224 px bf16 channels_last",
                         args.batch_size, rate))
            continue
        cases = [("resnet18", 64, 8, 1), ("resnet18", 64, 8, 2), ("resnet50", 224, 8, 1), ("resnet50", 224, 8, 2)]
        for backbone, size, batch, threads in cases:
            torch.set_num_threads(threads)
            cfg = TrainConfig(method=method, backbone=backbone, image_size=size, batch_size=batch, steps=100)
            rate = measure(cfg, "cpu", steps=3, warmup=1)
            rows.append((method, f"CPU {backbone} {size} px float32, {threads} thread(s)", batch, rate))
    lines = [f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; heads 4096 → 256 "
             "(DetCo 128-d, queue 65,536).", "", "| method | case | batch | img/s |", "|---|---|---:|---:|"]
    lines += [f"| {method} | {name} | {batch} | {rate:,.1f} |" for method, name, batch, rate in rows]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
