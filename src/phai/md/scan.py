"""Relaxed torsion scans.

At every angle the dihedral ``a-b-c-d`` (0-based atom indices) is set by rigidly rotating
the fragment on the ``c`` side of the ``b-c`` bond (found from covalent radii), then held
by ASE's ``FixInternals`` while L-BFGS (:func:`phai.md.optimize.optimize`) relaxes every
other coordinate. Each point starts from the relaxed geometry of the previous one, so the
scan follows one conformational path. Energies in eV, relative energies in kcal/mol
(:data:`phai.units.EV_TO_KCALMOL`), angles in degrees.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..units import EV_TO_KCALMOL
from .optimize import DEFAULT_STEPS, optimize, resolve_potential

DEFAULT_SCAN_FMAX = 0.01  # eV/Å


class ScanResult(NamedTuple):
    """A relaxed torsion scan.

    Attributes:
      angles: ``[P]`` requested dihedral angles (degrees).
      achieved: ``[P]`` dihedral of each relaxed structure (degrees, in [0, 360)).
      energies: ``[P]`` eV.
      relative_kcal_mol: ``[P]`` energies minus their minimum (kcal/mol).
      converged: ``[P]`` bool, whether each constrained optimization converged.
      structures: the relaxed ``ase.Atoms`` of every point.
    """

    angles: np.ndarray
    achieved: np.ndarray
    energies: np.ndarray
    relative_kcal_mol: np.ndarray
    converged: np.ndarray
    structures: list

    def table(self) -> str:
        """CSV text with the columns ``angle_deg,energy_eV,relative_kcal_mol``."""
        lines = ["angle_deg,energy_eV,relative_kcal_mol"]
        lines += [f"{a:.6g},{e:.8f},{r:.6f}" for a, e, r in zip(self.angles, self.energies, self.relative_kcal_mol)]
        return "\n".join(lines) + "\n"


def scan_angles(start: float, stop: float, step: float) -> np.ndarray:
    """Angles ``start, start + step, ...`` below ``stop`` (degrees); ``stop`` itself is left
    out when it is the same torsion as ``start`` (a full turn), included otherwise if hit."""
    if not all(np.isfinite([start, stop, step])):
        raise InputError("scan angles must be finite numbers (degrees)")
    if step == 0 or (stop - start) * step < 0:
        raise InputError(f"a scan from {start} to {stop} needs a non-zero step of the same sign, got {step}")
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    angles = start + step * np.arange(count)
    if count > 1 and abs(abs(angles[-1] - angles[0]) - 360.0) < 1e-6:
        angles = angles[:-1]
    if len(angles) > 721:
        raise InputError(f"the scan has {len(angles)} points; use a coarser --step")
    return angles


def _rotating_side(atoms, b: int, c: int) -> np.ndarray:
    """Indices of the atoms on ``c``'s side of the ``b-c`` bond (``c`` included)."""
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    nl.update(atoms)
    seen, stack = {c}, [c]
    while stack:
        i = stack.pop()
        for j in nl.get_neighbors(i)[0]:
            if (i, j) in ((b, c), (c, b)) or j in seen:
                continue
            seen.add(int(j))
            stack.append(int(j))
    if b in seen:
        raise InputError(f"atoms {b} and {c} are in a ring (or the bond graph joins them another way): "
                         f"a torsion about a ring bond cannot be set by rotating one side")
    return np.array(sorted(seen))


def check_dihedral(atoms, dihedral) -> tuple[int, int, int, int]:
    """Validate four distinct 0-based atom indices with ``b-c`` not collinear with ``a`` or ``d``."""
    try:
        idx = tuple(int(i) for i in dihedral)
    except (TypeError, ValueError):
        raise InputError(f"the dihedral needs four integer atom indices, got {dihedral!r}") from None
    if len(idx) != 4:
        raise InputError(f"the dihedral needs four atom indices, got {len(idx)}")
    n = len(atoms)
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise InputError(f"dihedral atom indices are 0-based and must lie in 0..{n - 1}; got {bad}")
    if len(set(idx)) != 4:
        raise InputError(f"the dihedral's four atoms must be distinct, got {list(idx)}")
    r = atoms.positions
    for p, q, s in ((idx[0], idx[1], idx[2]), (idx[1], idx[2], idx[3])):
        u, v = r[p] - r[q], r[s] - r[q]
        if np.linalg.norm(np.cross(u, v)) < 1e-3 * np.linalg.norm(u) * np.linalg.norm(v):
            raise InputError(f"atoms {p}, {q}, {s} are collinear: the dihedral {list(idx)} is undefined")
    return idx


def relaxed_scan(atoms, dihedral, angles, potential="ani-1x", *, fmax: float = DEFAULT_SCAN_FMAX,
                 steps: int = DEFAULT_STEPS, precision: str | None = None, progress=None) -> ScanResult:
    """Relaxed scan of the dihedral ``a-b-c-d`` over ``angles`` (degrees).

    Args:
      atoms: ``ase.Atoms`` (not modified).
      dihedral: four 0-based atom indices.
      angles: ``[P]`` degrees, e.g. from :func:`scan_angles`.
      potential: model name (loaded in float64) or a loaded potential.
      fmax: convergence of each constrained optimization (eV/Å).
      steps: largest number of optimizer steps per point.
      progress: optional callable ``progress(k, angle, energy)`` after each point.
    """
    from ase.constraints import FixInternals

    if any(atoms.pbc):
        raise InputError("torsion scans are implemented for molecules (pbc all False)")
    a, b, c, d = check_dihedral(atoms, dihedral)
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim != 1 or len(angles) == 0:
        raise InputError("angles must be a non-empty 1-D sequence of degrees")
    pot = resolve_potential(potential, precision)
    side = _rotating_side(atoms, b, c)
    mask = np.zeros(len(atoms), dtype=bool)
    mask[side] = True
    current = atoms.copy()
    current.set_constraint()
    energies, achieved, converged, structures = [], [], [], []
    for k, angle in enumerate(angles):
        current.set_dihedral(a, b, c, d, float(angle), mask=mask)
        fix = FixInternals(dihedrals_deg=[[float(angle) % 360.0, [a, b, c, d]]])
        res = optimize(current, pot, fmax=fmax, steps=steps, constraints=[fix])
        current = res.atoms
        energies.append(res.energy)
        achieved.append(current.get_dihedral(a, b, c, d))
        converged.append(res.converged)
        structures.append(current.copy())
        if progress is not None:
            progress(k, float(angle), res.energy)
    e = np.asarray(energies)
    return ScanResult(angles, np.asarray(achieved), e, (e - e.min()) * EV_TO_KCALMOL,
                      np.asarray(converged), structures)


def plot_scan(result: ScanResult, path, title: str | None = None):
    """Save relative energy (kcal/mol) against angle (degrees) as an image (matplotlib)."""
    # no pyplot: neither the backend nor any global state is touched
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot(result.angles, result.relative_kcal_mol, "o-")
    ax.set_xlabel("dihedral (degrees)")
    ax.set_ylabel("relative energy (kcal/mol)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
