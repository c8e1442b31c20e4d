"""Trainer loader speed per core: our shard stream vs a torchvision ImageFolder-style PIL + transforms.v2 pipeline.

    python benchmarks/loader.py [--samples 600] [--repeats 3] [--markdown FILE]
    python benchmarks/loader.py --mixing [--markdown FILE]   # distinct classes per batch, no images

``--mixing`` measures batch mixing instead of speed: ImageNet's layout built class-sorted (1000 classes x 1281
images laid end to end into 1024 shards), batches of 64, through the trainer's own epoch plan, interleave and
shuffle buffer (``data.batch_mixing``, labels only), against the i.i.d. expectation (``data.expected_distinct``).

Both pipelines do the same work per sample, in one process on one core (cv2/torch/OpenMP threads set to 1):
read the image and its segments, decode, make two 224 px views (random resized crop area U[0.08, 1], log-aspect
U[3/4, 4/3], flip; image bicubic, mask nearest, the same geometry for both), reduce each view mask to the 7 x 7
majority grid and sample K = 16 ids; (b) adds BYOL's colour augmentations (jitter p 0.8, grayscale p 0.2, blur
p 1.0 / 0.1, solarize p 0 / 0.2). Outputs are uint8 views (normalisation happens on the GPU in training, and
neither pipeline does it here).

* ours: ``regionshards.trainer.data.ShardStream`` (batches of 64) over WebDataset shards of ~50 KB JPEGs with
  their sample JSON (segments as COCO RLE + SoCo proposals): safe tar reader, the validating parser once per
  sample used (its JSON parsed there, once), JPEG decoded by OpenCV to RGB (reduced DCT size when both crops
  allow), ``decode_segments``, cv2/numpy kernels.
* torchvision: an ImageFolder-style folder of the same JPEGs, each with its JSON file; PIL open + convert,
  ``json.load``, ``decode_segments`` for the label map, ``tv_tensors.Mask``, ``transforms.v2`` on (PIL image,
  mask) pairs, avg-pool of the one-hot masks + argmax for the grid, ``torch.randint`` for the ids.

(a) is measured a second time as the trainer runs it by default, in one of 4 loader workers: each worker reads
(and shuffles) its rank's whole stream and decodes every 4th batch, so its rate counts the samples it decodes;
the torchvision side's per-sample work does not depend on workers (its figure is (a)'s again).

Photos: the six bundled COCO photos at a long side of 500 px (ImageNet's mean is 469 x 387), JPEG quality 90,
DetCon FH segments (1000, 0.8, 1000) and SoCo proposals, repeated to ``--samples``. Best of ``--repeats`` epochs.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from _records import CONFIG, PHOTOS, photo_record  # noqa: E402
from regionshards.proposals import decode_segments  # noqa: E402
from regionshards.shards import (  # noqa: E402
    config_hash,
    record_sample,
    write_manifest,
    write_shard,
)
from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.data import ShardStream  # noqa: E402


class FolderPairs(torch.utils.data.Dataset):
    """ImageFolder-style: ``root/<class>/<name>.jpg`` + ``<name>.json``; two DetCon views per item."""

    def __init__(self, root: Path, cfg: TrainConfig) -> None:
        self.paths = sorted(root.glob("*/*.jpg"))
        self.cfg = cfg
        geometry = [v2.RandomResizedCrop(cfg.image_size, scale=v.crop_scale, ratio=v.crop_ratio,
                                         interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
                    for v in cfg.views]
        self.views = []
        for view, geo in zip(cfg.views, geometry, strict=True):
            steps: list = [geo, v2.RandomHorizontalFlip(view.flip_p)]
            if cfg.colour:
                k = int(cfg.image_size * view.blur_kernel_fraction) // 2 * 2 + 1
                steps += [v2.RandomApply([v2.ColorJitter(view.brightness, view.contrast, view.saturation, view.hue)],
                                         p=view.jitter_p),
                          v2.RandomGrayscale(view.grayscale_p),
                          v2.RandomApply([v2.GaussianBlur(k, view.blur_sigma)], p=view.blur_p),
                          v2.RandomSolarize(view.solarize_threshold, p=view.solarize_p)]
            steps.append(v2.PILToTensor())
            self.views.append(v2.Compose(steps))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i]
        image = Image.open(path).convert("RGB")
        meta = json.loads(path.with_suffix(".json").read_text())
        mask = tv_tensors.Mask(torch.from_numpy(decode_segments(meta["segments"]["rles"])))
        out = {}
        for v, transform in enumerate(self.views):
            view, view_mask = transform(image, mask)
            onehot = F.one_hot(view_mask.long(), int(view_mask.max()) + 1).permute(2, 0, 1).float()
            grid = F.avg_pool2d(onehot[None], self.cfg.feature_stride).argmax(1)[0]
            present = grid.unique()
            out[f"view{v}"] = view
            out[f"ids{v}"] = present[torch.randint(0, present.numel(), (self.cfg.num_masks,))]
            out[f"grid{v}"] = grid
        return out


def rate_ours(data: Path, cfg: TrainConfig, repeats: int, workers: int = 0) -> float:
    """Best samples/s over ``repeats`` epochs; with ``workers``, those worker 0 of that many decodes (it reads the
    rank's whole stream, as in training; the stream's own per-worker entry point, without a DataLoader)."""
    best = 0.0
    for epoch in range(repeats):
        stream = ShardStream(data, replace(cfg, seed=epoch), epochs=1)
        batches = stream._epoch(stream.plan(0, workers), 0) if workers else stream
        t = time.perf_counter()
        n = sum(b["view0"].shape[0] for b in batches)
        best = max(best, n / (time.perf_counter() - t))
    return best


def rate_torchvision(folder: Path, cfg: TrainConfig, repeats: int) -> float:
    dataset = FolderPairs(folder, cfg)
    best = 0.0
    for epoch in range(repeats):
        torch.manual_seed(epoch)
        t = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        best = max(best, len(dataset) / (time.perf_counter() - t))
    return best


def mixing_lines(batches: int = 100) -> list[str]:
    """Mean distinct classes per batch of 64 (per rank, and the global batch of all ranks) on class-sorted shards."""
    import numpy as np

    from regionshards.trainer.epoch_plan import batch_mixing, expected_distinct

    labels = np.repeat(np.arange(1000), 1281)
    parts = [p.tolist() for p in np.array_split(labels, 1024)]
    counts = [len(p) for p in parts]
    iid = expected_distinct([1281] * 1000, 64)
    lines = [f"Class-sorted ImageNet layout (1000 classes x 1281, 1024 shards), batch 64 per rank, first {batches} "
             f"batches of epoch 0 per rank; i.i.d. expectation {iid:.1f} per batch of 64.", "",
             "| ranks | interleave | shuffle buffer | distinct classes / batch (mean) | of the global batch | "
             "i.i.d. (global) |", "|---:|---:|---:|---:|---:|---:|"]
    cases = [(world, inter, buf, False) for world in (1, 8)
             for inter, buf in ((0, 1000), (0, 10000), (16, 1000), (64, 1000), (256, 1000), (1024, 1000))]
    for world, inter, buf, mix in [*cases, (8, 1024, 1000, True)]:
        cfg = TrainConfig(batch_size=64, interleave=inter, shuffle_buffer=buf, workers=4, mix_ranks=mix)
        per_rank = batch_mixing(counts, parts, cfg, world_size=world, batches=batches, sets=True)
        sizes = [len(s) for rank in per_rank for s in rank]
        union = [len(set().union(*(rank[b] for rank in per_rank))) for b in range(batches)]
        global_iid = expected_distinct([1281] * 1000, 64 * world)
        lines.append(f"| {world} | {inter or 'none (runs)'}{' + mix_ranks' if mix else ''} | {buf} | "
                     f"{np.mean(sizes):.1f} | {np.mean(union):.1f} | {global_iid:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixing", action="store_true", help="distinct classes per batch instead of speed")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    if args.mixing:
        lines = mixing_lines()
        print("\n".join(lines))
        if args.markdown:
            args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    base = [photo_record(p, 500, 90) for p in PHOTOS]
    records = [replace(base[i % len(base)], key=f"img{i:07d}") for i in range(args.samples)]
    digest = config_hash(CONFIG)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shards, folder = Path(tmp) / "shards", Path(tmp) / "folder"
        shards.mkdir()
        infos = [write_shard(shards, j, records[s : s + 160], config_hash=digest)
                 for j, s in enumerate(range(0, len(records), 160))]
        write_manifest(shards, CONFIG, infos)
        for r in records:
            sample = record_sample(r, digest)
            (folder / "c").mkdir(parents=True, exist_ok=True)
            (folder / "c" / f"{r.key}.jpg").write_bytes(sample["jpg"])
            (folder / "c" / f"{r.key}.json").write_text(json.dumps(sample["json"], separators=(",", ":")))
        for label, colour in (("(a) decode + two views + masks, no colour", False),
                              ("(b) + BYOL colour augmentations", True)):
            cfg = TrainConfig(batch_size=64, colour=colour, shuffle_buffer=64, workers=0)
            ours = rate_ours(shards, cfg, args.repeats)
            theirs = rate_torchvision(folder, cfg, args.repeats)
            rows.append((label, ours, theirs))
            if not colour:
                rows.append(("(a) in one of 4 loader workers (per sample it decodes)",
                             rate_ours(shards, replace(cfg, workers=4), args.repeats, workers=4), theirs))
    mean_px = sum(r.width * r.height for r in base) / len(base) / 1000
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, torchvision {torchvision.__version__}, OpenCV {cv2.__version__}; one core; "
        f"{args.samples} samples (6 photos at long side 500, mean {mean_px:.0f} kpx, JPEG q90); best of "
        f"{args.repeats} epochs.",
        "",
        "| pipeline | ours samples/s | torchvision samples/s | ours / torchvision |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {a:,.0f} | {b:,.0f} | {a / b:.1f}× |" for name, a, b in rows]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
