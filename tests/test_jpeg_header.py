"""The Pillow-free JPEG header walk agrees with Pillow: same header whenever it answers, and the sniff that uses
it gives exactly the Pillow-only sniff's result (header or refusal code) on real and fuzzed JPEGs."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from regionshards.shards.jpeg_header import jpeg_header
from regionshards.shards.validate import ImageHeader, SampleError, sniff_image

PHOTOS = sorted((Path(__file__).resolve().parents[1] / "data" / "sample" / "coco" / "images").glob("*.jpg"))


def _pillow_sniff(data: bytes, max_pixels: int = 32_000_000) -> ImageHeader | str:
    """The sniff as it was before the walk: Pillow only (header, or the refusal's code)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                header = ImageHeader(str(img.format), str(img.mode), int(img.size[0]), int(img.size[1]))
    except Image.DecompressionBombError:
        return "too-many-pixels"
    except Exception:  # noqa: BLE001 - every Pillow refusal, as sniff_image maps them
        return "image-unreadable"
    if header.width * header.height > max_pixels:
        return "too-many-pixels"
    if header.width < 1 or header.height < 1:
        return "image-unreadable"
    return header


def _sniff(data: bytes) -> ImageHeader | str:
    try:
        return sniff_image(data)
    except SampleError as exc:
        return exc.code


def _pil_jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _encodings() -> list[tuple[str, bytes, bool]]:
    """(name, bytes, whether the walk must answer) for the JPEG variants encoders write."""
    img = Image.open(PHOTOS[0]).convert("RGB").resize((96, 64))
    out = [(p.name, p.read_bytes(), False) for p in PHOTOS]  # the bundled files (some carry EXIF or ICC)
    out += [
        ("pil q90", _pil_jpeg(img, quality=90), True),
        ("pil progressive", _pil_jpeg(img, quality=75, progressive=True), True),
        ("pil optimize 4:4:4", _pil_jpeg(img, quality=95, optimize=True, subsampling=0), True),
        ("pil restart markers", _pil_jpeg(img, quality=80, restart_marker_blocks=2), True),
        ("pil comment", _pil_jpeg(img, comment=b"made by a test"), True),
        ("pil grey", _pil_jpeg(img.convert("L")), True),
        ("pil cmyk", _pil_jpeg(img.convert("CMYK")), False),  # Pillow writes an Adobe APP14
        ("pil exif", _pil_jpeg(img, exif=Image.Exif()), False),
        ("pil icc", _pil_jpeg(img, icc_profile=b"\0" * 200), False),
    ]
    bgr = np.asarray(img)[:, :, ::-1]
    for name, params in (("cv2", []), ("cv2 progressive", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                         ("cv2 restart", [cv2.IMWRITE_JPEG_RST_INTERVAL, 3])):
        out.append((name, cv2.imencode(".jpg", bgr, params)[1].tobytes(), True))
    out.append(("cv2 grey", cv2.imencode(".jpg", bgr[:, :, 0])[1].tobytes(), True))
    return out


ENCODINGS = _encodings()


@pytest.mark.parametrize("name", [e[0] for e in ENCODINGS])
def test_the_walk_reports_pillows_header(name: str) -> None:
    _, data, answers = next(e for e in ENCODINGS if e[0] == name)
    reference = _pillow_sniff(data)
    got = jpeg_header(data)
    if answers:
        assert got is not None, name
    if got is not None:
        assert ImageHeader(*got) == reference
    assert _sniff(data) == reference


_PLAIN = [e[1] for e in ENCODINGS if e[2]]


def _segments(data: bytes) -> list[int]:
    """Offsets of the marker segments up to and including SOS (where Pillow stops reading)."""
    out, pos = [], 2
    while True:
        out.append(pos)
        length = (data[pos + 2] << 8) | data[pos + 3]
        if data[pos + 1] == 0xDA:
            return [*out, pos + 2 + length]
        pos += 2 + length


_EDIT = st.tuples(st.sampled_from(["set", "cut", "insert", "drop"]), st.integers(0, 10**6), st.integers(0, 12),
                  st.integers(0, 255))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(_PLAIN))), st.lists(_EDIT, min_size=1, max_size=3))
