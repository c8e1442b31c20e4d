"""The header of a plain JPEG read without Pillow: what ``Image.open`` would report, for the markers it reads.

``validate.sniff_image`` opens every image member with Pillow to check its header before anything is decoded
(≈ 0.1 ms per sample, a tenth of the trainer loader's per-sample budget, spent in Pillow's per-marker Python
handlers). For the JPEGs an encoder writes (SOI, JFIF APP0, DQT, a baseline/extended/progressive 8-bit SOF,
DHT, DRI, COM, SOS, each segment complete and followed directly by the next marker) ``jpeg_header`` walks
the markers itself and returns what Pillow's ``JpegImagePlugin`` would: format ``JPEG``, the mode its SOF
layer count maps to, width and height. Anything else — another marker (EXIF, ICC and Adobe APPn segments,
MPO's APP2, other SOF types, fill bytes, junk between segments), a second SOF, a segment Pillow would
refuse or that this walk does not model byte for byte — returns ``None`` and the caller asks Pillow. So this
never accepts what Pillow refuses, nor reports another header (tested against Pillow on real JPEGs and on
fuzzed headers in ``tests/test_jpeg_header.py``).
"""

from __future__ import annotations

from typing import NamedTuple

from PIL import Image

_SOF = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended sequential, progressive Huffman DCT
_SKIPPED = frozenset({0xC4, 0xDD, 0xFE})  # DHT, DRI, COM: Pillow reads and stores or skips them
_MODES = {1: "L", 3: "RGB", 4: "CMYK"}


class JpegHeader(NamedTuple):
    """Pillow's ``format``, ``mode`` and ``size`` of a JPEG."""

    format: str
    mode: str
    width: int
    height: int


def _dqt_ok(s: bytes) -> bool:
    # Pillow's DQT loop: tables of 1 + 64 bytes (8-bit) or 1 + 128 (16-bit) until the payload ends
    while s:
        length = 65 if s[0] < 16 else 129
        if len(s) < length:
            return False
        s = s[length:]
    return True


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Pillow's header of ``data`` when it is a plain JPEG (module docstring), else ``None`` (ask Pillow).

    ``None`` is also returned for sizes over ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow warns or refuses there).
    """
    if data[:3] != b"\xff\xd8\xff":
        return None
    end = len(data)
    pos = 2  # Pillow starts at the third byte, 0xFF, and reads the marker after it
    header = None
    while True:
        if pos + 4 > end or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > end:
            return None
        s = data[pos + 4 : pos + 2 + length]
        if marker in _SOF:
            # Pillow: 8 bits per sample, 1/3/4 layers, 3 bytes per layer (a short last layer raises)
            if header is not None or len(s) < 6 or s[0] != 8 or s[5] not in _MODES or len(s) != 6 + 3 * s[5]:
                return None
            height, width = (s[1] << 8) | s[2], (s[3] << 8) | s[4]
            header = JpegHeader("JPEG", _MODES[s[5]], width, height)
        elif marker == 0xDB:
            if not _dqt_ok(s):
                return None
        elif marker == 0xE0:
            if s.startswith(b"JFIF") and len(s) < 12:  # Pillow reads the version and density fields
                return None
        elif marker == 0xDA:  # start of scan: Pillow stops reading here
            if header is None or header.width < 1 or header.height < 1:
                return None
            if Image.MAX_IMAGE_PIXELS is not None and header.width * header.height > Image.MAX_IMAGE_PIXELS:
                return None
            return header
        elif marker not in _SKIPPED:
            return None
        pos += 2 + length
