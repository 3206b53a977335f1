"""Atomic descriptors: Justin Smith symmetry functions (ANI AEVs)."""

from .aev import AEVParams, aev, angular_terms, radial_terms

__all__ = ["AEVParams", "aev", "radial_terms", "angular_terms"]
