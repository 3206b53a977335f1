r"""The energy of an electron that only a finite diffuse basis holds on a molecule.

Vertical anions of closed-shell molecules are mostly *unbound*: in a complete basis the extra
electron leaves. A DFT calculation with a finite diffuse basis (6-31+G(d), ma-def2-SVP) still
returns a finite anion energy, with the extra electron in the most diffuse functions the basis
offers. Its energy above the neutral is then mostly the kinetic energy of the most diffuse
orbital those functions can form, a property of the basis and the geometry, not of the
chemistry: one oxygen's diffuse s function (water) gives a much higher value than the
overlapping diffuse functions of ten heavy atoms. Machine-learned potentials trained on
other data (AIMNet2) never saw this; a Δ model on such labels can use it as a feature
(:func:`phai.train.aimnet_me.fit_base_charge_terms` with ``diffuse``).

:func:`diffuse_orbital_energy` is that kinetic energy: the lowest eigenvalue ``w_0`` of

.. math::  T c = w\, S c, \qquad
   S_{ij} = \Bigl(\tfrac{4 a_i a_j}{(a_i + a_j)^2}\Bigr)^{3/4} e^{-\mu_{ij} R_{ij}^2}, \qquad
   T_{ij} = \mu_{ij}\,(3 - 2 \mu_{ij} R_{ij}^2)\, S_{ij}, \qquad \mu_{ij} = \frac{a_i a_j}{a_i + a_j},

over one normalized s Gaussian ``exp(-a_i r^2)`` per atom (the overlap and kinetic-energy
integrals of s Gaussians, Szabo & Ostlund, Appendix A; atomic units, bohr and hartree),
solved by :func:`phai.physics.eigen.generalized_eigh`, so it is differentiable in the
positions (the lowest eigenvalue of a kinetic-energy matrix is not degenerate). One atom
alone gives ``3 a / 2`` hartree.

:data:`DIFFUSE_S_631PLUS` holds the exponents of the diffuse sp shells of 6-31+G(d) (Clark,
Chandrasekhar, Spitznagel and Schleyer, J. Comput. Chem. 4, 294 (1983); the values of PySCF's
basis library, ``tests/test_diffuse.py`` checks them against it). Hydrogen has none in
6-31+G(d).
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from .eigen import generalized_eigh

BOHR_PER_ANGSTROM = 1.0 / 0.529177210903
HARTREE_EV = 27.211386245988

#: Exponents (bohr^-2) of the diffuse sp shell of 6-31+G(d), by atomic number.
DIFFUSE_S_631PLUS = {3: 0.0074, 4: 0.0207, 5: 0.0315, 6: 0.0438, 7: 0.0639, 8: 0.0845, 9: 0.1076, 10: 0.13,
                     11: 0.0076, 12: 0.0146, 13: 0.0318, 14: 0.0331, 15: 0.0348, 16: 0.0405, 17: 0.0483, 18: 0.06,
                     19: 0.0047, 20: 0.0071}

# a padded slot: a function of its own (S = 1, no coupling) far above every real orbital
_PAD_HARTREE = 1.0e3


_PLUS_631 = {"6-31+g(d)", "6-31+g*", "6-31+g(d,p)", "6-31+g**", "6-31+g"}


def _parent_basis(name: str) -> str | None:
    """The basis ``name`` augments (its diffuse functions removed), by the naming conventions:
    ``aug-X`` and ``ma-X`` (Dunning, Truhlar) -> ``X``; ``6-31++G*`` -> ``6-31G*`` (Pople);
    ``def2-XD`` -> ``def2-X`` (Rappoport and Furche's property-optimized diffuse sets); else None."""
    import re

    n = name.lower().replace(" ", "")
    if n.startswith("aug-"):
        return n[4:]
    if n.startswith("ma-"):
        return n[3:]
    if "+" in n:
        return n.replace("+", "")
    if re.fullmatch(r"def2-\w+pd", n):
        return n[:-1]
    return None


def diffuse_s_table(basis: str) -> dict:
    """``{Z: exponent bohr^-2}``: the most diffuse s function that ``basis`` adds to each element
    over the basis it augments (the s exponents of ``aug-cc-pVDZ`` that ``cc-pVDZ`` lacks, of
    ``6-31++G(d)`` that ``6-31G(d)`` lacks, ...), from PySCF's basis library; elements it adds
    none to (hydrogen in 6-31+G(d)) are left out. 6-31+G(d) spellings give
    :data:`DIFFUSE_S_631PLUS` without PySCF.

    Raises:
      InputError: a basis without diffuse functions by its name (``cc-pVDZ``: the term models an
        electron only diffuse functions hold), one PySCF does not know, or PySCF missing.
    """
    name = str(basis).strip()
    if name.lower().replace(" ", "") in _PLUS_631:
        return dict(DIFFUSE_S_631PLUS)
    parent = _parent_basis(name)
    if parent is None:
        raise InputError(f"basis {name!r} has no diffuse functions by its name (expected aug-X, ma-X, 6-31+G*, "
                         f"6-31++G*, def2-XD): the diffuse-basis term needs the labels' diffuse basis")
    try:
        from pyscf import gto
        from pyscf.lib.exceptions import BasisNotFoundError
    except ImportError as e:
        raise InputError(f"the diffuse exponents of {name!r} come from PySCF's basis library: "
                         f"pip install pyscf (only 6-31+G(d) is built in)") from e
    out = {}
    for z in range(1, 37):
        sym = gto.param.ELEMENTS[z]
        try:
            with warnings.catch_warnings():      # PySCF suggests basis-set-exchange for unknown names
                warnings.simplefilter("ignore")
                full, base = gto.basis.load(name, sym), gto.basis.load(parent, sym)
        except BasisNotFoundError:      # an element the basis (or its parent) lacks
            continue

        def s_exponents(shells):
            return {round(float(p[0]), 10) for sh in shells if sh[0] == 0 for p in sh[1:]}

        extra = s_exponents(full) - s_exponents(base)
        if extra:
            out[z] = min(extra)
    if not out:
        raise InputError(f"basis {name!r}: PySCF knows no diffuse s functions of it (over {parent!r})")
    return out


def diffuse_exponents(numbers, table: dict | None = None) -> np.ndarray:
    """``[A]`` float64: the diffuse s exponent (bohr^-2) of each atom (atomic numbers ``[A]``)
    in ``table`` (default :data:`DIFFUSE_S_631PLUS`); 0 for an atom without one (H)."""
    table = DIFFUSE_S_631PLUS if table is None else {int(k): float(v) for k, v in table.items()}
    return np.asarray([table.get(int(z), 0.0) for z in np.asarray(numbers).reshape(-1)], np.float64)


def diffuse_orbital_energy(positions, alpha):
    """Kinetic energy (eV) of the most diffuse orbital of one s Gaussian per atom.

    Args:
      positions: ``[N, 3]`` Å (float32 or float64).
      alpha: ``[N]`` exponents (bohr^-2); 0 marks an atom without a function (or padding).

    Returns:
      scalar eV, the lowest eigenvalue of ``T c = w S c`` (module docstring); 0 if no atom has
      a function. Differentiable in ``positions``; jit- and vmap-compatible.
    """
    R = jnp.asarray(positions)
    dtype = R.dtype
    a = jnp.asarray(alpha, dtype)
    if R.ndim != 2 or R.shape[-1] != 3 or a.shape != R.shape[:1]:
        raise InputError(f"positions must be [N, 3] and alpha [N], got {R.shape} and {a.shape}")
    on = a > 0
    a_safe = jnp.where(on, a, 1.0)
    x = R * BOHR_PER_ANGSTROM
    d = x[:, None, :] - x[None, :, :]
    both = on[:, None] & on[None, :]
    r2 = jnp.where(both, jnp.sum(d * d, axis=-1), 0.0)     # no NaN gradient through padded pairs
    ai, aj = a_safe[:, None], a_safe[None, :]
    mu = ai * aj / (ai + aj)
    S = (4.0 * ai * aj / (ai + aj) ** 2) ** 0.75 * jnp.exp(-mu * r2)
    T = mu * (3.0 - 2.0 * mu * r2) * S
    eye = jnp.eye(a.shape[0], dtype=dtype)
    S = jnp.where(both, S, eye)
    T = jnp.where(both, T, eye * _PAD_HARTREE)
    w = generalized_eigh(T, S)[0][0]
    return jnp.where(jnp.any(on), w * HARTREE_EV, 0.0)


def diffuse_state_energies(numbers: list, positions: list, table: dict | None = None, select=None) -> np.ndarray:
    """``[C]`` float64 eV: :func:`diffuse_orbital_energy` of each structure (``numbers`` and
    ``positions``: ``C`` arrays ``[A]`` and ``[A, 3]`` Å) with the exponents of ``table``
    (:func:`diffuse_exponents`), evaluated in float64 where ``select [C]`` (bool, default all)
    is true and 0 elsewhere. One compilation per structure size."""
    import jax

    on = np.ones(len(numbers), bool) if select is None else np.asarray(select, bool)
    energy = jax.jit(diffuse_orbital_energy)
    out = np.zeros(len(numbers))
    with jax.enable_x64(True):
        for k in np.flatnonzero(on):
            out[k] = float(energy(np.asarray(positions[k], np.float64), diffuse_exponents(numbers[k], table)))
    return out
