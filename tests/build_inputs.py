"""Small source trees for build tests: real photos (shrunk) plus every kind of awkward input."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"

# Fast parameters for tiny images; the layout is the real one.
FAST = {"fh_scale": 100, "fh_sigma": 0.8, "fh_min_size": 20, "ss_scale": 100, "ss_sigma": 0.9, "ss_min_size": 20}
FAST_ARGS = ["--fh-scale", "100", "--fh-min-size", "20", "--ss-scale", "100", "--ss-min-size", "20"]


def photo(name: str, long_side: int = 64) -> Image.Image:
    path = next(SAMPLE.joinpath("imagenet").rglob(f"{name}.jpg"))
    img = Image.open(path)
    img.load()
    s = long_side / max(img.size)
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)


def save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


def png_bomb_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data (refused before decoding)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_imagenet(root: Path, copies: int = 1, long_side: int = 64) -> Path:
    """Two classes of shrunk sample photos (``copies`` of each, different sizes so bytes differ)."""
    for cls, names in (("animal", ("chelsea", "coffee")), ("object", ("rocket", "coins", "astronaut"))):
        for name in names:
            for c in range(copies):
                save(photo(name, long_side + c), root / cls / f"{name}_{c}.jpg", "JPEG", quality=90)
    return root


def make_awkward(root: Path) -> dict[str, str | None]:
    """An ImageNet-style tree with every awkward input; returns file name → expected failure reason (None: ok)."""
    base = photo("astronaut", 48)
    rgb = np.asarray(base.convert("RGB"))
    expected: dict[str, str | None] = {}

    def put(rel: str, data: bytes, reason: str | None) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expected[rel] = reason

    def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    jpeg = encoded(base.convert("RGB"), "JPEG", quality=90)
    put("a/plain.jpg", jpeg, None)
    put("a/zero.jpg", b"", "empty")
    put("a/truncated.jpg", jpeg[: len(jpeg) // 3], "truncated")
    put("a/notes.jpg", b"these are notes, not an image\n", "not-an-image")
    put("a/bomb.png", png_bomb_header(30000, 30000), "too-many-pixels")
    put("a/cmyk.jpg", encoded(base.convert("RGB").convert("CMYK"), "JPEG"), None)
    put("a/grey16.png", encoded(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257), "PNG"), None)
    put("a/alpha.png", encoded(Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])), "PNG"), None)
    put("b/palette.png", encoded(base.convert("RGB").convert("P"), "PNG"), None)
    put("b/grey.jpg", encoded(base.convert("L"), "JPEG"), None)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    put("b/rotated.jpg", encoded(base.convert("RGB"), "JPEG", exif=exif.tobytes()), None)
    put("b/café crème.jpg", jpeg, None)
    put("b/my.dotted.name.jpg", jpeg, None)
    put("b/png_named_jpg.jpg", encoded(base.convert("RGB"), "PNG"), None)
    return expected


def make_coco(root: Path) -> tuple[Path, Path]:
    """The bundled COCO sample (two images) as a COCO source: (image folder, instances.json)."""
    data = json.loads((SAMPLE / "coco" / "instances.json").read_text())
    keep = [img for img in data["images"] if Path(img["file_name"]).stem in ("chelsea", "coins")]
    ids = {img["id"] for img in keep}
    images = root / "images"
    images.mkdir(parents=True)
    for img in keep:
        (images / img["file_name"]).write_bytes((SAMPLE / "coco" / "images" / img["file_name"]).read_bytes())
    subset = dict(data, images=keep, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    ann = root / "instances.json"
    ann.write_text(json.dumps(subset))
    return images, ann


def jpeg_bytes(long_side: int = 48, name: str = "astronaut") -> bytes:
    buf = io.BytesIO()
    photo(name, long_side).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def lying_jpeg(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header claims ``width`` x ``height`` (the data is far too short for that)."""
    data = bytearray(jpeg_bytes(64))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no SOF marker")


def corrupt_blp() -> bytes:
    """A BLP1 header with an unknown compression: Pillow's plugin raises its own error (not OSError)."""
    return b"BLP1" + b"\x05\0\0\0" + b"\0" * 4 + struct.pack("<II", 64, 64) + b"\0" * 200


def hostile_coco(root: Path) -> tuple[Path, Path, dict[int, dict]]:
    """A COCO source whose annotations hold every unusable kind next to good ones.

    Returns (image folder, instances.json, expectations by image id: ``status``, ``reason``, ``note`` fragments).
    """
    images = root / "images"
    images.mkdir(parents=True)
    good = photo("chelsea", 64).convert("RGB")
    w, h = good.size
    box = [[4, 4, 30, 4, 30, 30, 4, 30]]
    anns, imgs, expect = [], [], {}
    bad = {
        "no segmentation": {"bbox": [1, 1, 10, 10]},
        "two points": {"segmentation": [[1, 1, 5, 5]]},
        "empty polygons": {"segmentation": []},
        "nan": {"segmentation": [[1, 1, float("nan"), 5, 9, 1]]},
        "huge": {"segmentation": [[1, 1, 1e8, 5, 9, 1]]},
        "rle size": {"segmentation": {"size": [h + 1, w], "counts": [(h + 1) * w]}},
        "rle counts": {"segmentation": {"size": [h, w], "counts": "0d"}},
        "category": {"segmentation": box, "category_id": "cat"},
    }
    for n, (what, fields) in enumerate(bad.items(), start=1):
        name = f"img{n}.jpg"
        good.save(images / name, quality=90)
        imgs.append({"id": n, "file_name": name, "width": w, "height": h})
        anns.append({"id": 100 + n, "image_id": n, "category_id": 1, "segmentation": box, "iscrowd": 0})
        anns.append({"id": 200 + n, "image_id": n, "category_id": 1, "iscrowd": 0, **fields})
        if "segmentation" not in fields:
            anns[-1].pop("segmentation", None)
        expect[n] = {"status": "ok", "note": f"annotation {200 + n}:", "what": what}
    # every annotation of image 20 is unusable: with --segments gt it fails, with fh it is ok with a note
    good.save(images / "only_bad.jpg", quality=90)
    imgs.append({"id": 20, "file_name": "only_bad.jpg", "width": w, "height": h})
    anns.append({"id": 300, "image_id": 20, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0})
    expect[20] = {"status": "ok", "note": "annotation 300:", "what": "detection only"}
    data = {"images": imgs, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    ann = root / "instances.json"
    ann.write_text(json.dumps(data, allow_nan=True))
    return images, ann, expect
