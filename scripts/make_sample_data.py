#!/usr/bin/env python
"""Regenerate the bundled sample data under ``data/sample/``.

Writes a few public-domain / CC0 photos shipped with scikit-image
(``skimage.data``, available offline) as small JPEGs, in two layouts:

* ``data/sample/imagenet/<class>/<name>.jpg``  - a tiny ImageNet-style folder;
* ``data/sample/coco/images/<name>.jpg`` plus ``data/sample/coco/instances.json``
  - a tiny COCO-style instance-segmentation set whose polygons were traced by
  hand (the vertex lists below) on the written images.

The output is deterministic: re-running the script reproduces the same bytes
(for a given Pillow / libjpeg build).  Usage::

    python scripts/make_sample_data.py [--out DIR]

``--out`` defaults to the repository's ``data/sample``.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from regionshards.proposals import rle_to_counts

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data" / "sample"

JPEG_QUALITY = 90
MAX_SIDE = 512

# --------------------------------------------------------------------------
# Sources: skimage.data loader name -> licence / provenance (from the
# loaders' docstrings in skimage/data/_fetchers.py, scikit-image 0.26).
# --------------------------------------------------------------------------
SOURCES: dict[str, dict[str, str]] = {
    "astronaut": {
        "licence_id": "1",
        "title": "Astronaut Eileen Collins (NASA portrait)",
        "licence": "Public domain (NASA; 'No known copyright restrictions, released into the public domain')",
        "url": "https://flic.kr/p/r9qvLn",
    },
    "camera": {
        "licence_id": "2",
        "title": "Man with a video camera on a tripod (greyscale)",
        "licence": "CC0 (photographer Lav Varshney; 'No copyright restrictions')",
        "url": "https://github.com/scikit-image/scikit-image/issues/3927",
    },
    "chelsea": {
        "licence_id": "2",
        "title": "Chelsea the cat",
        "licence": "CC0 (photographer Stefan van der Walt; 'No copyright restrictions')",
        "url": "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.chelsea",
    },
    "coffee": {
        "licence_id": "2",
        "title": "Coffee cup (courtesy of Pikolo Espresso Bar)",
        "licence": "CC0 (photographer Rachel Michetti; 'No copyright restrictions')",
        "url": "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.coffee",
    },
    "coins": {
        "licence_id": "3",
        "title": "Greek coins from Pompeii (greyscale)",
        "licence": "No known copyright restrictions (Brooklyn Museum Collection)",
        "url": "https://www.brooklynmuseum.org/opencollection/archives/image/51611",
    },
    "rocket": {
        "licence_id": "1",
        "title": "Launch of DSCOVR on Falcon 9 (SpaceX)",
        "licence": "Public domain (released by SpaceX)",
        "url": "https://www.flickr.com/photos/spacexphotos/16511594820/",
    },
}

# COCO "licenses" entries referenced by SOURCES[...]["licence_id"].
LICENSES: list[dict[str, object]] = [
    {"id": 1, "name": "Public domain (NASA / SpaceX release)", "url": ""},
    {"id": 2, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
    {"id": 3, "name": "No known copyright restrictions (Brooklyn Museum)", "url": ""},
]

# ImageNet-style layout: class folder -> source names.
IMAGENET_CLASSES: dict[str, list[str]] = {
    "animal": ["chelsea"],
    "object": ["coffee", "coins", "rocket"],
    "person": ["astronaut", "camera"],
}

# COCO-style layout: image ids are assigned in this order.
COCO_IMAGES: list[str] = ["astronaut", "camera", "chelsea", "coffee", "coins", "rocket"]

CATEGORIES: list[dict[str, object]] = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "cat", "supercategory": "animal"},
    {"id": 3, "name": "cup", "supercategory": "kitchen"},
    {"id": 4, "name": "rocket", "supercategory": "vehicle"},
    {"id": 5, "name": "coin", "supercategory": "object"},
    {"id": 6, "name": "flag", "supercategory": "object"},
    {"id": 7, "name": "helmet", "supercategory": "accessory"},
    {"id": 8, "name": "camera", "supercategory": "electronic"},
    {"id": 9, "name": "spoon", "supercategory": "kitchen"},
]
CAT_ID = {c["name"]: c["id"] for c in CATEGORIES}

# --------------------------------------------------------------------------
# Hand-traced annotations, in pixel coordinates of the *written* JPEGs
# (i.e. after the downscale to a long side of <= 512 px).  Each entry is
# (image, category, [polygon, ...]) with each polygon [x0, y0, x1, y1, ...];
# an object split by an occluder gets one polygon per visible part.  Partial
# on purpose: only the obvious objects are labelled.
# --------------------------------------------------------------------------
# fmt: off
POLYGONS: list[tuple[str, str, list[list[float]]]] = [
    # --- chelsea: the cat (fills most of the frame; head, ears, chest) ---
    ("chelsea", "cat", [[
        40, 0, 398, 0, 385, 22, 372, 45, 365, 70, 360, 95, 358, 125, 352, 160,
        346, 190, 347, 215, 340, 245, 335, 275, 332, 300, 0, 300, 0, 122,
        12, 112, 25, 100, 27, 75, 30, 50, 33, 25,
    ]]),
    # --- coffee: the cup (with handle) and the spoon in front of / behind it ---
    ("coffee", "cup", [[
        245, 16, 285, 20, 320, 35, 340, 55, 348, 80, 348, 107, 345, 127,
        340, 147, 333, 163, 323, 180, 312, 194, 298, 201, 285, 210, 279, 225,
        272, 236, 250, 241, 228, 238, 215, 225, 210, 245, 195, 260, 178, 261,
        167, 247, 168, 222, 178, 205, 186, 197, 170, 185, 155, 160, 148, 130,
        147, 100, 152, 70, 165, 42, 190, 25, 215, 18,
    ]]),
    ("coffee", "spoon", [
        [  # bowl and neck, below the cup
            323, 163, 332, 163, 331, 180, 329, 195, 336, 205, 343, 218, 346, 235,
            344, 252, 337, 268, 325, 278, 308, 280, 292, 275, 282, 262, 277, 245,
            279, 225, 285, 210, 298, 203, 312, 202, 320, 193, 322, 178,
        ],
        [  # end of the handle, above the rim
            340, 62, 347, 57, 356, 57, 362, 63, 360, 75, 355, 88, 350, 100,
            343, 96, 341, 82, 339, 70,
        ],
    ]),
    # --- astronaut: the astronaut, the US flag (left), the helmet (bottom right) ---
    ("astronaut", "person", [[
        230, 15, 267, 27, 287, 47, 297, 73, 293, 100, 283, 120,
        273, 132, 280, 160, 298, 185, 304, 215, 300, 245, 318, 255, 340, 270,
        354, 292, 363, 348, 343, 360, 323, 372, 307, 387, 293, 407,
        285, 433, 281, 460, 281, 512, 32, 512, 20, 410, 25, 350,
        30, 320, 45, 280, 65, 255, 90, 235, 97, 225, 107, 213, 113, 193,
        125, 170, 145, 150, 177, 130, 160, 112, 153, 90, 155, 65, 163, 40,
        185, 22,
    ]]),
    ("astronaut", "flag", [[
        0, 0, 40, 0, 50, 25, 57, 50, 62, 75, 63, 92, 75, 130, 87, 175,
        95, 215, 97, 225, 90, 235, 65, 255, 45, 280, 30, 320, 25, 350,
        20, 410, 32, 512, 0, 512,
    ]]),
    ("astronaut", "helmet", [[
        363, 348, 380, 343, 403, 342, 427, 348, 447, 358, 467, 377, 483, 397,
        493, 420, 497, 443, 500, 457, 508, 460, 512, 470, 512, 512, 281, 512,
        281, 487, 281, 460, 285, 433, 293, 407, 307, 387, 323, 372, 343, 360,
    ]]),
    # --- camera (greyscale): the man and his video camera (tripod not labelled) ---
    ("camera", "person", [[
        197, 68, 237, 78, 253, 93, 260, 105, 262, 122, 253, 137,
        253, 163, 243, 178, 238, 192, 243, 203, 246, 236, 262, 238, 263, 212,
        280, 203, 297, 202, 300, 185, 305, 172, 313, 166, 322, 166, 330, 176,
        333, 190, 323, 207, 315, 230, 312, 243, 303, 270, 283, 287, 257, 302,
        237, 312, 200, 296, 175, 333, 150, 372, 150, 512, 0, 512, 0, 255,
        47, 183, 62, 158, 85, 138, 133, 118, 160, 104, 175, 86,
    ]]),
    ("camera", "camera", [[
        254, 139, 270, 140, 300, 139, 318, 137, 325, 140, 326, 148, 325, 156,
        318, 158, 313, 166, 305, 172, 301, 184, 285, 187, 268, 186, 261, 178,
        261, 160, 254, 153,
    ]]),
    # --- rocket: the Falcon 9 on the pad (towers and pad not labelled) ---
    ("rocket", "rocket", [[
        259, 96, 262, 98, 265, 104, 267, 113, 267, 128, 265, 132, 265, 200,
        265, 260, 265, 325, 250, 325, 250, 260, 249, 200, 250, 132, 249, 128,
        250, 113, 252, 104, 255, 98,
    ]]),
    # --- coins (greyscale): three single coins; the top row is a crowd below ---
    ("coins", "coin", [[  # top right, large
        335, 15.5, 351, 19, 359.5, 27.5, 364, 40, 364, 51, 359.5, 61, 351, 69,
        335, 72, 320, 69, 310, 60, 305.5, 50, 306, 35, 312.5, 25, 322.5, 17.5,
    ]]),
    ("coins", "coin", [[  # third row, right, large
        347, 156, 366, 160, 376, 172, 379, 186, 377, 200, 368, 211, 348, 216,
        330, 212, 319, 202, 315, 187, 318, 172, 328, 161,
    ]]),
    ("coins", "coin", [[  # bottom row, left
        47, 234, 62, 237, 72, 247, 75.5, 262, 72, 277, 62, 287, 47, 290.5,
        33, 287, 22, 277, 19, 262, 22, 248, 33, 237,
    ]]),
]

# One crowd region per COCO convention: given as a polygon here, stored as an
# *uncompressed* RLE ({"counts": [int, ...], "size": [h, w]}) in the JSON.
CROWD: list[tuple[str, str, list[list[float]]]] = [
    # the five smaller coins of the top row, as one loose region
    ("coins", "coin", [[
        21, 56, 30, 38, 44, 33, 60, 37, 73, 46, 85, 41, 100, 38, 116, 42,
        128, 40, 140, 31, 156, 28, 172, 32, 186, 38, 198, 32, 215, 29, 232, 33,
        246, 40, 260, 35, 276, 33, 292, 40, 297, 53, 293, 68, 276, 74, 260, 68,
        246, 66, 234, 70, 215, 74, 196, 70, 186, 66, 174, 71, 156, 75, 138, 70,
        126, 66, 116, 70, 100, 74, 84, 70, 72, 66, 60, 71, 44, 75, 30, 71,
    ]]),
]
# fmt: on


def load_source(name: str) -> np.ndarray:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.dtype != np.uint8:
        raise TypeError(f"skimage.data.{name}() is {arr.dtype}, expected uint8")
    return arr


def to_pil(arr: np.ndarray) -> Image.Image:
    """Array -> PIL image, downscaled (LANCZOS) so that the long side is <= MAX_SIDE."""
    img = Image.fromarray(arr)
    if img.mode not in ("L", "RGB"):
        raise ValueError(f"unexpected mode {img.mode}")
    w, h = img.size
    if max(w, h) > MAX_SIDE:
        scale = MAX_SIDE / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # No exif/icc/comment is passed, so none is written; baseline, no optimisation.
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buf.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def rle_of_polygons(polys: list[list[float]], h: int, w: int) -> dict:
    """Merged RLE of one annotation's polygons, exactly as pycocotools rasterises them."""
    rles = mask_utils.frPyObjects([[float(v) for v in poly] for poly in polys], h, w)
    return mask_utils.merge(rles)


