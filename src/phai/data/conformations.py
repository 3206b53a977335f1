"""Conformation sets: groups of conformers of one molecule (or one formula), with labels.

A :class:`ConformerGroup` holds ``C`` conformations of one molecule: the same ``A`` atoms in
the same order, ``C`` sets of positions, and optional labels per conformation. A
:class:`Conformations` is an ordered, immutable sequence of groups; its length is the number
of conformations. Conformations are numbered globally ``0 .. len - 1`` in group order (the
index used by :meth:`Conformations.select` and by the batch plans of :mod:`phai.data.batches`).

Units (phai's public units): positions Å, energies eV, forces eV/Å, charges e, dipoles e·Å.
Hartree appears only inside the file readers (:mod:`phai.data.ani_h5`), which convert.

Splitting is by *molecule* (:attr:`ConformerGroup.molecule`), never by conformation, so that no
conformer of a test molecule is seen in training. In the public ANI HDF5 files a group is one
molecular formula (several isomers), so there the formula is the finest safe unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..structures import SYMBOLS

__all__ = ["Conformations", "ConformerGroup", "connectivity", "formula"]


def formula(numbers: Sequence[int]) -> str:
    """Hill formula of atomic numbers ``[A]``: C first, then H, then the rest alphabetically
    (``[6, 1, 1, 1, 1] -> "CH4"``); without carbon, all alphabetically (``"H2O"``)."""
    z = np.asarray(numbers, dtype=np.int64)
    counts = {SYMBOLS[k]: int(c) for k, c in zip(*np.unique(z, return_counts=True))}
    order = (["C", "H"] if "C" in counts else []) + sorted(s for s in counts if s not in ("C", "H") or "C" not in counts)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def connectivity(numbers: np.ndarray, positions: np.ndarray, scale: float = 1.25) -> frozenset:
    """Bonds ``{(i, j)}`` (``i < j``) between atoms closer than ``scale`` times the sum of their
    covalent radii (ASE's ``ase.data.covalent_radii``, Å). Used to tell isomers apart."""
    from ase.data import covalent_radii
    from scipy.spatial import cKDTree

    z = np.asarray(numbers, dtype=np.int64)
    r = np.asarray(positions, dtype=np.float64)
    radii = covalent_radii[z]
    tree = cKDTree(r)
    pairs = tree.query_pairs(scale * 2.0 * float(radii.max()), output_type="ndarray")
    if len(pairs) == 0:
        return frozenset()
    d = np.linalg.norm(r[pairs[:, 0]] - r[pairs[:, 1]], axis=1)
    keep = d <= scale * (radii[pairs[:, 0]] + radii[pairs[:, 1]])
    return frozenset((int(min(i, j)), int(max(i, j))) for i, j in pairs[keep])


def _array(name: str, field: str, value, dtype, shape: tuple, finite: bool = True) -> np.ndarray:
    """``value`` as a read-only contiguous array of ``dtype`` and ``shape`` (None = any size)."""
    try:
        a = np.array(value, dtype=dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"group {name!r}: field {field!r} is not a numeric array ({exc})") from None
    if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"group {name!r}: field {field!r} has shape {a.shape}, expected {want}")
    if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
        where = tuple(int(k) for k in np.argwhere(~np.isfinite(a))[0])
        raise InputError(f"group {name!r}: field {field!r} has a non-finite value {a[where]} at index {where}")
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class ConformerGroup:
    """``C`` conformations of one molecule (or formula) with optional labels.

    Attributes:
      name: group name (a formula such as ``"C2H6O"`` or a molecule id); need not be unique.
      numbers: ``[A]`` int64 atomic numbers (1-118; chemical symbols are accepted), the same
        for every conformation.
      positions: ``[C, A, 3]`` float64, Å (a single ``[A, 3]`` structure is taken as ``C = 1``).
      energy: ``[C]`` float64 total energies, eV, or None.
      forces: ``[C, A, 3]`` float64, eV/Å, or None.
      properties: extra per-conformation arrays with leading dimension ``C``, e.g.
        ``"charges"`` ``[C, A]`` (e) or ``"dipole"`` ``[C, 3]`` (e·Å). Units are the caller's;
        the ANI HDF5 reader converts only energies and forces.
      molecule: the id used by :meth:`Conformations.split_by_molecule`; defaults to ``name``.

    All arrays are copied, validated (shapes, finite values, known elements) and made
    read-only; a problem raises :class:`~phai.errors.InputError` naming the group and field.
    """

    name: str
    numbers: np.ndarray
    positions: np.ndarray
    energy: np.ndarray | None = None
    forces: np.ndarray | None = None
    properties: dict = dataclasses.field(default_factory=dict)
    molecule: str = ""

    def __post_init__(self):
        name = str(self.name)
        numbers = self.numbers
        if not isinstance(numbers, str) and np.asarray(numbers).dtype.kind in "USO":  # symbols ["C", "H", ...]
            from ..structures import atomic_numbers

            try:
                numbers = atomic_numbers([str(x) for x in np.asarray(numbers).reshape(-1)])
            except InputError as exc:
                raise InputError(f"group {name!r}: field 'numbers': {exc}") from None
        z = _array(name, "numbers", numbers, np.float64, (None,))
        if z.size == 0:
            raise InputError(f"group {name!r}: field 'numbers' is empty: a conformation needs atoms")
        if not (np.all(z == np.round(z)) and z.min() >= 1 and z.max() < len(SYMBOLS)):
            bad = z[(z != np.round(z)) | (z < 1) | (z >= len(SYMBOLS))][0]
            raise InputError(f"group {name!r}: field 'numbers' holds {bad!r}, not an atomic number (1-{len(SYMBOLS) - 1})")
        z = z.astype(np.int64)
        z.flags.writeable = False
        a = len(z)
        pos = np.asarray(self.positions) if not isinstance(self.positions, np.ndarray) else self.positions
        if getattr(pos, "ndim", 0) == 2:
            pos = pos[None]
        r = _array(name, "positions", pos, np.float64, (None, a, 3))
        c = r.shape[0]
        e = None if self.energy is None else _array(name, "energy", np.reshape(self.energy, -1) if np.ndim(self.energy) == 0 else self.energy, np.float64, (c,))
        f = None if self.forces is None else _array(name, "forces", self.forces, np.float64, (c, a, 3))
        props = {}
        for key, value in dict(self.properties).items():
            v = np.asarray(value)
            if v.ndim == 0 or v.shape[0] != c:
                raise InputError(f"group {name!r}: property {key!r} has shape {v.shape}; its leading "
                                 f"dimension must be the {c} conformations")
            props[str(key)] = _array(name, key, v, v.dtype if v.dtype.kind in "biu" else np.float64, (c,) + (None,) * (v.ndim - 1))
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "numbers", z)
        set_(self, "positions", r)
        set_(self, "energy", e)
        set_(self, "forces", f)
        set_(self, "properties", props)
        set_(self, "molecule", str(self.molecule) if self.molecule else name)

    def __len__(self) -> int:
        return self.positions.shape[0]

    def __repr__(self):
        labels = [k for k, v in (("energy", self.energy), ("forces", self.forces)) if v is not None]
        return (f"ConformerGroup({self.name!r}, {self.formula}, {len(self)} conformations, "
                f"molecule={self.molecule!r}, labels={labels + sorted(self.properties)})")

    @property
    def num_atoms(self) -> int:
        return len(self.numbers)

    @property
    def formula(self) -> str:
        return formula(self.numbers)

    def take(self, index) -> ConformerGroup:
        """The conformations ``index`` (int array or bool mask over ``C``) as a new group."""
        idx = np.arange(len(self))[index]
        return ConformerGroup(
            self.name, self.numbers, self.positions[idx],
            None if self.energy is None else self.energy[idx],
            None if self.forces is None else self.forces[idx],
            {k: v[idx] for k, v in self.properties.items()}, self.molecule)

    def replace(self, **changes) -> ConformerGroup:
        """A copy with fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


class Conformations:
    """An immutable ordered sequence of :class:`ConformerGroup` s.

    ``len(c)`` is the number of conformations; conformation ``k`` is numbered globally in
    group order. Build one from groups, from ASE (:meth:`from_ase`), from an ANI HDF5 file
    (:func:`phai.data.read_ani_h5`) or from extended XYZ (:func:`phai.data.read_extxyz`).
    """

    def __init__(self, groups: Iterable[ConformerGroup] = ()):
        groups = tuple(groups)
        for k, g in enumerate(groups):
            if not isinstance(g, ConformerGroup):
                raise InputError(f"group {k}: expected a ConformerGroup, got {type(g).__name__}")
        self._groups = tuple(g for g in groups if len(g))
        sizes = np.array([len(g) for g in self._groups], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    # ----------------------------------------------------------------- basic access
    @property
    def groups(self) -> tuple[ConformerGroup, ...]:
        return self._groups

    @property
    def num_groups(self) -> int:
        return len(self._groups)

    @property
    def offsets(self) -> np.ndarray:
        """``[num_groups + 1]`` int64: group ``g`` holds conformations ``offsets[g]:offsets[g+1]``."""
        return self._offsets

    @property
    def group_sizes(self) -> np.ndarray:
        """``[num_groups]`` int64 conformations per group."""
        return np.diff(self._offsets)

    @property
    def group_atoms(self) -> np.ndarray:
        """``[num_groups]`` int64 atoms per conformation of each group."""
        return np.array([g.num_atoms for g in self._groups], dtype=np.int64)

    @property
    def molecules(self) -> tuple[str, ...]:
        """Distinct molecule ids, in order of first appearance."""
        return tuple(dict.fromkeys(g.molecule for g in self._groups))

    @property
    def has_energy(self) -> bool:
        return bool(self._groups) and all(g.energy is not None for g in self._groups)

    @property
    def has_forces(self) -> bool:
        return bool(self._groups) and all(g.forces is not None for g in self._groups)

    @property
    def property_keys(self) -> tuple[str, ...]:
        """Property names present in every group."""
        if not self._groups:
            return ()
        keys = set(self._groups[0].properties)
        for g in self._groups[1:]:
            keys &= set(g.properties)
        return tuple(sorted(keys))

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def load_groups(self, indices: Sequence[int]) -> list[ConformerGroup]:
        """The groups ``indices`` (the :class:`phai.data.batches.BatchSource` protocol)."""
        return [self._groups[int(i)] for i in indices]

    def __iter__(self) -> Iterator[ConformerGroup]:
        return iter(self._groups)

    def __add__(self, other: Conformations) -> Conformations:
        return Conformations.concat(self, other)

    def __repr__(self):
        return f"Conformations({len(self)} conformations in {self.num_groups} groups)"

    def locate(self, index) -> tuple[np.ndarray, np.ndarray]:
        """Global conformation indices ``[K]`` -> ``(group [K], conformation within group [K])``."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise InputError(f"conformation index out of range 0..{len(self) - 1}: {idx[(idx < 0) | (idx >= len(self))][0]}")
        g = np.searchsorted(self._offsets, idx, side="right") - 1
        return g, idx - self._offsets[g]

    def conformation(self, index: int) -> tuple[np.ndarray, np.ndarray, float | None, np.ndarray | None]:
        """``(numbers [A], positions [A, 3] Å, energy eV or None, forces [A, 3] eV/Å or None)``."""
        g, c = self.locate([index])
        grp = self._groups[int(g[0])]
        c = int(c[0])
        return (grp.numbers, grp.positions[c], None if grp.energy is None else float(grp.energy[c]),
                None if grp.forces is None else grp.forces[c])

    def iter_conformations(self) -> Iterator[tuple[np.ndarray, np.ndarray, float | None, np.ndarray | None]]:
        """Yield ``(numbers [A], positions [A, 3] Å, energy eV | None, forces [A, 3] eV/Å | None)``
        for every conformation, in global order."""
        for g in self._groups:
            for c in range(len(g)):
                yield (g.numbers, g.positions[c], None if g.energy is None else float(g.energy[c]),
                       None if g.forces is None else g.forces[c])

    # ----------------------------------------------------------------- combining and subsets
    @classmethod
    def concat(cls, *parts: Conformations | Iterable[Conformations]) -> Conformations:
        """Concatenate sets: ``Conformations.concat(a, b, c)`` or ``Conformations.concat([a, b])``.
        Groups are kept as they are (a name may then appear twice)."""
        if len(parts) == 1 and not isinstance(parts[0], Conformations):
            parts = tuple(parts[0])
        groups = []
        for k, p in enumerate(parts):
            if not isinstance(p, Conformations):
                raise InputError(f"part {k}: expected Conformations, got {type(p).__name__}")
            groups.extend(p.groups)
        return cls(groups)

    def select(self, index) -> Conformations:
        """The conformations chosen by global indices ``[K]`` (any order, no duplicates) or by a
        boolean mask ``[len]``. They keep their order in this set; emptied groups are dropped."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise InputError(f"a boolean mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.nonzero(idx)[0]
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(np.unique(idx)) != len(idx):
            raise InputError("select: duplicate conformation indices")
        g, c = self.locate(np.sort(idx))
        out = []
        for gi in np.unique(g):
            out.append(self._groups[gi].take(c[g == gi]))
        return Conformations(out)

    def select_groups(self, index) -> Conformations:
        """Whole groups chosen by group indices or a boolean mask over groups."""
        idx = np.arange(self.num_groups)[np.asarray(index)]
        return Conformations(self._groups[int(i)] for i in np.atleast_1d(idx))

    def split_by_molecule(self, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                          seed: int = 0) -> tuple[Conformations, ...]:
        """Split into ``len(fractions)`` parts with no molecule id in two parts.

        The distinct molecule ids are shuffled with ``numpy.random.default_rng(seed)``; then each
        molecule goes, in that order, to the part whose cumulative share of *conformations*
        contains the molecule's midpoint, so the parts hold about ``fractions`` of the
        conformations (exactly only if molecules are small). Deterministic given ``seed``
        and the set; groups keep their relative order inside each part.
        """
        fr = np.asarray(fractions, dtype=np.float64).reshape(-1)
        if fr.size == 0 or np.any(fr < 0) or not np.isfinite(fr).all() or abs(fr.sum() - 1.0) > 1e-6:
            raise InputError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
        mols = sorted(self.molecules)
        counts = {m: 0 for m in mols}
        for g in self._groups:
            counts[g.molecule] += len(g)
        order = np.random.default_rng(seed).permutation(len(mols))
        bounds = np.cumsum(fr) * len(self)
        part_of, done = {}, 0
        for k in order:
            m = mols[k]
            mid = done + 0.5 * counts[m]
            part_of[m] = int(min(np.searchsorted(bounds, mid, side="right"), len(fr) - 1))
            done += counts[m]
        return tuple(Conformations(g for g in self._groups if part_of[g.molecule] == p) for p in range(len(fr)))

    # ----------------------------------------------------------------- ASE
    @classmethod
    def from_ase(cls, frames: Iterable, energy_key: str | None = "energy", forces_key: str | None = "forces",
                 *, forces: bool = True, molecule_key: str = "molecule",
                 properties: Sequence[str] = ()) -> Conformations:
        """Group ``ase.Atoms`` frames into molecules.

        Labels: the energy (eV) is ``atoms.info[energy_key]``, else the attached calculator's
        ``get_potential_energy()``; forces (eV/Å) are ``atoms.arrays[forces_key]``, else the
        calculator's, when ``forces`` is true. A label missing from one frame but present in
        another is an error (``energy_key=None`` reads no energies). ``properties`` names extra
        per-frame ``info`` or per-atom ``arrays`` entries to keep.

        Grouping: frames with the same ``atoms.info[molecule_key]`` form one molecule (their
        atomic numbers must agree, in order), named by its first frame's ``info["group"]`` if
        present (as written by :meth:`to_ase`), else by the molecule id. Frames without that key are grouped by formula,
        atom order and connectivity (bonds where atoms are closer than 1.25 times the sum of
        their covalent radii, :func:`connectivity`), so isomers become different molecules; name
        ``"C2H6O"``, then ``"C2H6O-1"``, ... for further isomers. Strongly distorted
        conformers may change connectivity: give ``info[molecule_key]`` for such data.
        """
        frames = list(frames)
        keyed: dict = {}
        isomers: dict = {}
        order = []
        for k, atoms in enumerate(frames):
            if not hasattr(atoms, "get_atomic_numbers"):
                raise InputError(f"frame {k}: expected an ase.Atoms, got {type(atoms).__name__}")
            z = atoms.get_atomic_numbers().astype(np.int64)
            if molecule_key in atoms.info:
                key = ("id", str(atoms.info[molecule_key]))
                if key in keyed and not np.array_equal(keyed[key][0][1], z):
                    raise InputError(f"frame {k}: molecule {key[1]!r} has atomic numbers different from its "
                                     f"earlier frames (same atoms in the same order are required)")
            else:
                base = (tuple(z.tolist()), connectivity(z, atoms.get_positions()))
                key = isomers.get(base)
                if key is None:
                    f = formula(z)
                    n = sum(1 for b in isomers if formula(b[0]) == f)
                    key = ("auto", f if n == 0 else f"{f}-{n}")
                    isomers[base] = key
            if key not in keyed:
                keyed[key] = []
                order.append(key)
            keyed[key].append((k, z, atoms))
        groups = []
        for key in order:
            items = keyed[key]
            name = key[1]
            e = [_frame_energy(a, energy_key, k) for k, _, a in items] if energy_key else None
            f = [_frame_forces(a, forces_key, k) for k, _, a in items] if forces and forces_key else None
            e = _all_or_none(e, "energy", name)
            f = _all_or_none(f, "forces", name)
            props = {}
            for p in properties:
                vals = []
                for k, _, a in items:
                    if p in a.info:
                        vals.append(np.asarray(a.info[p]))
                    elif p in a.arrays:
                        vals.append(np.asarray(a.arrays[p]))
                    elif a.calc is not None and p in getattr(a.calc, "results", {}):
                        vals.append(np.asarray(a.calc.results[p]))  # ASE's extxyz moves "charges" there
                    else:
                        raise InputError(f"frame {k}: property {p!r} is in neither atoms.info, atoms.arrays "
                                         f"nor the attached calculator's results")
                props[p] = np.stack(vals)
            label = str(items[0][2].info.get("group", name)) if key[0] == "id" else name
            groups.append(ConformerGroup(label, items[0][1], np.stack([a.get_positions() for _, _, a in items]),
                                         e, f, props, name))
        return cls(groups)

    def to_ase(self, energy_key: str = "energy", forces_key: str = "forces") -> list:
        """One ``ase.Atoms`` per conformation, in global order: ``info["molecule"]`` and
        ``info["group"]`` name its molecule and group; energy and forces are attached as a
        ``SinglePointCalculator`` and also stored as ``info[energy_key]``/``arrays[forces_key]``
        (so that they survive extended XYZ); properties go to ``arrays`` if per atom (second
        dimension ``A``, and a name without "dipole"/"quadrupole"/"moment", which are per
        molecule even for three atoms), else to ``info``."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        out = []
        for g in self._groups:
            for c in range(len(g)):
                atoms = Atoms(numbers=g.numbers, positions=g.positions[c])
                atoms.info["molecule"] = g.molecule
                atoms.info["group"] = g.name
                results = {}
                if g.energy is not None:
                    results["energy"] = float(g.energy[c])
                    atoms.info[energy_key] = float(g.energy[c])
                if g.forces is not None:
                    results["forces"] = g.forces[c].copy()
                    atoms.arrays[forces_key] = g.forces[c].copy()
                for k, v in g.properties.items():
                    if _per_atom(k, v, g.num_atoms):
                        atoms.arrays[k] = v[c].copy()
                    else:
                        atoms.info[k] = v[c].copy() if v.ndim > 1 else v[c].item()
                if results:
                    atoms.calc = SinglePointCalculator(atoms, **results)
                out.append(atoms)
        return out

    # ----------------------------------------------------------------- arrays over all conformations
    def energies(self) -> np.ndarray:
        """``[len]`` float64 energies (eV) in global order; an error if a group has none."""
        for g in self._groups:
            if g.energy is None:
                raise InputError(f"group {g.name!r}: field 'energy' is missing (no energies to gather)")
        return np.concatenate([g.energy for g in self._groups]) if self._groups else np.zeros(0)

    def to_lists(self) -> dict:
        """Per-conformation lists in global order, for code that works conformation by
        conformation: ``{"numbers": [[A_c] int64], "positions": [[A_c, 3] Å], "energies": [C]
        eV or None, "forces": [[A_c, 3] eV/Å] or None, "molecules": [C] str, "groups": [C] str}``
        (arrays are read-only views, not copies)."""
        out = {"numbers": [], "positions": [], "forces": [] if self.has_forces else None}
        for g in self._groups:
            out["numbers"].extend([g.numbers] * len(g))
            out["positions"].extend(list(g.positions))
            if out["forces"] is not None:
                out["forces"].extend(list(g.forces))
        out["energies"] = self.energies() if self.has_energy else None
        out["molecules"] = np.repeat(np.array([g.molecule for g in self._groups], dtype=object), self.group_sizes)
        out["groups"] = np.repeat(np.array([g.name for g in self._groups], dtype=object), self.group_sizes)
        return out

    def num_atoms(self) -> np.ndarray:
        """``[len]`` int64 atoms of each conformation, in global order."""
        return np.repeat(self.group_atoms, self.group_sizes)

    def element_counts(self, species: Sequence[int | str]) -> np.ndarray:
        """``[len, S]`` int64: atoms of each element of ``species`` (atomic numbers or symbols, in
        the model's order) in each conformation; the design matrix of the self-energy
        regression ``E ~ counts @ sae``. An element outside ``species`` is an error."""
        from ..structures import atomic_numbers

        z_of = atomic_numbers(list(species))
        rows = []
        for g in self._groups:
            extra = sorted(set(g.numbers.tolist()) - set(z_of.tolist()))
            if extra:
                raise InputError(f"group {g.name!r}: element {SYMBOLS[extra[0]]} is not among the species "
                                 f"{[SYMBOLS[z] for z in z_of]}")
            counts = (g.numbers[None, :] == z_of[:, None]).sum(axis=1)
            rows.append(np.broadcast_to(counts, (len(g), len(z_of))))
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, len(z_of)), np.int64)

    # ----------------------------------------------------------------- summaries
    def statistics(self) -> dict:
        """Counts and ranges; see :func:`statistics`."""
        return statistics(self._groups)


