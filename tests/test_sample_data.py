"""The bundled sample data under data/sample/ is complete, consistent and small."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from regionshards.proposals import decode_mask

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
COCO_DIR = SAMPLE / "coco"
IMAGENET_DIR = SAMPLE / "imagenet"
SCRIPT = ROOT / "scripts" / "make_sample_data.py"
MAX_TOTAL_BYTES = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def coco() -> COCO:
    c = COCO()
    c.dataset = json.loads((COCO_DIR / "instances.json").read_text(encoding="utf-8"))
    c.createIndex()
    return c


def _rle(ann: dict, h: int, w: int) -> dict:
    """The annotation's mask as one compressed RLE, the way pycocotools' COCO.annToRLE builds it."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, h, w)
    return seg


def _decode(rle: dict) -> np.ndarray:
    """(H, W) uint8 mask of a compressed or uncompressed RLE (pycocotools.mask.decode warns under numpy 2)."""
    mask = decode_mask(rle)
    assert mask.shape == tuple(rle["size"])
    return mask


def test_top_level_keys(coco: COCO) -> None:
    d = coco.dataset
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(d)
    licence_ids = {lic["id"] for lic in d["licenses"]}
    for img in d["images"]:
        assert {"id", "file_name", "width", "height", "license"} <= set(img)
        assert img["license"] in licence_ids
    for ann in d["annotations"]:
        assert {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"} <= set(ann)
    assert len({a["id"] for a in d["annotations"]}) == len(d["annotations"])
    assert len({i["id"] for i in d["images"]}) == len(d["images"])
    assert 4 <= len(d["images"]) <= 6


def test_images_exist_with_declared_size(coco: COCO) -> None:
    modes = set()
    for img in coco.dataset["images"]:
        path = COCO_DIR / "images" / img["file_name"]
        assert path.is_file(), path
        with Image.open(path) as im:
            assert im.format == "JPEG"
            assert im.size == (img["width"], img["height"])
            assert max(im.size) <= 512
            assert len(im.getexif()) == 0, f"{path} carries EXIF"
            modes.add(im.mode)
        assert coco.getAnnIds(imgIds=[img["id"]]), f"{img['file_name']} has no annotations"
    assert {"L", "RGB"} <= modes, "want at least one greyscale and one colour photo"


def test_annotations_match_their_masks(coco: COCO) -> None:
    cat_ids = set(coco.getCatIds())
    for ann in coco.dataset["annotations"]:
        img = coco.imgs[ann["image_id"]]
        h, w = img["height"], img["width"]
        assert ann["category_id"] in cat_ids
        assert ann["iscrowd"] in (0, 1)
        if ann["iscrowd"]:
            seg = ann["segmentation"]
            assert isinstance(seg, dict) and isinstance(seg["counts"], list), "crowd must be uncompressed RLE"
            assert seg["size"] == [h, w]
            assert sum(seg["counts"]) == h * w
        else:
            assert isinstance(ann["segmentation"], list) and ann["segmentation"]
            for poly in ann["segmentation"]:
                assert len(poly) % 2 == 0 and len(poly) >= 6
                xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
                assert (xs >= 0).all() and (xs <= w).all() and (ys >= 0).all() and (ys <= h).all()
            assert 8 <= sum(len(p) // 2 for p in ann["segmentation"]) <= 40
        rle = _rle(ann, h, w)
        m = _decode(rle)
        # the decoder above agrees with pycocotools: re-encoding gives pycocotools' own RLE back
        assert mask_utils.encode(np.asfortranarray(m))["counts"] == rle["counts"]
        assert m.shape == (h, w)
        assert m.any(), f"annotation {ann['id']} has an empty mask"
        assert ann["area"] == pytest.approx(float(m.sum()))
        ys, xs = np.nonzero(m)
        tight = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert ann["bbox"] == pytest.approx([float(v) for v in tight])
        x, y, bw, bh = ann["bbox"]
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
        # exactly what pycocotools computes
        assert float(mask_utils.area(rle)) == ann["area"]
        assert [float(v) for v in mask_utils.toBbox(rle)] == ann["bbox"]


def test_crowd_region_and_coco_api(coco: COCO) -> None:
    crowd = [a for a in coco.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd) >= 1
    for ann in coco.dataset["annotations"]:
        rle = coco.annToRLE(ann)
        assert rle["counts"] == _rle(ann, *rle["size"])["counts"]
        assert float(mask_utils.area(rle)) == ann["area"]
    # every image is annotated, and the category index covers every annotation
    assert set(coco.imgToAnns) == set(coco.imgs)
    assert sum(len(coco.getAnnIds(catIds=[c])) for c in coco.getCatIds()) == len(coco.anns)
    assert len(coco.getAnnIds(iscrowd=False)) == len(coco.anns) - len(crowd)


def test_imagenet_folder() -> None:
    classes = sorted(p for p in IMAGENET_DIR.iterdir() if p.is_dir())
    assert len(classes) >= 2
    files = sorted(IMAGENET_DIR.glob("*/*.jpg"))
    assert 6 <= len(files) <= 9
    modes = set()
    for cls in classes:
        assert list(cls.glob("*.jpg")), f"empty class folder {cls.name}"
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG" and max(im.size) <= 512
            im.load()
            modes.add(im.mode)
    assert {"L", "RGB"} <= modes


def test_total_size_is_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total <= MAX_TOTAL_BYTES, f"data/sample is {total} bytes"


def test_readme_lists_every_file() -> None:
    readme = (SAMPLE / "README.md").read_text(encoding="utf-8")
    for p in sorted(SAMPLE.rglob("*")):
        if p.is_file() and p.name != "README.md":
            assert p.relative_to(SAMPLE).as_posix() in readme, p


def test_script_regenerates_the_same_data(tmp_path: Path) -> None:
    pytest.importorskip("skimage.data")
    spec = importlib.util.spec_from_file_location("make_sample_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(tmp_path)]) == 0
    # the annotations depend only on the hand-written vertex lists and pycocotools: byte-identical
    rel = "coco/instances.json"
    assert (tmp_path / rel).read_bytes() == (SAMPLE / rel).read_bytes()
    fresh = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg"))
    bundled = sorted(p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*.jpg"))
    assert fresh == bundled
    # JPEG bytes can differ across libjpeg builds; the decoded pixels must stay (nearly) the same
    for name in fresh:
        with Image.open(tmp_path / name) as a, Image.open(SAMPLE / name) as b:
            assert a.size == b.size and a.mode == b.mode
            diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
            assert diff.mean() < 1.0, name
