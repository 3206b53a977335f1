"""The HDF5 layout of the public ANI data sets: read (in memory or streamed) and write.

Two layouts are read, detected per group:

* **ANI-1x / ANI-1ccx release** (``ani1x-release.h5``, Smith et al., Sci. Data 7, 134 (2020)):
  one group per molecular formula (e.g. ``/C10H10``) holding ``atomic_numbers`` ``[A]`` int,
  ``coordinates`` ``[C, A, 3]`` Å, and per-method arrays named ``<method>.<property>``:
  ``wb97x_dz.energy`` ``[C]`` Hartree, ``wb97x_dz.forces`` ``[C, A, 3]`` Hartree/Å,
  ``ccsd(t)_cbs.energy`` ``[C]`` Hartree, ``wb97x_dz.dipole`` ``[C, 3]``, ``wb97x_dz.cm5_charges``
  ``[C, A]``, ... A label not computed for a conformation is NaN (most conformations have no
  CCSD(T) energy), so such conformations are dropped per requested key.
* **ANI-1 style** (``ani_gdb_s0*.h5``, TorchANI's ``anidataloader``): groups nested to any
  depth; a leaf group holds ``species`` ``[A]`` chemical symbols (byte strings),
  ``coordinates`` ``[C, A, 3]`` Å and ``energies`` ``[C]`` Hartree (and sometimes ``smiles``,
  ``forces``). Leaves there are single molecules.

A *leaf* is any group holding at least one dataset; its name is its path without the leading
``/``. Energies named by ``energy_key`` are converted Hartree -> eV and forces by
``forces_key`` Hartree/Å -> eV/Å with :data:`phai.units.HARTREE_TO_EV`, unless the dataset
carries an attribute ``units`` of ``"eV"`` / ``"eV/Angstrom"`` (written by
:func:`write_ani_h5` with ``hartree=False``). Further datasets named in ``hartree_properties``
(another method's energies or forces, e.g. for Δ-learning) are converted the same way; other
``properties`` keep the file's units.

Every inconsistency (missing field, shapes that disagree, non-finite coordinates, not an HDF5
file) raises :class:`~phai.errors.InputError` naming the file, the group and the field.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..errors import InputError
from ..units import HARTREE_TO_EV
from .conformations import Conformations, ConformerGroup

__all__ = ["ANIH5Dataset", "ani_h5_keys", "iter_ani_h5", "open_ani_h5", "read_ani_h5", "write_ani_h5",
           "write_ani_h5_arrays"]

_STRUCTURE_FIELDS = ("atomic_numbers", "species", "coordinates")
_EV_UNITS = ("eV", "eV/Angstrom", "eV/A", "eV/Å")


def _open(path):
    import h5py

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"{p}: not a readable HDF5 file ({exc})") from None


def _leaves(f) -> list[str]:
    """Paths (no leading ``/``) of the groups that hold datasets, in the file's (sorted) order."""
    import h5py

    out = []

    def visit(grp, prefix):
        has_data = False
        for key in grp:
            try:
                item = grp[key]
            except (KeyError, OSError) as exc:
                raise InputError(f"{f.filename}: group {prefix + key!r} cannot be read ({exc})") from None
            if isinstance(item, h5py.Dataset):
                has_data = True
            elif isinstance(item, h5py.Group):
                visit(item, prefix + key + "/")
        if has_data and prefix:
            out.append(prefix[:-1])

    visit(f, "")
    return out


def _where(f, name: str, field: str | None = None) -> str:
    return f"{f.filename}: group {name!r}" + ("" if field is None else f", field {field!r}")


