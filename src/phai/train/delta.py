"""Δ-learning: a base potential plus a model of the difference between two levels of theory.

Train the Δ model on ``E_high - E_low`` of the same conformations (``TrainingSet`` with
those differences as energies, forces usually absent), then evaluate
``E = E_base + E_delta`` (the ANI-1ccx paper's alternative to transfer learning, [R] Fig. 3a).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..potential import Result
from .batches import TrainingSet


def delta_set(high: TrainingSet, low_energies, low_forces=None) -> TrainingSet:
    """``high`` with energies (eV) ``E_high - E_low`` (and forces ``F_high - F_low`` if both given)."""
    e = np.asarray(high.energies) - np.asarray(low_energies, np.float64)
    f = None
    if high.forces is not None and low_forces is not None:
        f = [np.asarray(a) - np.asarray(b) for a, b in zip(high.forces, low_forces)]
    return TrainingSet(list(high.numbers), list(high.positions), e, f, high.groups)


class DeltaPotential:
    """``base + delta`` with the call interface of :class:`phai.potential.ANIPotential`.

    Energies and forces add; ``energy_std`` is the two ensembles' spreads added in
    quadrature (independent committees); ``member_energies`` are the Δ members plus the
    base ensemble energy (eV).
    """

    def __init__(self, base, delta):
        self.base, self.delta = base, delta

    def __repr__(self):
        return f"DeltaPotential({self.base!r} + {self.delta!r})"

    @property
    def species(self):
        return tuple(s for s in self.base.species if s in self.delta.species)

    @staticmethod
    def _combine(b: Result, d: Result) -> Result:
        forces = None if b.forces is None or d.forces is None else b.forces + d.forces
        return Result(b.energy + d.energy, forces, float(np.hypot(b.energy_std, d.energy_std)),
                      np.asarray(d.member_energies) + b.energy, b.num_atoms)

    def __call__(self, numbers, positions=None, *, forces: bool = True, charge=0) -> Result:
        return self._combine(self.base(numbers, positions, forces=forces, charge=charge),
                             self.delta(numbers, positions, forces=forces, charge=charge))

    def evaluate(self, structures: Iterable, *, forces: bool = True, **kw) -> list[Result]:
        structures = list(structures)
        return [self._combine(b, d) for b, d in zip(self.base.evaluate(structures, forces=forces, **kw),
                                                   self.delta.evaluate(structures, forces=forces, **kw))]

    def energy(self, numbers, positions=None, *, charge=0) -> float:
        return self(numbers, positions, forces=False, charge=charge).energy

    def forces(self, numbers, positions=None, *, charge=0) -> np.ndarray:
        return self(numbers, positions, charge=charge).forces