def statistics(groups: Iterable[ConformerGroup]) -> dict:
    """Counts and ranges of groups, accumulated one group at a time (works on a stream such as
    :func:`phai.data.iter_ani_h5`): ``num_conformations``, ``num_groups``, ``num_molecules``,
    ``elements`` ``{symbol: {"atoms": total atoms, "conformations": conformations containing it}}``,
    ``atoms`` ``(min, max)`` per conformation, ``has_forces``, ``properties`` (in every group),
    and, if every group has energies, ``energy`` ``{"min", "max", "mean"}`` (eV) and
    ``energy_per_atom`` likewise (eV)."""
    elements: dict = {}
    n_conf = n_groups = 0
    molecules: set = set()
    lo, hi = None, None
    forces, energies = True, True
    props = None
    e_min = e_max = epa_min = epa_max = None
    e_sum = epa_sum = 0.0
    for g in groups:
        n_groups += 1
        n_conf += len(g)
        molecules.add(g.molecule)
        lo = g.num_atoms if lo is None else min(lo, g.num_atoms)
        hi = g.num_atoms if hi is None else max(hi, g.num_atoms)
        forces &= g.forces is not None
        props = set(g.properties) if props is None else props & set(g.properties)
        zs, cnt = np.unique(g.numbers, return_counts=True)
        for z, n in zip(zs, cnt):
            d = elements.setdefault(SYMBOLS[int(z)], {"atoms": 0, "conformations": 0})
            d["atoms"] += int(n) * len(g)
            d["conformations"] += len(g)
        if g.energy is None:
            energies = False
        elif energies:
            epa = g.energy / g.num_atoms
            e_min = float(g.energy.min()) if e_min is None else min(e_min, float(g.energy.min()))
            e_max = float(g.energy.max()) if e_max is None else max(e_max, float(g.energy.max()))
            epa_min = float(epa.min()) if epa_min is None else min(epa_min, float(epa.min()))
            epa_max = float(epa.max()) if epa_max is None else max(epa_max, float(epa.max()))
            e_sum += float(g.energy.sum())
            epa_sum += float(epa.sum())
    out = {"num_conformations": n_conf, "num_groups": n_groups, "num_molecules": len(molecules),
           "elements": dict(sorted(elements.items(), key=lambda kv: SYMBOLS.index(kv[0]))),
           "atoms": (lo or 0, hi or 0), "has_forces": bool(n_groups and forces),
           "properties": tuple(sorted(props or ()))}
    if n_groups and energies:
        out["energy"] = {"min": e_min, "max": e_max, "mean": e_sum / n_conf}
        out["energy_per_atom"] = {"min": epa_min, "max": epa_max, "mean": epa_sum / n_conf}
    return out


