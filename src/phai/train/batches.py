"""Training sets held in memory and their assembly into padded, fixed-shape batches.

A training batch is ``D`` sub-batches (``D`` devices, 1 by default), each a packed flat
system (:func:`phai.batching.pack`) re-padded to common capacities and stacked along a
leading axis, so that the batch axis can be sharded over devices. Shapes come from the
size ladder of :func:`phai.structures.bucket`, and a :class:`ShapePolicy` pads every batch
up to the largest capacities already compiled for its atom bucket, so a run compiles its
step only a few times. The policy is saved in checkpoints: a resumed run pads exactly as
the interrupted one did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..batching import Packed, pack
from ..errors import InputError
from ..structures import SYMBOLS, bucket, validate_structure
from ..units import EV_TO_HARTREE


@dataclasses.dataclass
class TrainingSet:
    """Labelled conformations (host memory).

    Attributes:
      numbers: ``C`` arrays ``[A_c]`` of atomic numbers.
      positions: ``C`` arrays ``[A_c, 3]`` (Å).
      energies: ``[C]`` (eV).
      forces: ``C`` arrays ``[A_c, 3]`` (eV/Å) or ``None``.
      groups: ``[C]`` molecule label of each conformation (for splits by molecule and
        relative energies), or ``None``.
    """

    numbers: list
    positions: list
    energies: np.ndarray
    forces: list | None = None
    groups: np.ndarray | None = None

    def __post_init__(self):
        self.energies = np.asarray(self.energies, np.float64).reshape(-1)
        if not (len(self.numbers) == len(self.positions) == len(self.energies)):
            raise InputError(f"{len(self.numbers)} atomic-number arrays, {len(self.positions)} position arrays "
                             f"and {len(self.energies)} energies: they must match")
        if self.forces is not None and len(self.forces) != len(self.numbers):
            raise InputError(f"{len(self.forces)} force arrays for {len(self.numbers)} conformations")
        if not np.all(np.isfinite(self.energies)):
            raise InputError(f"energy of conformation {int(np.argmin(np.isfinite(self.energies)))} is not finite")
        if self.groups is not None:
            self.groups = np.asarray(self.groups)

    def __len__(self) -> int:
        return len(self.energies)

    def subset(self, idx) -> TrainingSet:
        idx = np.asarray(idx, dtype=np.int64)
        return TrainingSet([self.numbers[i] for i in idx], [self.positions[i] for i in idx], self.energies[idx],
                           None if self.forces is None else [self.forces[i] for i in idx],
                           None if self.groups is None else self.groups[idx])

    def load(self, index) -> TrainingSet:
        """The conformations ``index`` as arrays in memory (here: :meth:`subset`; a
        :class:`phai.train.stream.StreamedTrainingSet` reads them from its file)."""
        return self.subset(index)

    def validate(self, supported: Sequence[int], model: str = "the model") -> None:
        """Check every conformation on the host (elements, shapes, finiteness, overlaps)."""
        for c, (z, r) in enumerate(zip(self.numbers, self.positions)):
            try:
                validate_structure(z, r, supported=supported, model=model)
                if self.forces is not None and np.shape(self.forces[c]) != np.shape(r):
                    raise InputError(f"forces have shape {np.shape(self.forces[c])}, positions {np.shape(r)}")
                if self.forces is not None and not np.all(np.isfinite(self.forces[c])):
                    raise InputError("forces are not finite")
            except InputError as exc:
                raise type(exc)(f"conformation {c}: {exc}") from None

    @classmethod
    def from_conformations(cls, conf) -> TrainingSet:
        """From a :class:`phai.data.Conformations` (eV, eV/Å); molecules become ``groups``."""
        if not conf.has_energy:
            raise InputError("the conformations carry no energies to train on")
        lists = conf.to_lists()
        return cls(lists["numbers"], lists["positions"], lists["energies"], lists["forces"], lists["molecules"])

    @classmethod
    def from_frames(cls, frames, energies=None, forces=None, groups=None):
        """From ASE atoms (energies eV, forces eV/Å; default: ``atoms.info['energy']`` and
        ``atoms.arrays['forces']``)."""
        numbers = [a.get_atomic_numbers() for a in frames]
        positions = [a.get_positions() for a in frames]
        if energies is None:
            energies = [a.info["energy"] for a in frames]
        if forces is None and all("forces" in a.arrays for a in frames):
            forces = [a.arrays["forces"] for a in frames]
        return cls(numbers, positions, np.asarray(energies), forces, groups)


def split_by_group(groups, fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Indices of conformations split by molecule: no group is in two parts.

    ``fractions`` (summing to 1) are fractions of the groups, shuffled with ``seed``."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    order = uniq[rng.permutation(len(uniq))]
    bounds = np.round(np.cumsum([0.0, *fractions]) * len(uniq)).astype(int)
    return [np.nonzero(np.isin(groups, order[bounds[k]:bounds[k + 1]]))[0] for k in range(len(fractions))]


class ShapePolicy:
    """Chooses the padded shape of the sub-batches of a run: one shape for all of them,
    the elementwise maximum of every need seen so far (atom slots, pair and triple
    capacities, species slots, molecules), so the step compiles once after a warm-up scan
    (:meth:`Trainer.warm_up`) and again only if a later batch needs more room.

    State is a JSON-able list ``[N, P, T, slots..., B]`` (empty before the first batch)."""

    def __init__(self, state: list | None = None):
        self.state = [int(x) for x in (state or [])]

    def grow(self, needs: list[tuple]) -> None:
        for x in needs:
            self.state = list(x) if not self.state else [max(a, b) for a, b in zip(self.state, x)]

    def choose(self, needs: list[tuple]) -> tuple:
        self.grow(needs)
        return tuple(self.state)

    def to_json(self) -> list:
        return list(self.state)


def needs(p: Packed) -> tuple:
    return (p.R.shape[0], p.pairs.shape[1], p.triples.shape[1], *(len(a) for a in p.species_atoms), p.num_molecules)


def _repad_index(a: np.ndarray, old: int, new: int, size: int) -> np.ndarray:
    a = np.where(a == old, new, a).astype(np.int32)
    out = np.full(a.shape[:-1] + (size,), new, dtype=np.int32)
    out[..., :a.shape[-1]] = a
    return out


def assemble(ts: TrainingSet, index: np.ndarray, *, species_of_z: np.ndarray, num_species: int,
             radial_cutoff: float, angular_cutoff: float, sae_hartree: np.ndarray, num_devices: int = 1,
             policy: ShapePolicy | None = None, with_forces: bool = False) -> dict:
    """Build one training batch from conformations ``index`` (split over ``num_devices``).

    ``ts`` is a :class:`TrainingSet` or anything with its ``load(index)`` (a streamed set).

    Returns a dict of NumPy arrays with a leading axis ``D``:
      ``R [D,N,3]`` Å, ``species/atom_mask/mol_index [D,N]``, ``pairs [D,2,P]``,
      ``triples [D,3,T]``, ``species_atoms``: tuple of ``[D,C_s]``, ``E [D,B]`` targets in
      Hartree with the self energies removed, ``num_atoms [D,B]``, ``mol_mask [D,B]``,
      ``F [D,N,3]`` Hartree/Å (if ``with_forces``); and ``num_molecules`` (static ``B``).
    """
    ts = ts.load(index)  # only this batch's coordinates and forces in memory (streamed sets read them now)
    parts = np.array_split(np.arange(len(ts)), num_devices)
    packs, targets = [], []
    for part in parts:
        species = [species_of_z[np.asarray(ts.numbers[c])] for c in part]
        packs.append(pack(species, [ts.positions[c] for c in part], num_species=num_species,
                          radial_cutoff=radial_cutoff, angular_cutoff=angular_cutoff))
        targets.append([ts.energies[c] * EV_TO_HARTREE - float(np.sum(sae_hartree[s])) for c, s in zip(part, species)])
    shape = (policy or ShapePolicy()).choose([needs(p) for p in packs])
    n, p_cap, t_cap, *slots, b = shape
    d = num_devices
    out = {"R": np.zeros((d, n, 3)), "species": np.zeros((d, n), np.int32), "atom_mask": np.zeros((d, n), bool),
           "mol_index": np.zeros((d, n), np.int32), "pairs": np.full((d, 2, p_cap), n, np.int32),
           "triples": np.full((d, 3, t_cap), n, np.int32), "E": np.zeros((d, b)), "num_atoms": np.ones((d, b)),
           "mol_mask": np.zeros((d, b), bool)}
    sa = [np.full((d, c), n, np.int32) for c in slots]
    if with_forces:
        out["F"] = np.zeros((d, n, 3))
    for k, (p, part) in enumerate(zip(packs, parts)):
        m = p.R.shape[0]
        out["R"][k, :m], out["species"][k, :m], out["atom_mask"][k, :m] = p.R, p.species, p.atom_mask
        out["mol_index"][k, :m] = p.mol_index
        out["pairs"][k] = _repad_index(p.pairs, m, n, p_cap)
        out["triples"][k] = _repad_index(p.triples, m, n, t_cap)
        for s, a in enumerate(p.species_atoms):
            sa[s][k] = _repad_index(a, m, n, slots[s])
        nb = len(part)
        out["E"][k, :nb] = targets[k]
        out["num_atoms"][k, :nb] = [len(ts.numbers[c]) for c in part]
        out["mol_mask"][k, :nb] = True
        if with_forces:
            for j, c in enumerate(part):
                out["F"][k, p.offsets[j]:p.offsets[j + 1]] = np.asarray(ts.forces[c]) * EV_TO_HARTREE
    out["species_atoms"] = tuple(sa)
    out["num_molecules"] = b
    return out


def species_lookup(species: Sequence[str]) -> np.ndarray:
    """``[119]`` int32 model species index of each atomic number (-1 elsewhere)."""
    table = np.full(len(SYMBOLS), -1, dtype=np.int32)
    for k, s in enumerate(species):
        table[SYMBOLS.index(s)] = k
    return table


__all__ = ["ShapePolicy", "TrainingSet", "assemble", "bucket", "species_lookup", "split_by_group"]
