"""Geometry optimization of molecules with a phai potential.

:func:`optimize` relaxes a structure to a stationary point (a local minimum unless it
starts on a saddle) with ASE's L-BFGS driven by phai forces through
:class:`phai.ase.PhaiCalculator`. L-BFGS on the host was chosen over jax-md's FIRE under
jit: for drug-like molecules it needs 3-10x fewer force evaluations to reach
``fmax = 0.01 eV/Å`` (aspirin with ANI-1x: 145 steps to 1e-3 eV/Å), each evaluation is a
few milliseconds, and it accepts ASE constraints (used by :mod:`phai.md.scan`).

Units: Å, eV, eV/Å. Convergence means ``max_a |F_a| < fmax`` (the largest per-atom force
norm, ASE's criterion), with constrained force components removed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InputError

DEFAULT_FMAX = 0.01  # eV/Å
DEFAULT_STEPS = 1000
MAX_STEP = 0.2  # Å, L-BFGS's largest atomic displacement per step


class OptimizeResult(NamedTuple):
    """Outcome of :func:`optimize`.

    Attributes:
      atoms: the optimized structure (a copy of the input with new positions, no calculator).
      energy: final energy (eV).
      fmax: final largest per-atom force norm (eV/Å), constraints applied.
      steps: optimizer steps taken.
      converged: ``fmax < requested fmax`` at the end.
      energies: ``[steps + 1]`` energy (eV) at every step, the start included.
      initial_energy: energy of the input structure (eV).
    """

    atoms: object
    energy: float
    fmax: float
    steps: int
    converged: bool
    energies: np.ndarray
    initial_energy: float


def resolve_potential(potential, precision: str | None = None):
    """A loaded phai potential from a name or a potential (optionally at another precision)."""
    if isinstance(potential, str):
        import phai

        return phai.load(potential, precision=precision or "float64")
    if precision is not None and getattr(potential, "precision", precision) != precision:
        return potential.with_precision(precision)
    return potential


def _check_options(fmax: float, steps: int):
    if not np.isfinite(fmax) or fmax <= 0:
        raise InputError(f"fmax must be a positive force in eV/Å, got {fmax}")
    if int(steps) != steps or steps < 0:
        raise InputError(f"steps must be a non-negative integer, got {steps}")


def max_force(forces: np.ndarray) -> float:
    """Largest per-atom force norm of ``forces [A, 3]`` (eV/Å)."""
    return float(np.max(np.linalg.norm(np.asarray(forces), axis=1))) if len(forces) else 0.0


def optimize(atoms, potential="ani-1x", *, fmax: float = DEFAULT_FMAX, steps: int = DEFAULT_STEPS,
             precision: str | None = None, constraints=None, trajectory=None) -> OptimizeResult:
    """Relax ``atoms`` to ``max |F| < fmax`` with L-BFGS (ASE) on a phai potential.

    Args:
      atoms: ``ase.Atoms`` (not modified; a relaxed copy is returned).
      potential: model name for :func:`phai.load` (loaded in float64) or a loaded potential.
      fmax: convergence threshold on the largest per-atom force norm (eV/Å).
      steps: largest number of optimizer steps (0 evaluates only).
      precision: ``"float32"``/``"float64"`` to override the potential's precision.
      constraints: ASE constraints to apply during the optimization (e.g. ``FixInternals``);
        the returned atoms keep none.
      trajectory: optional path of an ASE ``.traj`` file recording every step.

    Returns:
      :class:`OptimizeResult`. Not converging within ``steps`` is reported in
      ``converged``, not raised.
    """
    from ase.optimize import LBFGS

    from ..ase import PhaiCalculator

    _check_options(fmax, steps)
    pot = resolve_potential(potential, precision)
    work = atoms.copy()
    work.set_constraint()
    if constraints is not None:
        work.set_constraint(constraints)
    work.calc = PhaiCalculator(pot)
    opt = LBFGS(work, logfile=None, maxstep=MAX_STEP, trajectory=trajectory)
    energies, converged = [], False
    for converged in opt.irun(fmax=fmax, steps=int(steps)):  # one yield per geometry, the start first
        energies.append(work.get_potential_energy())  # cached: no extra evaluation
    energy = work.get_potential_energy()
    fm = max_force(work.get_forces())  # ASE applies the constraints' force projections
    out = atoms.copy()
    out.set_constraint()
    out.positions = work.positions
    out.calc = None
    energies = np.asarray(energies, dtype=np.float64)
    return OptimizeResult(out, float(energy), fm, int(opt.nsteps), bool(converged) and fm < fmax, energies,
                          float(energies[0]))
