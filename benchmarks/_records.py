"""Shared by the shard and loader benchmarks: real samples made from the bundled photos."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from regionshards.images import decode_image
from regionshards.proposals import felzenszwalb, selective_search
from regionshards.shards import InputRecord, ProposalsData, SegmentsData, Source

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "data" / "sample" / "coco" / "images").glob("*.jpg"))
CONFIG = {"segments": {"method": "fh", "params": {"scale": 1000, "sigma": 0.8, "min_size": 1000}},
          "proposals": {"method": "selective_search", "params": {"variant": "soco"}},
          "filters": ["ratio3size0308"]}


def photo_record(path: Path, long_side: int, quality: int) -> InputRecord:
    """A bundled photo re-encoded as JPEG at ``long_side`` with its real DetCon segments and SoCo proposals."""
    img = Image.open(path).convert("RGB")
    scale = long_side / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    data = buf.getvalue()
    decoded = decode_image(data)
    labels = felzenszwalb(decoded.rgb, 1000, 0.8, 1000)
    props = selective_search(decoded.rgb)
    h, w = decoded.rgb.shape[:2]
    return InputRecord(
        key="x", source=Source(path.name), image=data, image_format=decoded.format, image_mode=decoded.mode,
        width=w, height=h, segments=SegmentsData.from_labels(labels, "fh", CONFIG["segments"]["params"]),
        proposals=ProposalsData.from_proposals(props, CONFIG["filters"], "selective_search", {"variant": "soco"}),
    )