def _numbers(f, name: str, grp) -> np.ndarray:
    """Atomic numbers ``[A]`` of a leaf, from ``atomic_numbers`` or ``species`` (symbols)."""
    from ..structures import SYMBOLS, atomic_numbers

    if "atomic_numbers" in grp:
        z = np.asarray(grp["atomic_numbers"][()])
        if z.ndim != 1 or z.dtype.kind not in "iu" or z.size == 0:
            raise InputError(f"{_where(f, name, 'atomic_numbers')}: expected a non-empty 1-D integer array, got "
                             f"shape {z.shape} dtype {z.dtype}")
        if z.min() < 1 or z.max() >= len(SYMBOLS):
            raise InputError(f"{_where(f, name, 'atomic_numbers')}: value {z[(z < 1) | (z >= len(SYMBOLS))][0]} "
                             f"is not an atomic number")
        return z.astype(np.int64)
    if "species" in grp:
        raw = np.asarray(grp["species"][()])
        if raw.ndim != 1 or raw.size == 0:
            raise InputError(f"{_where(f, name, 'species')}: expected a non-empty 1-D array of symbols, got shape "
                             f"{raw.shape}")
        syms = [s.decode("ascii") if isinstance(s, (bytes, np.bytes_)) else s for s in raw.tolist()]
        try:
            return atomic_numbers(syms)
        except InputError as exc:
            raise InputError(f"{_where(f, name, 'species')}: {exc}") from None
    raise InputError(f"{_where(f, name)}: missing field 'atomic_numbers' (ANI-1x layout) or 'species' "
                     f"(ANI-1 layout)")


def _dataset(f, name: str, grp, key: str):
    if key not in grp:
        have = sorted(k for k in grp if k not in _STRUCTURE_FIELDS)
        raise InputError(f"{_where(f, name, key)}: missing (this group has {have})")
    return grp[key]


