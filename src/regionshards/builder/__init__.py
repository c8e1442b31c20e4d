"""The build: sources → plan → one Ray task per shard (worker) → manifest. Ray is imported only here."""

from .config import config_differences, make_config
from .runner import ConfigMismatchError, run_build
from .sources import ImageRef, SourceListing, list_source

__all__ = ["ConfigMismatchError", "ImageRef", "SourceListing", "config_differences", "list_source", "make_config",
           "run_build"]