def counts_from_string(s: str | bytes) -> list[int]:
    """Run counts of a compressed COCO RLE string (pycocotools.mask.decode warns under numpy 2)."""
    return [int(c) for c in rle_to_counts({"counts": s})]


def uncompressed_rle(rle: dict) -> dict:
    """Compressed RLE -> uncompressed ``{"counts": [int, ...], "size": [h, w]}`` (same mask).

    Counts are column-major (Fortran order) run lengths, starting with a run of zeros.
    """
    h, w = (int(v) for v in rle["size"])
    counts = counts_from_string(rle["counts"])
    if sum(counts) != h * w:
        raise ValueError("RLE runs do not cover the image")
    return {"counts": counts, "size": [h, w]}


def build_instances(sizes: dict[str, tuple[int, int]]) -> dict:
    image_ids = {name: i + 1 for i, name in enumerate(COCO_IMAGES)}
    images = [
        {
            "id": image_ids[name],
            "file_name": f"{name}.jpg",
            "width": sizes[name][0],
            "height": sizes[name][1],
            "license": int(SOURCES[name]["licence_id"]),
        }
        for name in COCO_IMAGES
    ]
    annotations: list[dict] = []
    for name in COCO_IMAGES:  # annotations grouped by image; crowd regions last
        w, h = sizes[name]
        for cat, polys, crowd in [(c, p, 0) for n, c, p in POLYGONS if n == name] + [
            (c, p, 1) for n, c, p in CROWD if n == name
        ]:
            if crowd:
                seg: object = uncompressed_rle(rle_of_polygons(polys, h, w))
                rle = mask_utils.frPyObjects(seg, h, w)  # uncompressed -> compressed, same mask
            else:
                seg = [[float(v) for v in poly] for poly in polys]
                rle = rle_of_polygons(polys, h, w)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_ids[name],
                    "category_id": CAT_ID[cat],
                    "segmentation": seg,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": crowd,
                }
            )
    return {
        "info": {
            "description": "regionshards sample: skimage.data photos, hand-traced partial annotations",
            "version": "1.0",
            "year": 2025,
            "contributor": "regionshards",
            "url": "",
            "date_created": "2025-01-01",
        },
        "licenses": LICENSES,
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def dump_coco(d: dict) -> str:
    """JSON with one image / annotation / category per line (diff-friendly, compact)."""
    parts = []
    for key, value in d.items():
        if isinstance(value, list):
            rows = ",\n".join("  " + json.dumps(v, separators=(", ", ": ")) for v in value)
            parts.append(f" {json.dumps(key)}: [\n{rows}\n ]")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value, separators=(', ', ': '))}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/sample)")
    args = ap.parse_args(argv)
    out: Path = args.out

    needed = sorted({n for names in IMAGENET_CLASSES.values() for n in names} | set(COCO_IMAGES))
    encoded: dict[str, bytes] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for name in needed:
        img = to_pil(load_source(name))
        encoded[name] = jpeg_bytes(img)
        sizes[name] = img.size

    written: list[Path] = []
    for cls, names in IMAGENET_CLASSES.items():
        for name in names:
            p = out / "imagenet" / cls / f"{name}.jpg"
            write_bytes(p, encoded[name])
            written.append(p)
    for name in COCO_IMAGES:
        p = out / "coco" / "images" / f"{name}.jpg"
        write_bytes(p, encoded[name])
        written.append(p)

    instances = build_instances(sizes)
    p = out / "coco" / "instances.json"
    write_bytes(p, dump_coco(instances).encode("utf-8"))
    written.append(p)

    for p in written:
        print(f"{p.stat().st_size:>8d}  {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
