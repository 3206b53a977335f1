"""ASE calculator for phai potentials.

>>> from phai.ase import PhaiCalculator
>>> atoms.calc = PhaiCalculator(model="ani-1x")
>>> atoms.get_potential_energy(), atoms.get_forces()     # eV, eV/Å

Results are recomputed whenever the atomic numbers, positions, cell, periodic flags or
the charge (``atoms.info["charge"]`` or the ``charge`` argument) change: ASE's own
``check_state`` compares the system with the one of the cached results, and phai packs
every call afresh, so a calculator can move from one molecule to another of a different
size without reusing anything compiled for the wrong shape.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .errors import InputError


class PhaiCalculator(Calculator):
    """ASE calculator around a phai potential.

    Args:
      model: a model name for :func:`phai.load` or an already loaded potential.
      precision: ``"float32"`` or ``"float64"``; ``None`` keeps a loaded potential's own
        precision (float32 for a name).
      charge: total charge (e); ``None`` reads ``atoms.info["charge"]`` (default 0).

    Implemented properties: ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å),
    ``energy_std`` (eV, the ensemble's standard deviation, in ``calc.results``) and, for
    periodic cells, ``stress`` (eV/Å^3, Voigt order xx yy zz yz xz xy, ASE's sign: the
    strain derivative of the energy over the volume, by autodiff).

    Periodic cells (``pbc`` all True) use minimum-image neighbors and need every
    perpendicular cell width to be at least twice the model's cutoff (10.4 Å for ANI-1x);
    smaller cells, and slabs (``pbc`` partly True), raise :class:`phai.errors.InputError`.
    Atoms outside the cell are wrapped for the neighbor search (results do not change).
    """

    implemented_properties = ("energy", "free_energy", "forces", "energy_std", "stress", "charges")

    def __init__(self, model="ani-1x", precision: str | None = None, charge=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, str):
            import phai

            model = phai.load(model, precision=precision or "float32")
        elif precision is not None and precision != model.precision:
            model = model.with_precision(precision)
        self.potential = model
        self.charge = charge

    def _charge(self, atoms) -> int:
        charge = self.charge if self.charge is not None else atoms.info.get("charge", 0)
        return charge

    def check_state(self, atoms, tol=1e-15):
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and self.atoms.info.get("charge", 0) != atoms.info.get("charge", 0):
            changes.append("charge")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.any())
        if periodic and not hasattr(self.potential, "stress"):
            raise InputError(f"{self.potential.name}: periodic cells are not supported by this potential; "
                             f"set atoms.pbc = False for a molecule")
        stress = None
        if periodic and "stress" in properties:
            res, stress = self.potential.stress(self.atoms)
        elif periodic:
            res = self.potential(self.atoms)
        else:
            if "stress" in properties:
                raise InputError("stress is defined for periodic cells only (atoms.pbc is all False)")
            res = self.potential(self.atoms.get_atomic_numbers(), self.atoms.get_positions(),
                                 charge=self._charge(self.atoms))
        self.results = {
            "energy": res.energy,
            "free_energy": res.energy,
            "forces": np.array(res.forces),
            "energy_std": res.energy_std,
        }
        if getattr(res, "charges", None) is not None:    # charge-aware models (AIMNet2): atomic charges, e
            self.results["charges"] = np.array(res.charges)
        if stress is not None:
            from ase.stress import full_3x3_to_voigt_6_stress

            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