def _checked(f, name, grp, key: str, shape: tuple) -> np.ndarray:
    """Read ``grp[key]`` as float64 and check its shape (None = any)."""
    ds = _dataset(f, name, grp, key)
    if len(ds.shape) != len(shape) or any(s is not None and s != t for s, t in zip(shape, ds.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{_where(f, name, key)}: shape {ds.shape} does not match {want} "
                         f"(conformations and atoms of 'coordinates')")
    try:
        return np.asarray(ds[()], dtype=np.float64)
    except (TypeError, ValueError, OSError) as exc:
        raise InputError(f"{_where(f, name, key)}: cannot be read as numbers ({exc})") from None


def _scale(ds) -> float:
    units = ds.attrs.get("units", "Hartree")
    if isinstance(units, bytes):
        units = units.decode()
    return 1.0 if str(units) in _EV_UNITS else HARTREE_TO_EV


def _coordinates_shape(f, name, grp, a: int) -> tuple[int, int]:
    ds = _dataset(f, name, grp, "coordinates")
    if len(ds.shape) != 3 or ds.shape[1:] != (a, 3):
        raise InputError(f"{_where(f, name, 'coordinates')}: shape {ds.shape} does not match (conformations, {a}, 3) "
                         f"for the {a} atoms of '{'atomic_numbers' if 'atomic_numbers' in grp else 'species'}'")
    return ds.shape[0], a


def _labels(f, name, grp, c: int, a: int, energy_key, forces_key, properties):
    """Requested labels of a leaf, as stored, and ``ok [C]`` bool: conformations whose
    labels are all finite (NaN = not computed). Returns ``(ok, energy, forces, {key: array})``."""
    ok = np.ones(c, dtype=bool)
    e = frc = None
    if energy_key:
        e = _checked(f, name, grp, energy_key, (c,))
        ok &= np.isfinite(e)
    if forces_key:
        frc = _checked(f, name, grp, forces_key, (c, a, 3))
        ok &= np.isfinite(frc).all(axis=(1, 2))
    props = {}
    for key in properties:
        ds = _dataset(f, name, grp, key)
        if not ds.shape or ds.shape[0] != c:
            raise InputError(f"{_where(f, name, key)}: shape {ds.shape}; its leading dimension must be the {c} "
                             f"conformations of 'coordinates'")
        v = props[key] = np.asarray(ds[()])
        if v.dtype.kind == "f":
            ok &= np.isfinite(v.reshape(c, -1)).all(axis=1)
    return ok, e, frc, props


def _finite_coordinates(f, name, grp, c: int, a: int) -> np.ndarray:
    """``coordinates`` ``[C, A, 3]`` float64, Å; a non-finite value is an error, not a missing label."""
    r = _checked(f, name, grp, "coordinates", (c, a, 3))
    if not np.isfinite(r).all():
        k = int(np.nonzero(~np.isfinite(r).all(axis=(1, 2)))[0][0])
        raise InputError(f"{_where(f, name, 'coordinates')}: conformation {k} has a non-finite coordinate")
    return r


def _read_group(f, name: str, energy_key, forces_key, properties, keep: np.ndarray | None = None,
                hartree_properties: tuple = ()):
    """One leaf as a :class:`ConformerGroup` (None if no conformation survives) and the drop count."""
    grp = f[name]
    z = _numbers(f, name, grp)
    c, a = _coordinates_shape(f, name, grp, len(z))
    r = _finite_coordinates(f, name, grp, c, a)
    ok, e, frc, props = _labels(f, name, grp, c, a, energy_key, forces_key, properties + hartree_properties)
    if keep is not None and not np.array_equal(keep, ok):
        raise InputError(f"{_where(f, name)}: the file changed since it was indexed (labels differ); open it again")
    e = None if e is None else e[ok] * _scale(grp[energy_key])
    frc = None if frc is None else frc[ok] * _scale(grp[forces_key])
    props = {key: v[ok] * _scale(grp[key]) if key in hartree_properties else v[ok] for key, v in props.items()}
    molecule = grp.attrs.get("molecule", name)
    if isinstance(molecule, bytes):
        molecule = molecule.decode()
    dropped = int(c - ok.sum())
    if not ok.any():
        return None, dropped
    try:
        return ConformerGroup(name, z, r[ok], e, frc, props, str(molecule)), dropped
    except InputError as exc:
        raise InputError(f"{f.filename}: {exc}") from None


def _select(f, groups) -> list[str]:
    leaves = _leaves(f)
    if groups is None:
        return leaves
    known = set(leaves)
    names = [str(g).strip("/") for g in ([groups] if isinstance(groups, str) else groups)]
    for n in names:
        if n not in known:
            raise InputError(f"{f.filename}: no group {n!r} holding data (the file has {len(leaves)} such groups, "
                             f"e.g. {leaves[:3]})")
    return names


def _report(path, dropped: int, total: int, keys) -> None:
    if dropped:
        warnings.warn(f"{path}: dropped {dropped} of {total} conformations without finite "
                      f"{', '.join(k for k in keys if k)} (NaN marks labels that were not computed)", stacklevel=3)


def iter_ani_h5(path, energy_key: str | None, forces_key: str | None = None, properties: Sequence[str] = (),
                groups: Sequence[str] | None = None, *,
                hartree_properties: Sequence[str] = ()) -> Iterator[ConformerGroup]:
    """Stream the leaf groups of an ANI HDF5 file one at a time (memory: one group).

    Args:
      path: the ``.h5`` file.
      energy_key: energy dataset (``"wb97x_dz.energy"``, ``"ccsd(t)_cbs.energy"``, ``"energies"``
        for ANI-1), converted to eV; None reads geometries only.
      forces_key: forces dataset (``"wb97x_dz.forces"``), converted to eV/Å, or None.
      properties: further per-conformation datasets to keep as they are (file units).
      groups: leaf names to read (default all, in file order).
      hartree_properties: further datasets in Hartree or Hartree/Å (other methods' energies
        or forces), kept as properties in eV or eV/Å.

    Conformations with a NaN in any requested label are dropped; the total dropped is reported
    by a ``UserWarning`` when the iteration ends. Groups left empty are skipped.
    """
    properties, hartree_properties = _names(properties, hartree_properties)
    with _open(path) as f:
        dropped = total = 0
        for name in _select(f, groups):
            g, d = _read_group(f, name, energy_key, forces_key, properties, hartree_properties=hartree_properties)
            dropped += d
            total += d + (len(g) if g is not None else 0)
            if g is not None:
                yield g
        _report(path, dropped, total, (energy_key, forces_key, *properties, *hartree_properties))


def _names(properties, hartree_properties) -> tuple[tuple, tuple]:
    p = (properties,) if isinstance(properties, str) else tuple(properties)
    h = (hartree_properties,) if isinstance(hartree_properties, str) else tuple(hartree_properties)
    both = set(p) & set(h)
    if both:
        raise InputError(f"{min(both)!r} is named in both properties and hartree_properties")
    return p, h


def read_ani_h5(path, energy_key: str | None, forces_key: str | None = None, properties: Sequence[str] = (),
                groups: Sequence[str] | None = None, *, hartree_properties: Sequence[str] = ()) -> Conformations:
    """Read an ANI HDF5 file (or the named ``groups``) into memory; see :func:`iter_ani_h5`."""
    return Conformations(list(iter_ani_h5(path, energy_key, forces_key, properties, groups,
                                          hartree_properties=hartree_properties)))


def ani_h5_keys(path) -> dict:
    """What a file holds, without reading its arrays.

    Returns ``{"layout": "ani1x" | "ani1" | "mixed", "groups": number of leaf groups,
    "conformations": total (NaN labels included), "keys": {dataset name: number of groups
    holding it}}``; ``keys`` lists methods/properties such as ``"wb97x_dz.energy"`` (and the
    structure fields ``coordinates``, ``atomic_numbers``/``species``).
    """
    with _open(path) as f:
        leaves = _leaves(f)
        keys: dict[str, int] = {}
        layouts = set()
        conformations = 0
        for name in leaves:
            grp = f[name]
            layouts.add("ani1x" if "atomic_numbers" in grp else "ani1" if "species" in grp else "unknown")
            if "coordinates" in grp and len(grp["coordinates"].shape) == 3:
                conformations += grp["coordinates"].shape[0]
            for k in grp:
                if not hasattr(grp[k], "keys"):
                    keys[k] = keys.get(k, 0) + 1
        layout = layouts.pop() if len(layouts) == 1 else ("mixed" if layouts else "empty")
        return {"layout": layout, "groups": len(leaves), "conformations": conformations,
                "keys": dict(sorted(keys.items()))}


class ANIH5Dataset:
    """A lazily read ANI HDF5 file: the batching source for files larger than memory.

    Opening indexes the file in one streaming pass (one group in memory at a time): group
    names, atoms per conformation, and which conformations have finite requested labels.
    Arrays are read again only when :meth:`load_groups` asks (``iter_batches`` loads one
    window of groups at a time). Implements :class:`phai.data.batches.BatchSource`; global
    conformation numbering is that of :func:`read_ani_h5` on the same file and keys.
    """

    def __init__(self, path, energy_key: str | None, forces_key: str | None = None,
                 properties: Sequence[str] = (), groups: Sequence[str] | None = None, *,
                 hartree_properties: Sequence[str] = ()):
        self.path = Path(path)
        self.energy_key, self.forces_key = energy_key, forces_key
        self.properties, self.hartree_properties = _names(properties, hartree_properties)
        names, atoms, masks = [], [], []
        dropped = total = 0
        with _open(self.path) as f:
            for name in _select(f, groups):
                grp = f[name]
                z = _numbers(f, name, grp)
                c, a = _coordinates_shape(f, name, grp, len(z))
                _finite_coordinates(f, name, grp, c, a)  # a corrupt file fails now, not mid-training
                ok = _labels(f, name, grp, c, a, energy_key, forces_key, self.properties + self.hartree_properties)[0]
                dropped += int(c - ok.sum())
                total += c
                if ok.any():
                    names.append(name)
                    atoms.append(a)
                    masks.append(ok)
        _report(self.path, dropped, total, (energy_key, forces_key, *self.properties, *self.hartree_properties))
        self.names = tuple(names)
        self._atoms = np.array(atoms, dtype=np.int64)
        self._masks = masks
        self._sizes = np.array([int(m.sum()) for m in masks], dtype=np.int64)

    @property
    def group_sizes(self) -> np.ndarray:
        """``[G]`` int64 usable conformations per group."""
        return self._sizes

    @property
    def group_atoms(self) -> np.ndarray:
        """``[G]`` int64 atoms per conformation of each group."""
        return self._atoms

    @property
    def num_groups(self) -> int:
        return len(self.names)

    @property
    def has_energy(self) -> bool:
        return self.energy_key is not None and bool(self.names)

    @property
    def has_forces(self) -> bool:
        return self.forces_key is not None and bool(self.names)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._sizes.sum())

    def __repr__(self):
        return f"ANIH5Dataset({str(self.path)!r}, {len(self)} conformations in {self.num_groups} groups)"

    def load_groups(self, indices: Sequence[int]) -> list[ConformerGroup]:
        """Read the groups ``indices`` (checked against the index taken at opening)."""
        out = []
        with _open(self.path) as f:
            for i in indices:
                g, _ = _read_group(f, self.names[int(i)], self.energy_key, self.forces_key, self.properties,
                                   keep=self._masks[int(i)], hartree_properties=self.hartree_properties)
                out.append(g)
        return out

    def iter_groups(self) -> Iterator[ConformerGroup]:
        """Stream every group, in order."""
        for i in range(self.num_groups):
            yield self.load_groups([i])[0]

    def read(self) -> Conformations:
        """Everything, in memory."""
        return Conformations(self.iter_groups())


