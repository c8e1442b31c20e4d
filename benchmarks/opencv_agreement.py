"""How far OpenCV's graph segmentation is from skimage's FH (the exact backend), and what each costs.

    python benchmarks/opencv_agreement.py [--sizes 224 500]

Prints, per bundled photo and size, the adjusted Rand index between ``backend="opencv"`` and
``backend="exact"`` label maps at the DetCon and SoCo parameters, the segment counts, and the time of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from regionshards.proposals import felzenszwalb  # noqa: E402


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Hubert & Arabie's adjusted Rand index of two label maps of the same shape."""
    a = a.ravel().astype(np.int64)
    b = b.ravel().astype(np.int64)
    n = a.size
    table = np.bincount(a * (b.max() + 1) + b).astype(np.float64)
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    sum_ij = comb(table).sum()
    sum_a = comb(np.bincount(a).astype(np.float64)).sum()
    sum_b = comb(np.bincount(b).astype(np.float64)).sum()
    expected = sum_a * sum_b / comb(float(n))
    maximum = (sum_a + sum_b) / 2
    return 1.0 if maximum == expected else float((sum_ij - expected) / (maximum - expected))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 500])
    args = parser.parse_args()
    photos = sorted((ROOT / "data" / "sample" / "coco" / "images").glob("*.jpg"))
    felzenszwalb(np.zeros((8, 8, 3), np.uint8))
    print("| long side | params | photo | segments exact / opencv | ARI | exact ms | opencv ms |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for size in args.sizes:
        for params in ((1000, 0.8, 1000), (300, 0.9, 100)):
            aris = []
            for path in photos:
                img = np.asarray(Image.open(path).convert("RGB"))
                h, w = img.shape[:2]
                s = size / max(h, w)
                img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
                t = time.perf_counter()
                exact = felzenszwalb(img, *params)
                t_exact = time.perf_counter() - t
                t = time.perf_counter()
                ocv = felzenszwalb(img, *params, backend="opencv")
                t_ocv = time.perf_counter() - t
                ari = adjusted_rand_index(exact, ocv)
                aris.append(ari)
                print(f"| {size} | {params} | {path.stem} | {exact.max() + 1} / {ocv.max() + 1} | {ari:.2f} | "
                      f"{1000 * t_exact:.1f} | {1000 * t_ocv:.1f} |")
            print(f"| {size} | {params} | **median** | | **{statistics.median(aris):.2f}** | | |")


if __name__ == "__main__":
    main()
