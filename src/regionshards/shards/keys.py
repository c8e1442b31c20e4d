"""Sample keys: dot-free, stable names derived from the source (a relative path or a COCO image id).

A key names a sample inside a shard: its members are ``<key>.<field>``. WebDataset readers (and Ray's) split
a member name at the first dot of its base name and skip names that start with ``__``, so keys are restricted
to ``[A-Za-z0-9][A-Za-z0-9_-]*`` of at most ``MAX_KEY_LENGTH`` characters. A key depends only on the source
(never on worker or shard counts), so the same image keeps its key across builds and re-shardings.

Paths: the relative POSIX path without its last suffix, ``/`` replaced by ``_``; any other character outside
``[A-Za-z0-9_-]`` (dots, spaces, non-ASCII) becomes ``_`` and then, because that replacement loses
information, ``_`` plus the first 16 hex digits of the SHA-256 of the UTF-8 path is appended, so that
``café.jpg`` and ``cafè.jpg`` stay apart. The same suffix is added to keys that would start with ``_``/``-``
or be too long. Image ids: the id as 12 decimal digits (COCO's file-name convention).

Two sources that map to the same key are refused (``DuplicateKeyError`` names both): e.g. ``a/b.jpg`` and
``a_b.png``, or one image listed twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

MAX_KEY_LENGTH = 80  # with '.' and a field of <= 16 characters, names fit ustar's 100 bytes
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_-]")
_HASH_DIGITS = 16  # 64 bits: collision odds ~1e-8 even if all 1.3 M ImageNet keys were hashed


class DuplicateKeyError(ValueError):
    """Two sources map to one key; ``key``, ``first`` and ``second`` name them."""

    def __init__(self, key: str, first: str, second: str) -> None:
        super().__init__(f"duplicate sample key {key!r}: from {first!r} and from {second!r}")
        self.key = key
        self.first = first
        self.second = second


def is_valid_key(key: object) -> bool:
    """True for a string usable as a sample key (see the module docstring)."""
    return isinstance(key, str) and len(key) <= MAX_KEY_LENGTH and _KEY_RE.fullmatch(key) is not None


def check_key(key: object) -> str:
    """Return ``key`` unchanged, or raise ValueError saying why it is not a valid key."""
    if not is_valid_key(key):
        raise ValueError(
            f"invalid sample key {key!r}: keys are 1..{MAX_KEY_LENGTH} characters of [A-Za-z0-9_-] "
            "starting with a letter or digit (no dots, no slashes)"
        )
    return key  # type: ignore[return-value]


def _relative_posix(path: str | PurePosixPath) -> PurePosixPath:
    text = str(path).replace("\\", "/") if not isinstance(path, PurePosixPath) else str(path)
    p = PurePosixPath(text)
    if not text or text in (".", "/") or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"a key source path must be relative and inside the source root, got {str(path)!r}")
    return p


def key_from_path(relpath: str | PurePosixPath) -> str:
    """The sample key of an image at ``relpath`` (relative to the source root, ``/`` or ``\\`` separators).

    Examples: ``n01440764/n01440764_10026.JPEG`` → ``n01440764_n01440764_10026``;
    ``photos/my.cat.jpg`` → ``photos_my_cat_<16 hex>``; ``猫.png`` → ``<16 hex>``.

    Raises:
        ValueError: the path is empty, absolute or contains ``..``.
    """
    p = _relative_posix(relpath)
    stem = str(p.with_suffix("")) if p.suffix else str(p)
    slug, replaced = _UNSAFE_RE.subn("_", stem.replace("/", "_"))
    if replaced or len(slug) > MAX_KEY_LENGTH or not slug[:1].isalnum():
        digest = hashlib.sha256(str(p).encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
        head = slug[: MAX_KEY_LENGTH - _HASH_DIGITS - 1]
        slug = f"{head}_{digest}".lstrip("_-")
    return check_key(slug)


def key_from_image_id(image_id: int) -> str:
    """The sample key of a COCO image id: 12 decimal digits (``397133`` → ``000000397133``)."""
    if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id < 0:
        raise ValueError(f"an image id must be a non-negative integer, got {image_id!r}")
    return f"{image_id:012d}"


def check_unique_keys(pairs: Iterable[tuple[str, str]]) -> None:
    """Refuse duplicate keys: ``pairs`` are ``(key, source description)``.

    Raises:
        DuplicateKeyError: naming the key and both sources, for the first duplicate in iteration order.
        ValueError: for an invalid key.
    """
    seen: dict[str, str] = {}
    for key, source in pairs:
        check_key(key)
        if key in seen:
            raise DuplicateKeyError(key, seen[key], source)
        seen[key] = source


def member_sort_key(key: str) -> bytes:
    """Sort key that puts samples in the order of their tar member names (``key + "."`` as bytes).

    Plain string order differs: ``"a" < "a-b"`` but member ``"a-b.jpg" < "a.jpg"`` because ``-`` sorts before
    ``.``. Sorting by ``key + "."`` keeps every sample's members contiguous and in the same order as sorting
    all member names.
    """
    return (key + ".").encode("ascii")
