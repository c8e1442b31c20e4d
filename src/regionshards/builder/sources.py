"""Input layouts: an ImageNet-style folder, COCO (images + instances JSON), a flat folder, a file list.

Every layout becomes one sorted list of ``ImageRef`` (the plan permutes it with a seeded permutation). Every
non-hidden entry under a folder is an input: a file that is not an image, a FIFO, a dangling symbolic link, a
folder that cannot be listed or a symbolic-link loop is not skipped silently but becomes a row with its reason.
Symbolic links to folders are followed (a link back to one of its own ancestors is a loop, recorded once).
Paths are stored relative to the source root; a name that is not UTF-8 is stored with ``\\x..`` escapes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shards.keys import check_unique_keys, key_from_path
from ..shards.records import Source
from ..shards.store import is_remote

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
LAYOUTS = ("auto", "imagenet", "coco", "folder", "list")
# URL schemes pyarrow.fs reads; anything else in a list (http://, ftp://) is an input with reason "unsupported".
READABLE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


class SourceError(ValueError):
    """A source that cannot be built at all (a usage error: exit status 2); the message is one line."""


@dataclass(frozen=True)
class ImageRef:
    """One input: its sample key, where to read it (a local path or a URI), its source and annotations."""

    key: str
    uri: str
    source: Source
    annotations: tuple[dict[str, Any], ...] | None = None
    expected_size: tuple[int, int] | None = None  # (width, height) declared by COCO, checked by the worker
    listing_error: tuple[str, str] | None = None  # (reason, detail) when listing already knows it fails


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
        problems = sum(r.listing_error is not None for r in self.refs)
        noted = f", {problems} recorded as failed while listing" if problems else ""
        return f"{self.layout} layout at {self.root}: {len(self.refs)} inputs{extra}{noted}"


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file (a list or an annotations file is read whole: a FIFO would hang the
    driver and ``/dev/zero`` exhaust its memory); else a SourceError."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SourceError(f"{what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise SourceError(f"{what} {path} is not a regular file")
    return path


def display_path(rel: str) -> str:
    """A relative path as stored text: UTF-8 names unchanged, undecodable bytes as ``\\xNN`` escapes."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Entry:
    """One thing found under a folder: its path, its path relative to the root, and why it fails if known."""

    path: Path
    rel: str
    error: tuple[str, str] | None = None


def walk(folder: Path, root: Path | None = None) -> list[Entry]:
    """Every non-hidden non-folder entry under ``folder`` (files, FIFOs, dangling links ...), sorted by path.

    Symbolic links to folders are followed; a link to one of its own ancestors is a ``symlink-loop`` entry and a
    folder that cannot be listed an ``unreadable`` one. ``rel`` is relative to ``root`` (default ``folder``).
    """
    root = root or folder
    out: list[Entry] = []
    _walk(folder, root, set(), out)
    return sorted(out, key=lambda e: e.rel)


def _walk(folder: Path, root: Path, ancestors: set[tuple[int, int]], out: list[Entry]) -> None:
    rel_folder = display_path(folder.relative_to(root).as_posix())
    try:
        st = folder.stat()
        ident = (st.st_dev, st.st_ino)
        if ident in ancestors:
            out.append(Entry(folder, rel_folder, ("symlink-loop", "a symbolic link to one of its own parent folders")))
            return
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        out.append(Entry(folder, rel_folder, ("unreadable", f"folder cannot be listed: {exc.strerror or exc}")))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            _walk(path, root, ancestors | {ident}, out)
        else:
            out.append(Entry(path, display_path(path.relative_to(root).as_posix())))


