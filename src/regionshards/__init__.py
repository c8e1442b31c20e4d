"""regionshards: unsupervised segments and proposals for object-level self-supervised pretraining."""

__version__ = "0.1.0"
