"""Δ-learning: a base potential plus a model of the difference between two levels of theory.

Train the Δ model on ``E_high - E_low`` of the same conformations (``TrainingSet`` with
those differences as energies), then evaluate ``E = E_base + E_delta`` (the ANI-1ccx paper's
alternative to transfer learning, [R] Fig. 3a). Two kinds of base:

* **a model** (``phai train --base ani-1x``, :func:`model_delta_set`): the targets are
  ``E_label - E_base(x)`` (and ``F_label - F_base(x)`` with forces) computed by phai with the
  base potential in float64. The output folder records the base (``config.json`` key
  ``"delta"``, :func:`delta_record`), so ``phai.load(DIR)`` returns the combined
  :class:`DeltaPotential` and ``phai energy --model DIR`` prints base + Δ (``phai md --model
  DIR`` and :class:`phai.ase.PhaiCalculator` run it too). The base may itself be a trained
  model folder (recorded as given and as an absolute path).
* **a stored lower level** (``phai train --delta-from wb97x_dz.energy``, :func:`delta_set`):
  the targets are ``E_high - E_low`` of two fields of the data file. There is no model to add
  back: ``phai.load(DIR)`` returns the Δ ensemble alone, marked with the attribute
  ``predicts`` (the folder says ``"base": {"kind": "level", ...}``), and ``phai energy``
  reports that its energies are differences ``E[high] - E[low]``. Combine it yourself with a
  model of the low level: ``DeltaPotential(low_model, phai.load(DIR))``.

The self energies of a Δ run are fitted to the differences, the same targets the networks
learn (:class:`phai.train.Trainer` fits them to ``train_set.energies``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError, PhaiError
from ..potential import Result
from .batches import TrainingSet

BASE_CHUNK = 64
"""Conformations per base-model evaluation in :func:`base_predictions` (fixed, so that the
in-memory and streamed paths evaluate the same chunks and agree bit for bit)."""


def base_predictions(base, ts, forces: bool = False, chunk: int = BASE_CHUNK) -> tuple[np.ndarray, list | None]:
    """``(E [C] eV, F: C arrays [A_c, 3] eV/Å or None)``: a potential's predictions on the
    conformations of ``ts`` (a :class:`TrainingSet` or a streamed set), in its order, evaluated
    ``chunk`` conformations at a time (a streamed set reads one chunk at a time)."""
    energies, frc = [], [] if forces else None
    for k in range(0, len(ts), chunk):
        part = ts.load(np.arange(k, min(k + chunk, len(ts))))
        for r in base.evaluate(list(zip(part.numbers, part.positions)), forces=forces):
            energies.append(r.energy)
            if forces:
                frc.append(np.asarray(r.forces, np.float64))
    return np.asarray(energies, np.float64), frc


def model_delta_set(ts: TrainingSet, base, forces: bool = True) -> TrainingSet:
    """``ts`` with targets ``E - E_base`` (eV) and, if ``forces`` and ``ts`` has forces,
    ``F - F_base`` (eV/Å), the base potential's predictions by :func:`base_predictions`."""
    use_f = forces and ts.forces is not None
    e, f = base_predictions(base, ts, forces=use_f)
    return TrainingSet(list(ts.numbers), list(ts.positions), ts.energies - e,
                       [np.asarray(a) - b for a, b in zip(ts.forces, f)] if use_f else None, ts.groups)


def delta_record(base: str | None = None, *, level: str | None = None, target: str | None = None) -> dict:
    """The ``"delta"`` entry of a Δ model folder's ``config.json``.

    ``base``: a registry name (``"ani-1x"``) or a model folder (stored as given and as an
    absolute path) whose predictions the Δ ensemble corrects: ``{"base": {"kind": "model",
    "model": ..., "path": ...}, "target": ...}``. ``level``: the data field of a stored lower
    level (``"wb97x_dz.energy"``): ``{"base": {"kind": "level", "level": ...}, "target": ...}``.
    """
    if (base is None) == (level is None):
        raise InputError("a Δ record names either a base model or a lower level of theory")
    if base is not None:
        b = {"kind": "model", "model": str(base)}
        if Path(base).is_dir():
            b["path"] = str(Path(base).resolve())
    else:
        b = {"kind": "level", "level": str(level)}
    return {"base": b, "target": target}


