"""Input layouts: an ImageNet-style folder, COCO (images + instances JSON), a flat folder, a file list.

Every layout becomes one sorted list of ``ImageRef`` — the plan is cut from it, so the order (and with it the
shard of every image) depends on the source alone. Every regular, non-hidden file under a folder is an input:
a file that is not an image is not skipped silently but recorded as failed with its reason by the worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shards.keys import check_unique_keys, key_from_image_id, key_from_path
from ..shards.records import Source

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
LAYOUTS = ("auto", "imagenet", "coco", "folder", "list")


@dataclass(frozen=True)
class ImageRef:
    """One input: its sample key, where to read it (a local path or a URI), its source and annotations."""

    key: str
    uri: str
    source: Source
    annotations: tuple[dict[str, Any], ...] | None = None
    expected_size: tuple[int, int] | None = None  # (width, height) declared by COCO, checked by the worker


@dataclass(frozen=True)
class SourceListing:
    """The sorted inputs of a source and what was detected about it (recorded in the manifest config)."""

    layout: str
    root: str
    refs: list[ImageRef]
    classes: list[str] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        extra = f", {len(self.classes)} classes" if self.classes else ""
        return f"{self.layout} layout at {self.root}: {len(self.refs)} inputs{extra}"


def _files_under(folder: Path) -> list[Path]:
    """Regular, non-hidden files under ``folder`` (hidden folders skipped too), sorted by relative path."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file():
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def detect_layout(source: Path, annotations: Path | None) -> str:
    """``coco`` with annotations; ``list`` for a .txt/.parquet file; ``imagenet`` for a folder whose images
    all sit in first-level class folders; ``folder`` otherwise."""
    if annotations is not None:
        return "coco"
    if source.is_file():
        if source.suffix.lower() in (".txt", ".parquet"):
            return "list"
        raise ValueError(f"{source}: a source file must be a .txt or .parquet file list")
    if not source.is_dir():
        raise FileNotFoundError(f"source not found: {source}")
    top_files = [p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")]
    class_dirs = [p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not top_files and class_dirs and all(_files_under(d) for d in class_dirs):
        return "imagenet"
    return "folder"


def list_source(source: Path, annotations: Path | None = None, layout: str = "auto") -> SourceListing:
    """The sorted inputs of ``source`` in the given (or detected) layout; duplicate keys are refused."""
    source = Path(source)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if layout == "auto":
        layout = detect_layout(source, annotations)
    if layout == "coco" and annotations is None:
        raise ValueError("the coco layout needs --annotations (an instances_*.json)")
    listing = {
        "imagenet": _imagenet,
        "folder": _folder,
        "list": _file_list,
        "coco": lambda s: _coco(s, annotations),  # type: ignore[arg-type]
    }[layout](source)
    check_unique_keys((r.key, r.source.describe()) for r in listing.refs)
    return listing


def _imagenet(root: Path) -> SourceListing:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    refs = []
    for index, name in enumerate(classes):
        for f in _files_under(root / name):
            rel = f.relative_to(root).as_posix()
            refs.append(ImageRef(key_from_path(rel), str(f), Source(path=rel, class_index=index, class_name=name)))
    refs.sort(key=lambda r: r.source.path or "")
    return SourceListing("imagenet", str(root), refs, classes=classes)


def _folder(root: Path) -> SourceListing:
    refs = []
    for f in _files_under(root):
        rel = f.relative_to(root).as_posix()
        refs.append(ImageRef(key_from_path(rel), str(f), Source(path=rel)))
    return SourceListing("folder", str(root), refs)


def _file_list(path: Path) -> SourceListing:
    """A .txt (one path per line; ``#`` comments and blank lines ignored) or a .parquet with a ``path`` column
    (and optional ``class_name``). Relative paths are relative to the list's folder."""
    base = path.parent
    if path.suffix.lower() == ".txt":
        entries = [
            (line.strip(), None)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "path" not in table.column_names:
            raise ValueError(f"{path}: a Parquet file list needs a 'path' column (has {table.column_names})")
        names = table.column("class_name").to_pylist() if "class_name" in table.column_names else None
        entries = list(zip(table.column("path").to_pylist(), names or [None] * table.num_rows, strict=True))
    classes = sorted({c for _, c in entries if c is not None})
    index = {c: i for i, c in enumerate(classes)}
    refs = []
    for raw, cls in entries:
        if not isinstance(raw, str) or not raw:
            raise ValueError(f"{path}: empty or non-text path entry {raw!r}")
        p = Path(raw)
        full = p if p.is_absolute() or "://" in raw else base / p
        rel = raw if not p.is_absolute() and "://" not in raw else raw.split("://", 1)[-1].lstrip("/")
        source = Source(path=rel, class_index=index.get(cls) if cls else None, class_name=cls)
        refs.append(ImageRef(key_from_path(rel), raw if "://" in raw else str(full), source))
    refs.sort(key=lambda r: r.source.path or "")
    return SourceListing("list", str(path), refs, classes=classes)


def _coco(images_dir: Path, annotations: Path) -> SourceListing:
    if not images_dir.is_dir():
        raise FileNotFoundError(f"COCO image folder not found: {images_dir}")
    try:
        data = json.loads(Path(annotations).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{annotations}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{annotations}: not a COCO instances file (no 'images' list)")
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in data["images"]}
    for ann in data.get("annotations", []):
        if ann.get("image_id") not in by_image:
            raise ValueError(f"{annotations}: annotation {ann.get('id')} names unknown image_id {ann.get('image_id')}")
        by_image[ann["image_id"]].append(ann)
    refs = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        rel = str(img["file_name"])
        anns = tuple(sorted(by_image[img["id"]], key=lambda a: a["id"]))
        size = (int(img["width"]), int(img["height"])) if "width" in img and "height" in img else None
        source = Source(path=rel, image_id=img["id"])
        refs.append(ImageRef(key_from_image_id(img["id"]), str(images_dir / rel), source, anns, size))
    return SourceListing("coco", str(images_dir), refs, categories=list(data.get("categories", [])))
