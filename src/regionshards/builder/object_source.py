"""SOURCE on an object store (``s3://bucket/imagenet/train``): the ``imagenet`` and ``folder`` layouts, listed with
one recursive ``get_file_info(FileSelector)`` of the prefix.

The same rules as a local folder (``sources.py``): hidden names (any component starting with ``.``) are skipped,
the layout is detected the same way, a top-level object beside class prefixes is a ``stray-file`` row. An object
key with an empty, ``.`` or ``..`` component is never read (it could name something outside SOURCE); it is a row
with reason ``unsupported``. Workers read each object by its URI (``worker.read_input``), with the credentials
and endpoint of their own environment.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from ..shards.keys import key_from_path
from ..shards.records import Source
from ..shards.store import Store
from .sources import ImageRef, SourceError, SourceListing


def _objects(url: str) -> list[str]:
    """The keys under ``url`` relative to it, sorted; files (objects) only."""
    from pyarrow import fs as pafs

    store = Store(url)
    try:
        infos = store.fs.get_file_info(pafs.FileSelector(store.root, allow_not_found=True, recursive=True))
    except OSError as exc:
        raise SourceError(f"{url}: cannot be listed: {str(exc).splitlines()[0][:300]}") from None
    start = len(store.root) + 1
    return sorted(i.path[start:] for i in infos if i.type == pafs.FileType.File)


def _unsafe(rel: str) -> bool:
    return any(part in ("", ".", "..") for part in rel.split("/"))


def _ref(url: str, rel: str, source: Source, error: tuple[str, str] | None = None) -> ImageRef:
    if _unsafe(rel):
        key = key_from_path("/".join(p if p not in ("", ".", "..") else "_" * (len(p) + 1) for p in rel.split("/")))
        return ImageRef(key, "", source, listing_error=(
            "unsupported", "object key has an empty, '.' or '..' path component; never read"))
    # Percent-encoded, so that '%', '?' and '#' in an object key stay part of it (pyarrow decodes the path).
    return ImageRef(key_from_path(rel), f"{url}/{quote(rel, safe='/')}", source, listing_error=error)


def detect(rels: list[str]) -> str:
    """``imagenet`` when the objects lie in first-level class prefixes (at least two, and fewer stray top-level
    objects than classes, as for a local folder), else ``folder``."""
    classes = {r.split("/", 1)[0] for r in rels if "/" in r}
    top = [r for r in rels if "/" not in r]
    if classes and (not top or (len(classes) >= 2 and len(top) < len(classes))):
        return "imagenet"
    return "folder"


def list_object_source(url: str, annotations: Path | None, layout: str) -> SourceListing:
    """The sorted inputs under an object-store prefix (``imagenet`` or ``folder`` layout).

    Raises:
        SourceError: another layout (COCO annotations and file lists are read from a local path; their entries
            may be URIs), or a prefix that cannot be listed or holds nothing.
    """
    url = url.rstrip("/")
    if annotations is not None or layout in ("coco", "list") or url.lower().endswith((".txt", ".parquet")):
        raise SourceError(f"{url}: an object-store SOURCE is read as an imagenet or folder layout; for COCO or a "
                          "file list give a local annotations file or list (its entries may be s3:// URIs)")
    rels = [r for r in _objects(url) if not any(p.startswith(".") for p in r.split("/") if p not in (".", ".."))]
    if not rels:
        raise SourceError(f"source not found or empty: {url}")
    layout = detect(rels) if layout == "auto" else layout
    if layout == "folder":
        return SourceListing("folder", url, [_ref(url, r, Source(path=r)) for r in rels])
    classes = sorted({r.split("/", 1)[0] for r in rels if "/" in r})
    index = {c: i for i, c in enumerate(classes)}
    refs = []
    for rel in rels:
        head, sep, _ = rel.partition("/")
        if sep:
            refs.append(_ref(url, rel, Source(path=rel, class_index=index[head], class_name=head)))
        else:
            refs.append(_ref(url, rel, Source(path=rel),
                             ("stray-file", "a file beside the class folders has no class")))
    return SourceListing("imagenet", url, refs, classes=classes)