def describe(record: dict) -> str:
    """One line saying what a Δ folder predicts."""
    b, target = record["base"], record.get("target") or "the training labels"
    if b["kind"] == "model":
        return f"Δ ensemble on top of the model {b['model']} (energies are base + Δ, fitted to {target})"
    return (f"predicts a DIFFERENCE of levels of theory, E[{target}] - E[{b['level']}] (eV), not a total energy; "
            f"add a model of {b['level']} (phai.train.DeltaPotential) for total energies")


def _resolve_base(folder: Path, b: dict, precision: str):
    import phai

    name = b["model"]
    if not Path(name).is_absolute() and (folder / name).is_dir():  # a folder given relative to the run
        return phai.load(str(folder / name), precision)
    if Path(name).is_dir():
        return phai.load(name, precision)
    if b.get("path") and Path(b["path"]).is_dir():
        return phai.load(b["path"], precision)
    try:
        return phai.load(name, precision)
    except (PhaiError, KeyError, OSError) as exc:  # e.g. ModelFileError: not a registry name
        raise InputError(f"{folder}: the base model {name!r} of this Δ model cannot be loaded ({exc})") from None


def load_delta_folder(folder, precision: str = "float32"):
    """What ``phai.load(folder)`` returns for a Δ model folder, or None if ``folder`` is not one.

    Base model recorded: the :class:`DeltaPotential` base + Δ. Lower level recorded: the Δ
    ensemble (:class:`phai.potential.ANIPotential`) with ``predicts`` set to :func:`describe`'s
    line (its energies are differences)."""
    from ..potential import load_ani

    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    record = cfg.get("delta") if isinstance(cfg, dict) else None
    if not record:
        return None
    delta = load_ani(os.fspath(folder), precision)
    if record["base"]["kind"] == "model":
        return DeltaPotential(_resolve_base(folder, record["base"], precision), delta, record)
    delta.predicts = describe(record)
    return delta


def delta_set(high: TrainingSet, low_energies, low_forces=None) -> TrainingSet:
    """``high`` with energies (eV) ``E_high - E_low`` (and forces ``F_high - F_low`` if both given)."""
    e = np.asarray(high.energies) - np.asarray(low_energies, np.float64)
    f = None
    if high.forces is not None and low_forces is not None:
        f = [np.asarray(a) - np.asarray(b) for a, b in zip(high.forces, low_forces)]
    return TrainingSet(list(high.numbers), list(high.positions), e, f, high.groups)


