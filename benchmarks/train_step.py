"""Images per second of a DetCon training step (forward of both views, loss, backward, LARS, EMA).

    python benchmarks/train_step.py [--method detcon-b] [--markdown FILE]              # CPU cases
    python benchmarks/train_step.py --cuda [--batch-size 256] [--steps 30] [--markdown FILE]   # one GPU

The step is the trainer's own (``loop.build`` + ``DetCon.loss`` + ``LARS`` + ``update_target``) on a synthetic
batch already on the device (random uint8 views normalised on the device, random 7 x 7 grids with K = 16 ids
sampled from them), so the figure is the model's rate, not the loader's. On CUDA: ResNet-50 at 224 px, bf16
autocast, channels_last, cuDNN autotuning; the first ``--warmup`` steps are not timed and the device is
synchronised before reading the clock. img/s counts samples (each has two 224 px views).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.lars import learning_rate, peak_learning_rate  # noqa: E402
from regionshards.trainer.loop import build  # noqa: E402
from regionshards.trainer.runtime import configure_cuda, select_runtime  # noqa: E402
from regionshards.trainer.transforms import normalize  # noqa: E402


def synthetic_batch(cfg: TrainConfig, device: torch.device, channels_last: bool) -> tuple[dict, tuple]:
    g = torch.Generator().manual_seed(0)
    b, s, grid, k = cfg.batch_size, cfg.image_size, cfg.grid_size, cfg.num_masks
    batch = {}
    views = []
    for v in range(2):
        x = torch.randint(0, 256, (b, s, s, 3), generator=g, dtype=torch.uint8).permute(0, 3, 1, 2).to(device)
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        views.append(normalize(x, cfg.mean, cfg.std))
        grids = torch.randint(0, 6, (b, grid, grid), generator=g)
        cells = torch.randint(0, grid * grid, (b, k), generator=g)
        batch[f"grid{v}"] = grids.to(device)
        batch[f"ids{v}"] = grids.flatten(1).gather(1, cells).to(device)
    return batch, tuple(views)


def measure(cfg: TrainConfig, device: str, steps: int, warmup: int) -> float:
    runtime = select_runtime(torch.cuda.is_available(), device, {})
    configure_cuda(runtime)
    method, optimizer = build(cfg, runtime)
    method.train()
    batch, views = synthetic_batch(cfg, runtime.device, runtime.channels_last)
    peak = peak_learning_rate(cfg.base_lr, cfg.batch_size)

    def step(i: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(i, cfg.steps, peak, 0)
        loss = method.loss(batch, images=views, autocast=runtime.autocast)
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
    parser.add_argument("--method", default="detcon-b", choices=["detcon-b", "detcon-s"])
    parser.add_argument("--cuda", action="store_true", help="ResNet-50 at 224 px in bf16 on the GPU")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    rows = []
    if args.cuda:
        if not torch.cuda.is_available():
            sys.exit("--cuda: no CUDA device")
        cfg = TrainConfig(method=args.method, backbone="resnet50", image_size=224, batch_size=args.batch_size,
                          steps=args.warmup + args.steps)
        rate = measure(cfg, "cuda", args.steps, args.warmup)
        rows.append((f"{torch.cuda.get_device_name()} ResNet-50 224 px bf16 channels_last", args.batch_size, rate))
    else:
        cases = [("resnet18", 64, 8, 1), ("resnet18", 64, 8, 2), ("resnet50", 224, 8, 1), ("resnet50", 224, 8, 2)]
        for backbone, size, batch, threads in cases:
            torch.set_num_threads(threads)
            cfg = TrainConfig(method=args.method, backbone=backbone, image_size=size, batch_size=batch, steps=100)
            rate = measure(cfg, "cpu", steps=3, warmup=1)
            rows.append((f"CPU {backbone} {size} px float32, {threads} thread(s)", batch, rate))
    lines = [f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; {args.method}, "
             f"K = 16, heads 4096 → 256.", "", "| case | batch | img/s |", "|---|---:|---:|"]
    lines += [f"| {name} | {batch} | {rate:,.1f} |" for name, batch, rate in rows]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