def open_ani_h5(path, energy_key: str | None, forces_key: str | None = None, properties: Sequence[str] = (),
                groups: Sequence[str] | None = None, *, hartree_properties: Sequence[str] = ()) -> ANIH5Dataset:
    """Index an ANI HDF5 file for streamed batching; see :class:`ANIH5Dataset`."""
    return ANIH5Dataset(path, energy_key, forces_key, properties, groups, hartree_properties=hartree_properties)


def _merge_by_name(conformations: Conformations) -> dict[str, list[ConformerGroup]]:
    merged: dict[str, list[ConformerGroup]] = {}
    for g in conformations.groups:
        if "/" in g.name or not g.name.strip() or g.name in (".",):
            raise InputError(f"group {g.name!r}: not a valid HDF5 group name (no '/', not empty)")
        first = merged.setdefault(g.name, [g])[0]
        if first is g:
            continue
        if not np.array_equal(first.numbers, g.numbers) or first.molecule != g.molecule:
            raise InputError(f"group {g.name!r} appears twice with different atoms or molecule ids; "
                             f"give the groups distinct names")
        merged[g.name].append(g)
    return merged


def _structure_group(f, name: str, attrs: dict, numbers, positions, compression: str | None = None):
    """A new group ``name`` with its attributes, ``atomic_numbers [A]`` (uint8) and
    ``coordinates [C, A, 3]`` (float64 Å)."""
    grp = f.create_group(name)
    for k, v in attrs.items():
        grp.attrs[k] = v
    grp.create_dataset("atomic_numbers", data=np.asarray(numbers).astype(np.uint8))
    grp.create_dataset("coordinates", data=positions, compression=compression)
    return grp