class DeltaPotential:
    """``base + delta`` with the call interface of :class:`phai.potential.ANIPotential`.

    Energies, forces, stresses and Hessians add; ``energy_std`` is the two ensembles'
    spreads added in quadrature (independent committees: ``hypot(std_base, std_delta)``;
    the Δ ensemble's own spread is ``delta(...).energy_std``); ``member_energies`` are the
    Δ members plus the base ensemble energy (eV). ``phai.load`` of a Δ folder trained with
    ``--base`` returns one.

    It runs wherever an ANI potential does: :class:`phai.ase.PhaiCalculator` (molecules and
    periodic cells) and ``phai md`` / :func:`phai.md.run_md` (the jax-md energy function of
    :mod:`phai.md.energy` is the sum of the two parts' energy functions on one neighbor list,
    built for the larger of their cutoffs; :attr:`parts` tells it the summands). Both parts
    run at one precision (``precision``, ``with_precision``).
    """

    def __init__(self, base, delta, record: dict | None = None):
        pb, pd = getattr(base, "precision", None), getattr(delta, "precision", None)
        if pb is not None and pd is not None and pb != pd:
            raise InputError(f"the base potential is {pb} and the Δ model {pd}: give both at one precision "
                             f"(with_precision)")
        self.base, self.delta, self.record = base, delta, record

    @property
    def parts(self) -> tuple:
        """``(base, delta)``: the potentials whose energies add."""
        return (self.base, self.delta)

    @property
    def config(self):
        """The Δ ensemble's config, its description saying base + Δ."""
        import dataclasses

        return dataclasses.replace(self.delta.config, description=f"{self._base_name} + Δ "
                                                                  f"({self.delta.config.description})")

    @property
    def _base_name(self) -> str:
        return self.record["base"]["model"] if self.record else getattr(self.base, "name", repr(self.base))

    @property
    def name(self) -> str:
        """``"<base> + Δ <delta>"`` (the base as recorded in the Δ folder)."""
        return f"{self._base_name} + Δ {self.delta.name}"

    @property
    def precision(self) -> str:
        return self.delta.precision

    def with_precision(self, precision: str) -> DeltaPotential:
        """The same base + Δ at another precision (shares the weights)."""
        return DeltaPotential(self.base.with_precision(precision), self.delta.with_precision(precision), self.record)

    @property
    def members(self) -> int:
        return self.delta.members

    def __repr__(self):
        return f"DeltaPotential({self.base!r} + {self.delta!r})"

    @property
    def species(self) -> tuple[str, ...]:
        return tuple(s for s in self.base.species if s in self.delta.species)

    @property
    def atomic_numbers(self) -> tuple[int, ...]:
        """Elements both parts support."""
        from ..structures import SYMBOLS

        return tuple(SYMBOLS.index(s) for s in self.species)

    @property
    def cutoff(self) -> float:
        """The larger radial cutoff of the two parts (Å)."""
        return max(self.base.cutoff, self.delta.cutoff)

    @staticmethod
    def _combine(b: Result, d: Result) -> Result:
        forces = None if b.forces is None or d.forces is None else b.forces + d.forces
        return Result(b.energy + d.energy, forces, float(np.hypot(b.energy_std, d.energy_std)),
                      np.asarray(d.member_energies) + b.energy, b.num_atoms)

    def __call__(self, numbers, positions=None, *, forces: bool = True, charge=0, **kw) -> Result:
        """One structure (``atoms`` or ``numbers, positions``; ``cell=`` as for the parts)."""
        return self._combine(self.base(numbers, positions, forces=forces, charge=charge, **kw),
                             self.delta(numbers, positions, forces=forces, charge=charge, **kw))

    def evaluate(self, structures: Iterable, *, forces: bool = True, **kw) -> list[Result]:
        structures = list(structures)
        return [self._combine(b, d) for b, d in zip(self.base.evaluate(structures, forces=forces, **kw),
                                                   self.delta.evaluate(structures, forces=forces, **kw))]

    def energy(self, numbers, positions=None, *, charge=0) -> float:
        return self(numbers, positions, forces=False, charge=charge).energy

    def forces(self, numbers, positions=None, *, charge=0) -> np.ndarray:
        return self(numbers, positions, charge=charge).forces

    def stress(self, numbers, positions=None, **kw) -> tuple[Result, np.ndarray]:
        """``(Result, stress [3, 3] eV/Å^3)`` of a periodic structure: the parts' sums."""
        (rb, sb), (rd, sd) = self.base.stress(numbers, positions, **kw), self.delta.stress(numbers, positions, **kw)
        return self._combine(rb, rd), np.asarray(sb) + np.asarray(sd)

    def hessian(self, numbers, positions=None, *, charge=0) -> np.ndarray:
        """``[3A, 3A]`` (eV/Å²): the base's plus the Δ ensemble's."""
        return self.base.hessian(numbers, positions, charge=charge) + self.delta.hessian(numbers, positions,
                                                                                        charge=charge)
