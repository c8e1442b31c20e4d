"""Image bytes → (H, W, 3) uint8 RGB, with format sniffing and a pixel limit against decompression bombs.

Policy (recorded with every sample by the shard writer):

* The format is sniffed from the bytes (PIL), never taken from the file name.
* The pixel count is checked from the header *before* decoding; images over ``max_pixels`` are refused.
* EXIF orientation is **ignored**: pixels are used as stored, like PIL's ``Image.open`` and TF's decoders
  that the reference pipelines use, so boxes and masks align with the stored bytes as any loader reads them.
* Modes: grey (L, 1, I;16 …) is replicated to RGB; 16-bit data is scaled with ``round(x / 257)``; palette
  (P) is expanded; CMYK is converted by PIL; alpha (RGBA, LA, PA) is dropped, not composited.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
EXIF_POLICY = "ignored"


class ImageError(ValueError):
    """An input that cannot be used as an image; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    format: str  # PIL format name, e.g. "JPEG", "PNG"
    mode: str  # the stored PIL mode, e.g. "RGB", "L", "CMYK", "I;16"

    @property
    def extension(self) -> str:
        return {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}.get(
            self.format, self.format.lower()
        )


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes to RGB uint8 (see the module docstring for the policy).

    Raises:
        ImageError: reason ``empty``, ``not-an-image``, ``too-many-pixels``, ``truncated`` or ``unsupported``.
    """
    if len(data) == 0:
        raise ImageError("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            # PIL warns on large images; our own limit below decides, with the real number in the message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        # PIL's message names the BytesIO object by its memory address: the detail goes into the index, whose
        # bytes must not change from one run to the next.
        raise ImageError("not-an-image", "cannot identify image file: no format PIL knows matches the bytes") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError("too-many-pixels", str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # The header itself is cut short or corrupt.
        raise ImageError("truncated", str(exc)) from exc
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError("too-many-pixels", f"{width}x{height} = {width * height} pixels > limit {max_pixels}")
    if width == 0 or height == 0:
        raise ImageError("not-an-image", f"empty image {width}x{height}")
    fmt, mode = img.format or "UNKNOWN", img.mode
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("truncated", str(exc)) from exc
    return DecodedImage(to_rgb(img), fmt, mode)


def to_rgb(img: Image.Image) -> np.ndarray:
    """A loaded PIL image → (H, W, 3) uint8 RGB following the module's mode policy."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img).astype(np.int64)
        if img.mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise ImageError("unsupported", f"32-bit integer image with values outside 0..65535 ({img.mode})")
        grey = ((a + 128) // 257).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        raise ImageError("unsupported", "floating-point image mode F")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        return np.ascontiguousarray(np.asarray(img)[:, :, :3])
    if img.mode == "P" and "transparency" in img.info:
        return np.ascontiguousarray(np.asarray(img.convert("RGBA"))[:, :, :3])
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img))
