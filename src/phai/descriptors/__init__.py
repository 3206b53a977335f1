"""Atomic descriptors: Justin Smith symmetry functions (ANI AEVs) in :mod:`phai.descriptors.aev`."""

from . import aev
from .aev import AEVParams

__all__ = ["AEVParams", "aev"]
