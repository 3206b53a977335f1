"""Harmonic vibrational analysis from an autodiff Hessian.

For a structure at a stationary point with Cartesian Hessian ``H [3A, 3A]`` (eV/Å²) and
masses ``m [A]`` (amu, ASE's standard atomic masses), the harmonic modes solve

    M^{-1/2} H M^{-1/2} q = ω² q,

in mass-weighted coordinates. Before diagonalising, the three translations and the three
rotations (two for a linear molecule) are projected out exactly: their mass-weighted
vectors ``sqrt(m_a) e_x`` and ``sqrt(m_a) (e_x × (r_a - r_com))`` are orthonormalised and
the Hessian is expressed in the orthonormal complement ``D`` (``3A - 6`` columns), so the
rigid-body modes neither appear nor mix with the vibrations (ASE's
``ase.vibrations.Vibrations`` keeps all ``3A`` modes instead, six of them near zero).

Frequencies: ``ħω`` (eV) ``= ħ sqrt(λ)`` with ``λ`` in eV/(Å² amu), converted to cm^-1 with
ASE's constants (the same conversion as ``Vibrations.get_frequencies``). A negative
eigenvalue (a saddle point or an unconverged geometry) is reported as a negative frequency
``-sqrt(|λ|)`` (cm^-1), i.e. an imaginary mode. The zero-point energy is
``ZPE = Σ_k ħω_k / 2`` over the real vibrational modes (eV).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InputError

LINEAR_TOLERANCE = 1e-6  # relative: smallest principal moment / largest below this means linear


def _hbar_sqrt_ev_amu() -> float:
    """``ħ`` in eV / sqrt(eV/(Å² amu)): ħω (eV) = this * sqrt(λ [eV/(Å² amu)])."""
    from ase import units

    return units._hbar * 1e10 / np.sqrt(units._e * units._amu)


class VibrationResult(NamedTuple):
    """Harmonic analysis of one structure.

    Attributes:
      frequencies: ``[K]`` cm^-1, ascending, ``K = 3A - 6`` (``3A - 5`` if linear);
        imaginary modes as negative numbers.
      energies: ``[K]`` ħω (eV), negative for imaginary modes.
      modes: ``[K, A, 3]`` Cartesian displacement patterns (mass-weighted eigenvectors
        divided by sqrt(m), normalised to 1).
      zpe: zero-point energy (eV) of the real modes.
      hessian: ``[3A, 3A]`` Cartesian Hessian (eV/Å²) that was analysed.
      masses: ``[A]`` amu.
      linear: whether the molecule was treated as linear.
    """

    frequencies: np.ndarray
    energies: np.ndarray
    modes: np.ndarray
    zpe: float
    hessian: np.ndarray
    masses: np.ndarray
    linear: bool

    @property
    def num_imaginary(self) -> int:
        return int(np.sum(self.frequencies < 0))


def rigid_body_basis(positions: np.ndarray, masses: np.ndarray) -> tuple[np.ndarray, bool]:
    """Orthonormal mass-weighted translation and rotation vectors.

    Args:
      positions: ``[A, 3]`` Å.
      masses: ``[A]`` amu.

    Returns:
      ``(T [3A, r], linear)``: ``r = 6`` (5 for a linear molecule, 3 for one atom)
      orthonormal columns spanning rigid translations and rotations in mass-weighted
      coordinates.
    """
    r = np.asarray(positions, np.float64)
    m = np.asarray(masses, np.float64)
    a = len(m)
    sm = np.sqrt(m)
    com = (m[:, None] * r).sum(0) / m.sum()
    x = r - com
    vecs = []
    for k in range(3):
        t = np.zeros((a, 3))
        t[:, k] = sm
        vecs.append(t.ravel())
    # rotations about the principal axes: ω × x for unit ω along each axis
    inertia = (m[:, None, None] * (np.einsum("ai,ai->a", x, x)[:, None, None] * np.eye(3)
                                   - x[:, :, None] * x[:, None, :])).sum(0)
    moments, axes = np.linalg.eigh(inertia)
    linear = a > 1 and moments[-1] > 0 and moments[0] < LINEAR_TOLERANCE * moments[-1]
    for k in range(3):
        if a == 1 or moments[k] <= LINEAR_TOLERANCE * max(moments[-1], 1e-300):
            continue  # no rotation about an axis the atoms lie on
        rot = np.cross(axes[:, k], x) * sm[:, None]
        vecs.append(rot.ravel())
    q, _ = np.linalg.qr(np.stack(vecs, axis=1))
    return q, bool(linear)


def harmonic_analysis(hessian: np.ndarray, positions: np.ndarray, masses: np.ndarray) -> VibrationResult:
    """Frequencies (cm^-1), modes and zero-point energy from a Cartesian Hessian.

    Args:
      hessian: ``[3A, 3A]`` eV/Å² (symmetrised here).
      positions: ``[A, 3]`` Å (for the rigid-body projection).
      masses: ``[A]`` amu.
    """
    from ase import units

    h = np.asarray(hessian, np.float64)
    m = np.asarray(masses, np.float64)
    a = len(m)
    if h.shape != (3 * a, 3 * a):
        raise InputError(f"the Hessian of {a} atoms must have shape ({3 * a}, {3 * a}), got {h.shape}")
    if not np.all(np.isfinite(h)):
        raise InputError("the Hessian has non-finite entries")
    if np.any(m <= 0):
        raise InputError("masses must be positive (amu)")
    h = 0.5 * (h + h.T)
    inv_sm = 1.0 / np.sqrt(np.repeat(m, 3))
    hmw = h * inv_sm[:, None] * inv_sm[None, :]  # eV/(Å² amu)
    t, linear = rigid_body_basis(positions, m)
    # orthonormal complement D of the rigid-body space: the vibrational subspace
    u, _, _ = np.linalg.svd(t, full_matrices=True)
    d = u[:, t.shape[1]:]
    lam, vec = np.linalg.eigh(d.T @ hmw @ d)
    ev = _hbar_sqrt_ev_amu() * np.sign(lam) * np.sqrt(np.abs(lam))  # eV, negative = imaginary
    freqs = ev / units.invcm
    cart = (d @ vec) * inv_sm[:, None]  # back to Cartesian displacements
    cart /= np.linalg.norm(cart, axis=0, keepdims=True)
    modes = cart.T.reshape(-1, a, 3)
    zpe = 0.5 * float(np.sum(ev[ev > 0]))
    return VibrationResult(freqs, ev, modes, zpe, h, m, linear)


def vibrations(atoms, potential="ani-1x", *, precision: str | None = "float64") -> VibrationResult:
    """Harmonic frequencies of ``atoms`` (assumed at a stationary point) with a phai potential.

    The Hessian comes from forward-over-reverse autodiff of the potential
    (``ANIPotential.hessian``, eV/Å²), in float64 by default; masses are ASE's
    (``atoms.get_masses()``, amu), so isotopes set on the atoms are honoured. Optimize first
    (:func:`phai.md.optimize.optimize`): at a non-stationary geometry the rigid-body
    projection is not exact and small or imaginary frequencies appear.
    """
    from .optimize import resolve_potential

    if any(atoms.pbc):
        raise InputError("vibrational analysis is implemented for molecules (pbc all False): the "
                         "rigid-body projection and the Hessian ignore periodic images")
    pot = resolve_potential(potential, precision)
    charge = atoms.info.get("charge", 0)
    h = pot.hessian(atoms.get_atomic_numbers(), atoms.get_positions(), charge=charge)
    return harmonic_analysis(h, atoms.get_positions(), atoms.get_masses())
