"""Physics layers: Slater-type overlaps, extended Hückel, a differentiable eigensolver.

See :mod:`phai.physics.sto` (basis and analytic overlaps), :mod:`phai.physics.huckel`
(Hoffmann parameters, Wolfsberg-Helmholz Hamiltonians, RDKit/YAeHMOP parity, padding
convention), :mod:`phai.physics.eigen` (``H C = S C E`` with a degeneracy-safe derivative) and
:mod:`phai.physics.diffuse` (the energy of an electron only a finite diffuse basis binds).
"""

from .diffuse import DIFFUSE_S_631PLUS, diffuse_exponents, diffuse_orbital_energy
from .eigen import NonFiniteMatrixError, check_finite, generalized_eigh
from .huckel import (
    HOFFMANN,
    PAD_ENERGY,
    WOLFSBERG_HELMHOLZ_K,
    ElementParameters,
    HuckelResult,
    HuckelSystem,
    OddElectronCountError,
    extended_huckel,
    huckel_batch,
    huckel_matrices,
    huckel_orbitals,
    huckel_orbitals_batch,
    huckel_system,
    wolfsberg_helmholz,
)
from .sto import YAEHMOP_ANGSTROM_TO_BOHR, STOBasis, overlap_matrix

__all__ = [
    "DIFFUSE_S_631PLUS",
    "HOFFMANN",
    "PAD_ENERGY",
    "WOLFSBERG_HELMHOLZ_K",
    "YAEHMOP_ANGSTROM_TO_BOHR",
    "ElementParameters",
    "HuckelResult",
    "HuckelSystem",
    "NonFiniteMatrixError",
    "OddElectronCountError",
    "STOBasis",
    "check_finite",
    "diffuse_exponents",
    "diffuse_orbital_energy",
    "extended_huckel",
    "generalized_eigh",
    "huckel_batch",
    "huckel_matrices",
    "huckel_orbitals",
    "huckel_orbitals_batch",
    "huckel_system",
    "overlap_matrix",
    "wolfsberg_helmholz",
]
