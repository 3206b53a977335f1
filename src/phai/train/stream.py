"""Training sets streamed from an ANI HDF5 file: memory bounded by the batch, not the file.

:class:`StreamedTrainingSet` has the interface the :class:`~phai.train.Trainer` uses of an
in-memory :class:`~phai.train.TrainingSet` (``len``, ``numbers``, ``energies``, ``groups``,
``forces``, ``subset``, ``validate``, ``load``), so the same trainer loop, split by molecule,
epoch order and checkpoints serve both. What it keeps in memory:

* per conformation: the atomic numbers (one shared read-only ``[A]`` array per HDF5 group),
  the energy (eV, float64), the molecule id, and its (group, row) address in the file;
* never the coordinates or forces of the whole set: :meth:`load` reads the rows of one batch
  (grouped per HDF5 group, rows in increasing order, one fancy-indexed read per group and
  field, through a file handle kept open and reopened after ``fork``), and the opening pass
  and :meth:`validate` read at most ``chunk`` rows at a time.

Numbering, conversions and dropped conformations are those of :func:`phai.data.read_ani_h5`
with the same keys (energies ``energy_key`` Hartree -> eV, forces ``forces_key`` Hartree/Å ->
eV/Å unless the dataset's ``units`` attribute says eV; conformations with a NaN in a requested
label dropped), so a run on ``StreamedTrainingSet(path, ...)`` is bit-identical to the same run
on ``load_data(path, ...)`` in memory.

Δ-learning (:mod:`phai.train.delta`): ``delta_from=KEY`` trains on ``energy_key - KEY`` (both
converted to eV the same way; forces are then not used: the file has no matching lower-level
forces field in general); ``base=potential`` trains on ``E - E_base`` (and ``F - F_base``)
with the base potential's predictions computed by phai (energies in the opening pass, forces
per batch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.ani_h5 import (
    _coordinates_shape,
    _dataset,
    _numbers,
    _open,
    _report,
    _scale,
    _select,
    _where,
)
from ..errors import InputError
from ..structures import validate_structure
from .batches import TrainingSet

__all__ = ["StreamedTrainingSet", "open_training_set"]


class _Lazy:
    """Stands for per-conformation arrays that stay in the file (``ts.forces is not None``
    tells that a set has forces; indexing reads one conformation, for inspection only)."""

    def __init__(self, owner: StreamedTrainingSet, field: str):
        self._owner, self._field = owner, field

    def __len__(self) -> int:
        return len(self._owner)

    def __getitem__(self, c):
        ts = self._owner.load(np.array([int(c)]))
        return (ts.positions if self._field == "positions" else ts.forces)[0]

    def __iter__(self):
        raise TypeError(f"the {self._field} of a StreamedTrainingSet stay in the file: use load(index) on a batch")


class _Handle:
    """The open file and its datasets, shared by a set and its subsets; reopened in a new
    process (after ``fork``), as h5py handles must not cross processes."""

    def __init__(self, path: Path):
        self.path, self._pid, self._file, self._datasets = path, None, None, {}

    def datasets(self, name: str, fields: tuple) -> tuple:
        if self._pid != os.getpid():
            self._file, self._datasets, self._pid = _open(self.path), {}, os.getpid()
        key = (name, fields)
        if key not in self._datasets:
            grp = self._file[name]
            self._datasets[key] = tuple(grp[k] for k in fields)
        return self._datasets[key]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._datasets, self._pid = None, {}, None


class StreamedTrainingSet:
    """Labelled conformations of an ANI HDF5 file, read batch by batch.

    Args:
      path: the ``.h5`` file (ANI-1x or ANI-1 layout, :mod:`phai.data.ani_h5`).
      energy_key: energy field (Hartree in the file; eV here).
      forces_key: forces field (Hartree/Å; eV/Å here) or None.
      delta_from: Δ-learning on stored levels: the energies are ``energy_key - delta_from``
        (both converted to eV); forces are not read.
      base: Δ-learning on a model: a potential (``phai.load(...)``) whose predictions are
        subtracted: energies ``E - E_base`` (computed in the opening pass by
        :func:`phai.train.delta.base_predictions`) and forces ``F - F_base`` (per batch).
      groups: HDF5 leaf groups to use (default all).
      chunk: most rows read at once by the opening pass and :meth:`validate`.

    Attributes (like :class:`~phai.train.TrainingSet`): ``numbers`` list of ``[A_c]`` int64,
    ``energies [C]`` eV, ``groups [C]`` molecule ids (the group attribute ``molecule``, else
    the group name), ``positions`` and ``forces`` (lazy: read by :meth:`load`).
    """

    def __init__(self, path, energy_key: str, forces_key: str | None = None, *, delta_from: str | None = None,
                 base=None, groups: Sequence[str] | None = None, chunk: int = 1024, _view=None):
        self.path = Path(path)
        self.energy_key, self.delta_from, self.base = energy_key, delta_from, base
        self.forces_key = None if delta_from else forces_key
        self.chunk = int(chunk)
        if self.chunk < 1:
            raise InputError(f"chunk must be a positive number of rows, got {chunk}")
        if delta_from and base is not None:
            raise InputError("give either delta_from (a stored lower level) or base (a model), not both")
        if _view is not None:  # a subset sharing the file index
            (self._names, self._scales, self._group, self._row, self.numbers, self.energies, self.groups,
             self._base_energies, self._handle) = _view
            return
        self._handle = _Handle(self.path)
        self._index(groups)
        if base is not None:
            from .delta import base_predictions

            self._base_energies = base_predictions(base, self, forces=False)[0]  # the in-memory path's chunks
            self.energies = self.energies - self._base_energies
        else:
            self._base_energies = None

    # ------------------------------------------------------------------ the opening pass
    def _index(self, groups) -> None:
        keys = [k for k in (self.energy_key, self.forces_key, self.delta_from) if k]
        names, scales, gidx, rows, numbers, energies, molecules = [], [], [], [], [], [], []
        dropped = total = 0
        with _open(self.path) as f:
            for name in _select(f, groups):
                grp = f[name]
                z = _numbers(f, name, grp)
                z.flags.writeable = False
                c, a = _coordinates_shape(f, name, grp, len(z))
                ok = np.ones(c, bool)
                fields = {}
                for key, shape in ((self.energy_key, (c,)), (self.delta_from, (c,)), (self.forces_key, (c, a, 3))):
                    if not key:
                        continue
                    ds = _dataset(f, name, grp, key)
                    if tuple(ds.shape) != shape:
                        raise InputError(f"{_where(f, name, key)}: shape {ds.shape} does not match {shape} "
                                         f"(conformations and atoms of 'coordinates')")
                    fields[key] = ds
                e = self._read(f, name, fields[self.energy_key], slice(None))
                ok &= np.isfinite(e)
                low = None
                if self.delta_from:
                    low = self._read(f, name, fields[self.delta_from], slice(None))
                    ok &= np.isfinite(low)
                for s in range(0, c, self.chunk):  # coordinates (and forces) in chunks: never a whole group
                    sl = slice(s, min(s + self.chunk, c))
                    r = self._read(f, name, grp["coordinates"], sl)
                    bad = ~np.isfinite(r).all(axis=(1, 2))
                    if bad.any():
                        raise InputError(f"{_where(f, name, 'coordinates')}: conformation {s + int(np.argmax(bad))} "
                                         f"has a non-finite coordinate")
                    if self.forces_key:
                        ok[sl] &= np.isfinite(self._read(f, name, fields[self.forces_key], sl)).all(axis=(1, 2))
                dropped += int(c - ok.sum())
                total += c
                if not ok.any():
                    continue
                keep = np.nonzero(ok)[0]
                g = len(names)
                names.append(name)
                se = _scale(fields[self.energy_key])
                scales.append(_scale(fields[self.forces_key]) if self.forces_key else 1.0)
                energy = e[keep] * se
                if low is not None:  # the same conversion as read_ani_h5(hartree_properties=(delta_from,))
                    energy = energy - low[keep] * _scale(fields[self.delta_from])
                molecule = grp.attrs.get("molecule", name)
                molecule = molecule.decode() if isinstance(molecule, bytes) else str(molecule)
                gidx.append(np.full(len(keep), g, np.int64))
                rows.append(keep.astype(np.int64))
                numbers.extend([z] * len(keep))
                energies.append(energy)
                molecules.extend([molecule] * len(keep))
        _report(self.path, dropped, total, keys)
        if not names:
            raise InputError(f"{self.path}: no conformation has finite {', '.join(keys)}")
        self._names, self._scales = tuple(names), np.asarray(scales)
        self._group, self._row = np.concatenate(gidx), np.concatenate(rows)
        self.numbers, self.energies = numbers, np.concatenate(energies)
        self.groups = np.array(molecules, dtype=object)

    @staticmethod
    def _read(f, name: str, ds, sel) -> np.ndarray:
        try:
            return np.asarray(ds[sel], dtype=np.float64)
        except (TypeError, ValueError, OSError) as exc:
            raise InputError(f"{_where(f, name, ds.name.rsplit('/', 1)[-1])}: cannot be read as numbers ({exc})") from None

    # ------------------------------------------------------------------ the TrainingSet interface
    def __len__(self) -> int:
        return len(self.energies)

    def __repr__(self):
        return f"StreamedTrainingSet({str(self.path)!r}, {len(self)} conformations)"

    @property
    def positions(self) -> _Lazy:
        return _Lazy(self, "positions")

    @property
    def forces(self) -> _Lazy | None:
        return _Lazy(self, "forces") if self.forces_key else None

    def subset(self, idx) -> StreamedTrainingSet:
        """The conformations ``idx`` (a view on the same file; nothing is read)."""
        idx = np.asarray(idx, dtype=np.int64)
        view = (self._names, self._scales, self._group[idx], self._row[idx], [self.numbers[i] for i in idx],
                self.energies[idx], self.groups[idx],
                None if self._base_energies is None else self._base_energies[idx], self._handle)
        return StreamedTrainingSet(self.path, self.energy_key, self.forces_key, delta_from=self.delta_from,
                                   base=self.base, chunk=self.chunk, _view=view)

    def load(self, index) -> TrainingSet:
        """The conformations ``index`` ``[b]`` read from the file into a :class:`TrainingSet`
        (positions Å, forces eV/Å, in the order of ``index``): one read per HDF5 group and
        field, of the rows needed only."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        pos = [None] * len(index)
        frc = [None] * len(index) if self.forces_key else None
        g_of, r_of = self._group[index], self._row[index]
        fields = ("coordinates", self.forces_key) if self.forces_key else ("coordinates",)
        order = np.argsort(g_of, kind="stable")
        starts = np.flatnonzero(np.r_[True, g_of[order][1:] != g_of[order][:-1]])
        for at in np.split(order, starts[1:]):
            g = int(g_of[at[0]])
            rows, inverse = np.unique(r_of[at], return_inverse=True)  # h5py needs increasing rows
            ds = self._handle.datasets(self._names[g], fields)
            r = self._read(self._handle._file, self._names[g], ds[0], rows)
            fr = None if frc is None else self._read(self._handle._file, self._names[g], ds[1], rows) * self._scales[g]
            for k, j in zip(at.tolist(), inverse.tolist()):
                pos[k] = r[j]
                if frc is not None:
                    frc[k] = fr[j]
        ts = TrainingSet([self.numbers[c] for c in index], pos, self.energies[index], frc, self.groups[index])
        if self.base is not None and frc is not None:
            from .delta import base_predictions

            ts.forces = [a - b for a, b in zip(frc, base_predictions(self.base, ts, forces=True)[1])]
        return ts

    def close(self) -> None:
        """Close the file (it is reopened when a batch is read again)."""
        self._handle.close()

    def validate(self, supported: Sequence[int], model: str = "the model") -> None:
        """Check every conformation (elements, shapes, finiteness, overlaps), reading at most
        ``chunk`` conformations at a time; errors name the conformation as in
        :meth:`TrainingSet.validate`."""
        for s in range(0, len(self), self.chunk):
            part = self.load(np.arange(s, min(s + self.chunk, len(self))))
            for c, (z, r) in enumerate(zip(part.numbers, part.positions)):
                try:
                    validate_structure(z, r, supported=supported, model=model)
                    if part.forces is not None and not np.all(np.isfinite(part.forces[c])):
                        raise InputError("forces are not finite")
                except InputError as exc:
                    raise type(exc)(f"conformation {s + c}: {exc}") from None


def open_training_set(path, energy_key: str, forces_key: str | None = None, **kw) -> StreamedTrainingSet:
    """Index an ANI HDF5 file for streamed training; see :class:`StreamedTrainingSet`."""
    return StreamedTrainingSet(path, energy_key, forces_key, **kw)
