"""images.decode_image: formats, modes, the pixel limit and failure reasons."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from regionshards.images import ImageError, decode_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_png_rgb_round_trips_exactly(rgb: np.ndarray) -> None:
    d = decode_image(encode(Image.fromarray(rgb), "PNG"))
    assert d.format == "PNG" and d.mode == "RGB" and d.extension == "png"
    np.testing.assert_array_equal(d.rgb, rgb)


def test_format_is_sniffed_not_named(rgb: np.ndarray) -> None:
    assert decode_image(encode(Image.fromarray(rgb), "JPEG")).extension == "jpg"


def test_grey_is_replicated(rgb: np.ndarray) -> None:
    d = decode_image(encode(Image.fromarray(rgb[:, :, 0]), "PNG"))
    assert d.mode == "L"
    np.testing.assert_array_equal(d.rgb, np.repeat(rgb[:, :, :1], 3, axis=2))


def test_sixteen_bit_grey_is_scaled(rgb: np.ndarray) -> None:
    grey16 = rgb[:, :, 0].astype(np.uint16) * 257
    d = decode_image(encode(Image.fromarray(grey16), "PNG"))
    assert d.mode.startswith("I")
    np.testing.assert_array_equal(d.rgb[:, :, 0], rgb[:, :, 0])


def test_alpha_is_dropped(rgb: np.ndarray) -> None:
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 10, np.uint8)])
    d = decode_image(encode(Image.fromarray(rgba), "PNG"))
    assert d.mode == "RGBA"
    np.testing.assert_array_equal(d.rgb, rgb)


def test_palette_and_cmyk_decode_to_rgb(rgb: np.ndarray) -> None:
    pal = Image.fromarray(rgb).convert("P")
    np.testing.assert_array_equal(decode_image(encode(pal, "PNG")).rgb, np.asarray(pal.convert("RGB")))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    d = decode_image(encode(cmyk, "JPEG", quality=95))
    assert d.mode == "CMYK" and d.rgb.shape == (20, 30, 3)


@pytest.mark.parametrize(
    "data, reason",
    [(b"", "empty"), (b"definitely not an image", "not-an-image")],
)
def test_bad_bytes_have_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.reason == reason
    with pytest.raises(ImageError) as again:
        decode_image(bytes(data))
    assert again.value.detail == info.value.detail and " at 0x" not in info.value.detail  # a stable detail


def test_truncated_jpeg(rgb: np.ndarray) -> None:
    data = encode(Image.fromarray(rgb), "JPEG")
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.reason == "truncated"


def test_pixel_limit_refuses_before_decoding() -> None:
    # A 20000x20000 PNG header over a tiny body: the limit must trip on the header alone.
    big = encode(Image.new("L", (2000, 2000)), "PNG")
    with pytest.raises(ImageError) as info:
        decode_image(big, max_pixels=1_000_000)
    assert info.value.reason == "too-many-pixels" and "4000000" in info.value.detail
