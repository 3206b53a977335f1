"""Models: thin flax wrappers around pure per-system functions."""

from .ani import ANIEnsemble, ani_atomic_energies, ani_member_energies

__all__ = ["ANIEnsemble", "ani_atomic_energies", "ani_member_energies"]