def _has_entries(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(not e.name.startswith(".") for e in it)
    except OSError:
        return True  # listed later as an unreadable entry


def detect_layout(source: Path, annotations: Path | None) -> str:
    """``coco`` with annotations; ``list`` for a .txt/.parquet file; ``imagenet`` for a folder of first-level
    class folders (all non-empty, at least two, and fewer stray top-level files than classes: the strays are
    recorded as failed inputs, not a reason to lose every label); ``folder`` otherwise."""
    if annotations is not None:
        return "coco"
    if source.exists() and not source.is_dir():
        if source.suffix.lower() in (".txt", ".parquet"):
            return "list"
        raise SourceError(f"{source}: a source file must be a .txt or .parquet file list")
    if not source.is_dir():
        raise SourceError(f"source not found: {source}")
    visible = [p for p in source.iterdir() if not p.name.startswith(".")]
    class_dirs = [p for p in visible if p.is_dir()]
    top_files = [p for p in visible if not p.is_dir()]
    if not class_dirs or not all(_has_entries(d) for d in class_dirs):
        return "folder"
    if not top_files or (len(class_dirs) >= 2 and len(top_files) < len(class_dirs)):
        return "imagenet"
    return "folder"


def list_source(source: str | Path, annotations: Path | None = None, layout: str = "auto") -> SourceListing:
    """The sorted inputs of ``source`` in the given (or detected) layout; an object-store URL (``s3://...``, a
    ``str``) is listed by ``object_source.list_object_source`` (imagenet and folder layouts).

    Raises:
        SourceError: unknown layout, missing source, malformed COCO or list structure, a COCO ``file_name``
            outside the image folder (one line, naming the field or entry).
        DuplicateKeyError: two inputs map to one key.
    """
    from .coco import list_coco

    if isinstance(source, str) and is_remote(source):
        from .object_source import list_object_source

        if layout not in LAYOUTS:
            raise SourceError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        listing = list_object_source(source, annotations, layout)
        check_unique_keys((r.key, r.source.describe()) for r in listing.refs)
        return listing
    source = Path(source)
    if layout not in LAYOUTS:
        raise SourceError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if layout == "auto":
        layout = detect_layout(source, annotations)
    if layout == "coco" and annotations is None:
        raise SourceError("the coco layout needs --annotations (an instances_*.json)")
    if layout in ("imagenet", "folder") and not source.is_dir():
        raise SourceError(f"the {layout} layout needs a folder, got {source}")
    listing = {
        "imagenet": _imagenet,
        "folder": _folder,
        "list": _file_list,
        "coco": lambda s: list_coco(s, annotations),  # type: ignore[arg-type]
    }[layout](source)
    check_unique_keys((r.key, r.source.describe()) for r in listing.refs)
    return listing


def _ref(entry: Entry, source: Source) -> ImageRef:
    return ImageRef(key_from_path(entry.rel), str(entry.path), source, listing_error=entry.error)


def _imagenet(root: Path) -> SourceListing:
    visible = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    folders = [p for p in visible if p.is_dir()]
    classes = [display_path(p.name) for p in folders]
    refs = []
    for index, (folder, name) in enumerate(zip(folders, classes, strict=True)):
        for entry in walk(folder, root):
            refs.append(_ref(entry, Source(path=entry.rel, class_index=index, class_name=name)))
    for p in visible:
        if not p.is_dir():
            rel = display_path(p.name)
            refs.append(_ref(Entry(p, rel, ("stray-file", "a file beside the class folders has no class")),
                             Source(path=rel)))
    refs.sort(key=lambda r: r.source.path or "")
    return SourceListing("imagenet", str(root), refs, classes=classes)


def _folder(root: Path) -> SourceListing:
    refs = [_ref(entry, Source(path=entry.rel)) for entry in walk(root)]
    return SourceListing("folder", str(root), refs)


def _file_list(path: Path) -> SourceListing:
    """A .txt (one path per line; ``#`` comments and blank lines ignored) or a .parquet with a ``path`` column
    (and optional ``class_name``). Relative paths are relative to the list's folder."""
    base = regular_file(path, "file list").parent
    if path.suffix.lower() == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        entries = [(line.strip(), None) for line in text.splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"{path}: not a readable Parquet file list: {exc}") from None
        if "path" not in table.column_names:
            raise SourceError(f"{path}: a Parquet file list needs a 'path' column (has {table.column_names})")
        names = table.column("class_name").to_pylist() if "class_name" in table.column_names else None
        entries = list(zip(table.column("path").to_pylist(), names or [None] * table.num_rows, strict=True))
    classes = sorted({c for _, c in entries if c is not None})
    index = {c: i for i, c in enumerate(classes)}
    refs = []
    for n, (raw, cls) in enumerate(entries, start=1):
        if not isinstance(raw, str) or not raw:
            raise SourceError(f"{path}: entry {n} is an empty or non-text path ({raw!r})")
        scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
        p = Path(raw)
        full = p if p.is_absolute() or scheme else base / p
        rel = raw if not p.is_absolute() and not scheme else raw.split("://", 1)[-1].lstrip("/")
        try:
            key = key_from_path(rel)
        except ValueError as exc:
            raise SourceError(f"{path}: entry {n}: {exc}") from None
        source = Source(path=rel, class_index=index.get(cls) if cls else None, class_name=cls)
        error = None
        if scheme and scheme not in READABLE_SCHEMES:
            error = ("unsupported", f"URL scheme {scheme}:// is not readable here (use a path or one of "
                                    f"{', '.join(s + '://' for s in READABLE_SCHEMES)})")
        refs.append(ImageRef(key, raw if scheme else str(full), source, listing_error=error))
    refs.sort(key=lambda r: r.source.path or "")
    return SourceListing("list", str(path), refs, classes=classes)
