"""Pretrained models: registry, readers of the peers' files, phai's safe store."""

from .registry import available, load_arrays, spec

__all__ = ["available", "load_arrays", "spec"]