def _per_atom(key: str, value: np.ndarray, num_atoms: int) -> bool:
    """Whether a property ``[C, ...]`` is per atom (``[C, A, ...]``) rather than per conformation."""
    molecular = any(w in key.lower() for w in ("dipole", "quadrupole", "moment"))
    return value.ndim >= 2 and value.shape[1] == num_atoms and not molecular


def _frame_energy(atoms, key: str, k: int):
    if key in atoms.info:
        try:
            return float(atoms.info[key])
        except (TypeError, ValueError):
            raise InputError(f"frame {k}: info[{key!r}] = {atoms.info[key]!r} is not a number (eV)") from None
    if atoms.calc is not None and key == "energy":
        try:
            return float(atoms.get_potential_energy())
        except Exception:  # noqa: BLE001 - a calculator without stored results
            return None
    return None


def _frame_forces(atoms, key: str, k: int):
    if key in atoms.arrays:
        return np.asarray(atoms.arrays[key], dtype=np.float64)
    if atoms.calc is not None and key == "forces":
        try:
            return np.asarray(atoms.get_forces(), dtype=np.float64)
        except Exception:  # noqa: BLE001
            return None
    return None


def _all_or_none(values, field: str, name: str):
    if values is None:
        return None
    have = [v is not None for v in values]
    if not any(have):
        return None
    if not all(have):
        raise InputError(f"group {name!r}: field {field!r} is missing from frame {have.index(False)} of the "
                         f"group but present in others; label every frame or none")
    return np.stack(values) if field == "forces" else np.asarray(values, dtype=np.float64)
