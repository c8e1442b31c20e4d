"""The shards as a Ray Data dataset: one row per sample with the decoded RGB image, its key, label and sample JSON.

It lives in ``builder/`` because Ray is this project's engine and is imported only there; Ray itself is imported
inside ``ray_dataset`` only, so ``import regionshards.builder`` stays light. The shards are read with the safe reader
(``iter_shard``: nothing unpickled, names and sizes checked), one shard per Ray task, so this works where
``ray.data.read_webdataset``'s default decoder does not: on a dataset folder (which also holds ``.parquet`` and
``.json`` files) and with grey and colour JPEGs mixed (its decoder yields 2-D and 3-D arrays, which one tensor
column cannot hold).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ray.data


class _ShardRows:
    """Ray's flat_map function: a ``{"shard", "sha256"}`` row → the shard's sample rows, streamed."""

    def __init__(self, decode: bool, verify_sha256: bool, max_pixels: int) -> None:
        self.decode, self.verify_sha256, self.max_pixels = decode, verify_sha256, max_pixels

    def __call__(self, task: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from ..images import decode_image
        from ..shards.reader import iter_shard

        expected = task["sha256"] if self.verify_sha256 else None
        for sample in iter_shard(task["shard"], expected_sha256=expected):
            meta = sample["json"]
            field = meta["image"]["field"]
            data = sample[field]
            row = {"__key__": sample["__key__"], "__url__": sample["__url__"],
                   "label": meta["source"]["class_index"], "class_name": meta["source"]["class_name"], "json": meta}
            if self.decode:
                # The build's own conversion (grey replicated, alpha dropped, 16-bit scaled), so the stored
                # masks and boxes align with these pixels.
                row["image"] = decode_image(data, self.max_pixels).rgb
            else:
                row["image_bytes"] = data  # one column whatever the format (json.image.format names it)
            yield row


def ray_dataset(
    path: str | os.PathLike[str],
    *,
    decode: bool = True,
    verify_sha256: bool = False,
    max_pixels: int | None = None,
) -> ray.data.Dataset:
    """A lazy ``ray.data.Dataset`` over a built dataset (its folder or ``manifest.json``), one read task per shard.

    Each row: ``__key__`` (str), ``__url__`` (the shard), ``label`` (the source's ``class_index``, None when the
    source has no classes), ``class_name``, ``json`` (the sample JSON as a dict: ``segments.rles``,
    ``proposals.boxes``, ``proposals.filters``, ``ground_truth`` ... — ``docs/format.md`` §4) and ``image``:
    (H, W, 3) uint8 RGB, pixels as stored (EXIF orientation ignored, like the build; decoded with the build's
    ``max_pixels`` unless given). With ``decode=False`` the original image bytes, unchanged, are in
    ``image_bytes`` instead (one column for every format; ``json["image"]["format"]`` names it).

    Imports ray (the ``ray[data]`` dependency) on call; Ray starts a local instance on first use unless
    ``ray.init`` was called. Ray's workers import ``regionshards`` to read the shards: on a cluster it must be
    installed on every node, as for ``regionshards build``. Nothing is read until the dataset is consumed, except
    the manifest, which is checked here. Rows come in manifest order (shard by shard, each in its tar order);
    this dataset's ``context.execution_options.preserve_order`` is set for that.

    Raises:
        FileNotFoundError, ManifestError: ``path`` is not a finished build (from ``open_dataset``).
        ShardError (inside a Ray task error): a shard is damaged, or its sha256 differs (``verify_sha256``).
    """
    import ray.data

    from ..images import DEFAULT_MAX_PIXELS
    from ..shards.reader import open_dataset

    ds = open_dataset(path, parse_json=False)
    if ds.manifest is None:
        raise ValueError(f"{path}: give a dataset folder or its manifest.json (the manifest lists the shards)")
    sha256 = {s["name"]: s["sha256"] for s in ds.manifest["shards"]}
    tasks = [{"shard": url, "sha256": sha256[os.path.basename(url)]} for url in ds.shards]
    if not tasks:
        return ray.data.from_items([])
    if max_pixels is None:  # the build's own limit: every stored image passed it
        max_pixels = int(ds.manifest["config"].get("max_pixels", DEFAULT_MAX_PIXELS))
    rows = _ShardRows(decode, verify_sha256, max_pixels)
    out = ray.data.from_items(tasks, override_num_blocks=len(tasks)).flat_map(rows)
    # Rows in manifest order, as every other reader gives them: Ray Data otherwise emits blocks as tasks finish.
    out.context.execution_options.preserve_order = True
    return out
