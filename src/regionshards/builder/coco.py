"""The COCO layout: an image folder plus an instances JSON, checked field by field before anything is built.

Malformed structure (``images: null``, an image without an integer ``id``, an annotation without ``id`` or
naming an unknown image ...) is a one-line ``SourceError`` naming the field; the content of each annotation
(segmentation, box, category) is checked per image by the worker (``proposals.groundtruth.image_instances``),
which keeps every usable instance's box (masked or not) and drops the rest with a note instead of failing the
image. A ``file_name`` must stay inside the image folder: an absolute path, ``..`` or a symbolic link leading
out is refused here, at plan time.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from ..shards.keys import key_from_image_id
from ..shards.records import Source
from .sources import ImageRef, SourceError, SourceListing, regular_file


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load(annotations: Path) -> dict[str, Any]:
    regular_file(annotations, "annotations")
    try:
        data = json.loads(Path(annotations).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{annotations}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise SourceError(f"{annotations}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{annotations}: not a COCO instances file (the top level is not an object)")
    for name in ("images", "annotations", "categories"):
        if name in data and not isinstance(data[name], list):
            raise SourceError(f"{annotations}: '{name}' must be a list, got {type(data[name]).__name__}")
    if "images" not in data:
        raise SourceError(f"{annotations}: not a COCO instances file (no 'images' list)")
    return data


def _check_image(img: Any, n: int, annotations: Path) -> None:
    where = f"{annotations}: images[{n}]"
    if not isinstance(img, dict):
        raise SourceError(f"{where} is not an object")
    if not _is_int(img.get("id")) or img["id"] < 0:
        raise SourceError(f"{where}: 'id' must be a non-negative integer, got {img.get('id')!r}"[:300])
    if not isinstance(img.get("file_name"), str) or not img["file_name"]:
        raise SourceError(f"{where} (id {img['id']}): 'file_name' must be a non-empty string")
    for dim in ("width", "height"):
        if dim in img and (not _is_int(img[dim]) or img[dim] <= 0):
            raise SourceError(f"{where} (id {img['id']}): '{dim}' must be a positive integer, got {img[dim]!r}"[:300])


def contained(images_dir: Path, file_name: str) -> Path | None:
    """``images_dir / file_name`` if it stays inside ``images_dir`` (lexically and after symbolic links)."""
    rel = PurePosixPath(file_name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or file_name.startswith(("/", "~")):
        return None
    path = images_dir / rel
    try:
        path.resolve().relative_to(images_dir.resolve())
    except ValueError:
        return None
    return path


def list_coco(images_dir: Path, annotations: Path) -> SourceListing:
    """The images of a COCO instances file, sorted by image id, each with its annotations (sorted by id)."""
    if not images_dir.is_dir():
        raise SourceError(f"COCO image folder not found: {images_dir}")
    data = _load(annotations)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for n, img in enumerate(data["images"]):
        _check_image(img, n, annotations)
        if img["id"] in by_image:
            raise SourceError(f"{annotations}: images[{n}]: image id {img['id']} appears twice")
        by_image[img["id"]] = []
    ann_ids: set[int] = set()
    for n, ann in enumerate(data.get("annotations") or []):
        where = f"{annotations}: annotations[{n}]"
        if not isinstance(ann, dict):
            raise SourceError(f"{where} is not an object")
        if not _is_int(ann.get("id")):
            raise SourceError(f"{where}: 'id' must be an integer, got {ann.get('id')!r}"[:300])
        if ann["id"] in ann_ids:
            raise SourceError(f"{where}: annotation id {ann['id']} appears twice")
        ann_ids.add(ann["id"])
        if ann.get("image_id") not in by_image or not _is_int(ann.get("image_id")):
            raise SourceError(f"{where} (id {ann['id']}): unknown image_id {ann.get('image_id')!r}"[:300])
        by_image[ann["image_id"]].append(ann)
    categories = data.get("categories") or []
    if not all(isinstance(c, dict) for c in categories):
        raise SourceError(f"{annotations}: every entry of 'categories' must be an object")
    refs = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        path = contained(images_dir, img["file_name"])
        if path is None:
            raise SourceError(f"{annotations}: image id {img['id']}: file_name {img['file_name']!r} leads outside "
                              f"the image folder {images_dir}"[:400])
        anns = tuple(sorted(by_image[img["id"]], key=lambda a: a["id"]))
        size = (img["width"], img["height"]) if "width" in img and "height" in img else None
        source = Source(path=PurePosixPath(img["file_name"].replace("\\", "/")).as_posix(), image_id=img["id"])
        refs.append(ImageRef(key_from_image_id(img["id"]), str(path), source, anns, size))
    if refs and not any(Path(r.uri).exists() for r in refs):
        raise SourceError(f"none of the {len(refs)} file names in {annotations} exists under {images_dir} "
                          f"(e.g. {refs[0].source.path!r}): is SOURCE the image folder of these annotations?")
    return SourceListing("coco", str(images_dir), refs, categories=list(categories))