def _label_dataset(grp, key: str, value, hartree: bool, compression: str | None = None) -> None:
    """Energies ``[C]`` eV or forces ``[C, A, 3]`` eV/Å (any array: ``/Angstrom`` when 3-D) as
    dataset ``key``, in Hartree(/Å) if ``hartree`` else unchanged, with its ``units`` attribute."""
    ds = grp.create_dataset(key, data=value / HARTREE_TO_EV if hartree else value, compression=compression)
    ds.attrs["units"] = ("Hartree" if hartree else "eV") + ("/Angstrom" if np.ndim(value) == 3 else "")


def write_ani_h5(path, conformations: Conformations, energy_key: str | None = "wb97x_dz.energy",
                 forces_key: str | None = "wb97x_dz.forces", hartree: bool = True,
                 properties: Sequence[str] | None = None, compression: str | None = None, *,
                 hartree_properties: Sequence[str] = ()) -> Path:
    """Write a set in the ANI-1x layout, atomically (temp file, fsync, ``os.replace``).

    One HDF5 group per group name (groups sharing a name and atoms are concatenated), holding
    ``atomic_numbers`` ``[A]`` uint8, ``coordinates`` ``[C, A, 3]`` float64 Å, energies as
    ``energy_key`` ``[C]`` and forces as ``forces_key`` ``[C, A, 3]``, in Hartree and Hartree/Å
    if ``hartree`` (the public files' units), else in eV and eV/Å with a dataset attribute
    ``units`` that :func:`read_ani_h5` honours (then the round trip is bit-exact; through
    Hartree it is exact to the last bit or two). ``properties`` (default: all) are written
    unchanged, except those named in ``hartree_properties`` (energies or forces of another
    method, eV or eV/Å in memory), which are converted like the labels; each group's
    ``molecule`` id is stored as the group attribute ``molecule``.
    """
    import h5py

    if not isinstance(conformations, Conformations):
        raise InputError(f"write_ani_h5 takes a Conformations, got {type(conformations).__name__}")
    path = Path(path)
    merged = _merge_by_name(conformations)
    keys = conformations.property_keys if properties is None else tuple(properties)
    for key in keys:
        if key in (energy_key, forces_key, *_STRUCTURE_FIELDS) or "/" in key:
            raise InputError(f"property {key!r} clashes with a structure or label dataset name, or holds '/'")
    for key in hartree_properties:
        if key not in keys:
            raise InputError(f"hartree_properties names {key!r}, which is not among the properties written {keys}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for name, parts in merged.items():
            g0 = parts[0]
            grp = _structure_group(f, name, {"molecule": g0.molecule}, g0.numbers,
                                   np.concatenate([p.positions for p in parts]), compression)
            if energy_key and all(p.energy is not None for p in parts):
                _label_dataset(grp, energy_key, np.concatenate([p.energy for p in parts]), hartree)
            if forces_key and all(p.forces is not None for p in parts):
                _label_dataset(grp, forces_key, np.concatenate([p.forces for p in parts]), hartree, compression)
            for key in keys:
                if any(key not in p.properties for p in parts):
                    raise InputError(f"group {name!r}: property {key!r} is missing")
                v = np.concatenate([p.properties[key] for p in parts])
                if key in hartree_properties:
                    _label_dataset(grp, key, v, hartree, compression)
                else:
                    grp.create_dataset(key, data=v, compression=compression)
    return path


def write_ani_h5_arrays(path, groups: Mapping[str, Mapping], *, hartree: bool = True) -> Path:
    """Write labels that may be missing (NaN) in the ANI-1x layout, atomically.

    :func:`write_ani_h5` takes a :class:`Conformations`, whose labels are finite by
    construction; a labelling run (:func:`phai.labels.export_ani_h5`) has levels that cover
    only part of the geometries, and the ANI-1x release marks a label that was not computed
    with NaN. This writer takes plain arrays and allows exactly that.

    Args:
      path: the file to create (replaced whole if it exists).
      groups: ``{group name: {"numbers": [A] atomic numbers, "positions": [C, A, 3] Å,
        "labels": {dataset name: [C] energies eV or [C, A, 3] forces eV/Å, NaN where not
        computed}, "attrs": {group attribute: value} (optional)}}``.
      hartree: write labels in Hartree and Hartree/Å (the public files' units), else in eV.

    Each group holds ``atomic_numbers`` (uint8), ``coordinates`` (float64 Å) and one dataset
    per label with a ``units`` attribute (as :func:`write_ani_h5` writes energies and forces).
    :func:`read_ani_h5` reads it back, dropping the NaN-labelled conformations of the keys it
    is asked for. Raises :class:`~phai.errors.InputError` on a bad name, shape, a non-finite
    position or an infinite label.
    """
    import h5py

    checked = {}
    for name, g in groups.items():
        if "/" in name or not name.strip():
            raise InputError(f"group {name!r}: not a valid HDF5 group name (no '/', not empty)")
        z = np.asarray(g["numbers"])
        x = np.asarray(g["positions"], np.float64)
        if z.ndim != 1 or x.ndim != 3 or x.shape[1:] != (len(z), 3):
            raise InputError(f"group {name!r}: positions {x.shape} do not fit [C, {len(z)}, 3] for numbers {z.shape}")
        if not np.isfinite(x).all():
            raise InputError(f"group {name!r}: positions hold a non-finite value")
        labels = {}
        for key, v in g.get("labels", {}).items():
            v = np.asarray(v, np.float64)
            if key in _STRUCTURE_FIELDS or "/" in key:
                raise InputError(f"group {name!r}: label {key!r} clashes with a structure dataset name, or holds '/'")
            if v.shape not in ((len(x),), (len(x), len(z), 3)):
                raise InputError(f"group {name!r}: label {key!r} has shape {v.shape}, expected ({len(x)},) "
                                 f"or ({len(x)}, {len(z)}, 3)")
            if np.isinf(v).any():
                raise InputError(f"group {name!r}: label {key!r} holds an infinite value (NaN marks 'not computed')")
            labels[key] = v
        checked[name] = (dict(g.get("attrs", {})), z, x, labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for name, (attrs, z, x, labels) in checked.items():
            grp = _structure_group(f, name, attrs, z, x)
            for key, v in labels.items():
                _label_dataset(grp, key, v, hartree)
    return path