def test_the_sniff_equals_pillows_on_damaged_headers(which: int, edits: list[tuple[str, int, int, int]]) -> None:
    """Edits land on a segment's marker, length and first payload bytes (where a header goes wrong) or
    anywhere in the header and the start of the scan."""
    data = bytearray(_PLAIN[which])
    starts = _segments(bytes(data))
    for op, where, near, value in edits:
        at = starts[where % len(starts)] + near if near < 12 else where % (starts[-1] + 8)
        if op == "set" and at < len(data):
            data[at] = value
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = bytes([value])
        elif op == "drop" and at < len(data):
            del data[at]
    blob = bytes(data)
    reference = _pillow_sniff(blob)
    got = jpeg_header(blob)
    if got is not None:
        assert ImageHeader(*got) == reference
    assert _sniff(blob) == reference


def test_sizes_pillow_guards_go_to_pillow() -> None:
    """A header over Pillow's bomb limits is left to Pillow (its warning/refusal), and the cap still applies."""
    data = bytearray(_PLAIN[0])
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = bytes([0xFF, 0xFF, 0xFF, 0xFF])  # 65535 x 65535
    assert jpeg_header(bytes(data)) is None
    assert _sniff(bytes(data)) == "too-many-pixels" == _pillow_sniff(bytes(data))


def _spliced(edit) -> bytes:
    """A plain JPEG with its segments (marker byte, payload) edited by ``edit`` and written back."""
    data = _PLAIN[0]
    starts = _segments(data)
    segs = [(data[a + 1], data[a + 4 : b]) for a, b in zip(starts, starts[1:], strict=False)]
    out = bytearray(data[:2])
    for marker, payload, *length in edit(segs):
        out += bytes([0xFF, marker]) + (length[0] if length else len(payload) + 2).to_bytes(2, "big") + payload
    return bytes(out + data[starts[-1] :])


def _sof(segs, payload_edit):
    return [(m, payload_edit(p)) if m == 0xC0 else (m, p) for m, p in segs]


CRAFTED = {
    # (edit of the segment list, whether Pillow reads a header from the result)
    "SOF with one byte past its layers": (lambda segs: _sof(segs, lambda p: p + b"\x01"), False),
    "SOF with a spare layer entry": (lambda segs: _sof(segs, lambda p: p + b"\x04\x11\x00"), True),
    "SOF of 12 bits": (lambda segs: _sof(segs, lambda p: b"\x0c" + p[1:]), False),
    "SOF of 2 layers": (lambda segs: _sof(segs, lambda p: p[:5] + b"\x02" + p[6:12]), False),
    "SOF of width 0": (lambda segs: _sof(segs, lambda p: p[:3] + b"\x00\x00" + p[5:]), False),
    "two SOFs, the second smaller": (lambda segs: [*segs[:-1], (0xC0, b"\x08\x00\x10\x00\x20\x01\x01\x11\x00"),
                                                   segs[-1]], True),
    "no SOF before SOS": (lambda segs: [s for s in segs if s[0] != 0xC0], False),
    "short JFIF APP0": (lambda segs: [(0xE0, b"JFIF\x00") if m == 0xE0 else (m, p) for m, p in segs], False),
    "JFIF APP0 without density": (lambda segs: [(0xE0, b"JFIF\x00\x01\x01") if m == 0xE0 else (m, p)
                                                for m, p in segs], True),
    "non-JFIF APP0": (lambda segs: [(0xE0, b"JFXX\x00\x10") if m == 0xE0 else (m, p) for m, p in segs], True),
    "DQT of 16-bit precision, 8-bit length": (lambda segs: [(m, b"\x10" + p[1:]) if m == 0xDB else (m, p)
                                                            for m, p in segs], False),
    "DQT with a table cut short": (lambda segs: [(m, p[:-1]) if m == 0xDB else (m, p) for m, p in segs], False),
    "empty DQT": (lambda segs: [(0xDB, b""), *segs], True),
    "DHT declaring length 0": (lambda segs: [(0xC4, b"", 0), *segs], True),  # Pillow reads on
    "DHT declaring length 1": (lambda segs: [(0xC4, b"\x00", 1), *segs], True),  # skipping the junk byte
    "COM": (lambda segs: [(0xFE, b"hello"), *segs], True),
    "APP1 of something else": (lambda segs: [(0xE1, b"abc"), *segs], True),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_headers_read_as_pillow_reads_them(name: str) -> None:
    edit, readable = CRAFTED[name]
    blob = _spliced(edit)
    reference = _pillow_sniff(blob)
    assert isinstance(reference, ImageHeader) == readable, reference  # the case is what it says
    got = jpeg_header(blob)
    if got is not None:
        assert ImageHeader(*got) == reference
    assert _sniff(blob) == reference
