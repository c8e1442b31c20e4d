"""The build: sources → plan → one Ray task per shard (worker) → manifest. Ray is imported only here."""

from .config import config_differences, make_config
from .lock import LockedError
from .ray_data import ray_dataset
from .runner import ConfigMismatchError, OutputError, ShardFailedError, StorageError, run_build
from .sources import ImageRef, SourceError, SourceListing, list_source

__all__ = ["ConfigMismatchError", "ImageRef", "LockedError", "OutputError", "ShardFailedError", "SourceError",
           "SourceListing", "StorageError", "config_differences", "list_source", "make_config", "ray_dataset",
           "run_build"]
