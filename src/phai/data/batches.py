"""Deterministic, resumable batches of conformations, padded and packed for the ANI model.

An epoch is a *plan*: a list of batches, each an array of global conformation indices
(:func:`batch_plan`). The plan depends only on the set's group sizes and atom counts and on
``(seed, epoch)``, so a training run killed after ``k`` batches resumes exactly by asking
:func:`iter_batches` for the same ``(seed, epoch)`` with ``start=k``; the skipped batches are
neither loaded nor packed.

How a plan is made (all randomness from ``numpy.random.default_rng((seed, epoch))``):

1. Groups are shuffled and cut into *windows* of consecutive groups holding about
   ``window`` conformations (``window=None``: one window, the whole set). Only one window's
   groups are in memory at a time, which is how a file larger than memory is trained on
   (:class:`phai.data.ANIH5Dataset`); a smaller window mixes less.
2. Inside a window the conformations are shuffled; with ``bucket_by_size`` they are then
   sorted (stably) into size classes ``bucket(atoms)`` (:func:`phai.structures.bucket`), so a
   batch holds molecules of similar size and the packed shapes come from a short ladder.
3. Each class is cut into batches of ``batch_size`` conformations (the last one of a class may
   be smaller, or dropped with ``drop_last``), and the window's batches are shuffled.

With ``shuffle=False`` nothing is shuffled: batches follow the global order (classes in
increasing size when ``bucket_by_size``). Every conformation appears exactly once per epoch
(unless ``drop_last``).

Each :class:`Batch` carries a :class:`phai.batching.Packed` built by :func:`phai.batching.pack`,
the same layout :meth:`phai.potential.ANIPotential.evaluate` feeds to
:func:`phai.models.ani.ani_member_energies`, plus the labels aligned with it. The molecule
count is padded to ``bucket(batch_size)`` for every batch, so a short last batch compiles no
new shape for that reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import InputError
from ..structures import SYMBOLS, bucket

if TYPE_CHECKING:  # phai.batching imports JAX (through phai.geometry): only when batches are built
    from ..batching import Packed

__all__ = ["Batch", "BatchSource", "batch_plan", "iter_batches", "num_batches"]


class BatchSource(Protocol):
    """What batching needs from a set: sizes without data, and groups on demand.

    :class:`phai.data.Conformations` (in memory) and :class:`phai.data.ANIH5Dataset` (streamed
    from a file) implement it. Conformations are numbered ``offsets[g] + c``.
    """

    @property
    def group_sizes(self) -> np.ndarray: ...  # [G] int64 conformations per group

    @property
    def group_atoms(self) -> np.ndarray: ...  # [G] int64 atoms per conformation

    def load_groups(self, indices: Sequence[int]) -> list: ...  # -> list[ConformerGroup]


@dataclasses.dataclass(frozen=True, eq=False)
class Batch:
    """One padded batch of ``b`` real conformations in ``B`` molecule slots and ``N`` atom slots.

    Attributes:
      packed: model inputs (:class:`phai.batching.Packed`: positions ``R [N, 3]`` Å, species
        indices, masks, pair/triple lists, per-species slots); ``packed.offsets [b + 1]`` gives
        each molecule's first atom slot.
      numbers: ``[N]`` int64 atomic numbers, 0 in padding slots.
      energy: ``[B]`` float64 eV, 0 in padding molecules; None if the set has no energies.
      forces: ``[N, 3]`` float64 eV/Å, 0 in padding slots; None if not requested/available.
      num_atoms: ``[B]`` int64 atoms per molecule, 0 for padding molecules.
      mol_mask: ``[B]`` bool, True for the ``b`` real molecules.
      index: ``[b]`` int64 global conformation indices of the real molecules.
      properties: requested extra labels: per-molecule ``[B, ...]`` or per-atom ``[N, ...]``
        (``atom_properties``), zero padded.
      step: position of this batch in the epoch's plan (resume with ``start=step + 1``).
    """

    packed: Packed
    numbers: np.ndarray
    energy: np.ndarray | None
    forces: np.ndarray | None
    num_atoms: np.ndarray
    mol_mask: np.ndarray
    index: np.ndarray
    properties: dict
    step: int

    @property
    def size(self) -> int:
        """Number of real conformations ``b``."""
        return len(self.index)


def _windows(sizes: np.ndarray, order: np.ndarray, window: int | None) -> list[np.ndarray]:
    """Cut the group order into windows of about ``window`` conformations (at least one group)."""
    if window is None:
        return [order]
    out, cur, count = [], [], 0
    for g in order:
        if cur and count + sizes[g] > window:
            out.append(np.array(cur, dtype=np.int64))
            cur, count = [], 0
        cur.append(int(g))
        count += int(sizes[g])
    if cur:
        out.append(np.array(cur, dtype=np.int64))
    return out


def _plan_windows(source, batch_size: int, shuffle: bool, seed: int, epoch: int, bucket_by_size: bool,
                  window: int | None, drop_last: bool) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """``[(groups of the window, [batch indices, ...]), ...]``."""
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be a positive number of conformations, got {batch_size}")
    if window is not None and int(window) < 1:
        raise InputError(f"window must be a positive number of conformations or None, got {window}")
    sizes = np.asarray(source.group_sizes, dtype=np.int64)
    atoms = np.asarray(source.group_atoms, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rng = np.random.default_rng((int(seed), int(epoch)))
    order = rng.permutation(len(sizes)) if shuffle else np.arange(len(sizes))
    out = []
    for groups in _windows(sizes, order, window):
        idx = np.concatenate([np.arange(offsets[g], offsets[g + 1]) for g in groups]) if len(groups) else \
            np.zeros(0, np.int64)
        nat = np.concatenate([np.full(sizes[g], atoms[g]) for g in groups]) if len(groups) else np.zeros(0, np.int64)
        if shuffle:
            p = rng.permutation(len(idx))
            idx, nat = idx[p], nat[p]
        if bucket_by_size:
            cls = np.array([bucket(n) for n in nat], dtype=np.int64)
            classes = [idx[cls == c] for c in np.unique(cls)]
        else:
            classes = [idx]
        batches = []
        for members in classes:
            for s in range(0, len(members), batch_size):
                chunk = members[s:s + batch_size]
                if drop_last and len(chunk) < batch_size:
                    continue
                batches.append(chunk)
        if shuffle and batches:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        out.append((np.sort(groups) if len(groups) else groups, batches))
    return out


def batch_plan(source: BatchSource, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0,
               bucket_by_size: bool = True, window: int | None = None, drop_last: bool = False) -> list[np.ndarray]:
    """The epoch's batches as a list of ``[b]`` int64 arrays of global conformation indices.

    Deterministic given the set's sizes and ``(seed, epoch)``; see the module docstring.
    """
    return [b for _, batches in _plan_windows(source, batch_size, shuffle, seed, epoch, bucket_by_size,
                                              window, drop_last) for b in batches]


def num_batches(source: BatchSource, batch_size: int, **plan_options) -> int:
    """Number of batches per epoch (the same for every epoch unless ``bucket_by_size`` with
    ``window`` regroups classes differently; computed from the plan of ``plan_options``)."""
    return len(batch_plan(source, batch_size, **plan_options))


def iter_batches(source: BatchSource, batch_size: int, *, species: Sequence[int | str],
                 radial_cutoff: float = 5.2, angular_cutoff: float = 3.5, shuffle: bool = True, seed: int = 0,
                 epoch: int = 0, start: int = 0, bucket_by_size: bool = True, window: int | None = None,
                 drop_last: bool = False, forces: bool = True, properties: Sequence[str] = (),
                 atom_properties: Sequence[str] = (), min_atoms: int = 8, prefetch: int = 0) -> Iterator[Batch]:
    """Yield the padded :class:`Batch` es of one epoch, from batch ``start`` on.

    Args:
      source: a :class:`phai.data.Conformations`, a :class:`phai.data.ANIH5Dataset`, or anything
        with ``group_sizes``, ``group_atoms`` and ``load_groups`` (:class:`BatchSource`).
      batch_size: conformations per batch.
      species: the model's elements in its species order (atomic numbers or symbols, e.g.
        ``pot.atomic_numbers`` or ``("H", "C", "N", "O")``); an element outside it is an error.
      radial_cutoff, angular_cutoff: Å, the model's AEV cutoffs (``pot.config.aev.Rcr``,
        ``.Rca``; ANI-1x: 5.2 and 3.5).
      shuffle, seed, epoch, bucket_by_size, window, drop_last: the plan (:func:`batch_plan`).
      start: skip the first ``start`` batches of the plan (resume mid-epoch).
      forces: include forces (if the set has them: ``source.has_forces``).

    Energies are included if ``source.has_energy`` (every group has them); forces likewise,
    so every batch of an epoch carries the same fields. A source without these attributes
    must label every group or none.
      properties, atom_properties: extra per-conformation / per-atom labels to include.
      min_atoms: smallest atom-slot count of a packed batch.
      prefetch: if positive, build up to this many batches ahead in a background thread
        (reading and packing overlap the training step; same batches, same order).
    """
    args = (source, batch_size, species, radial_cutoff, angular_cutoff, shuffle, seed, epoch, start, bucket_by_size,
            window, drop_last, forces, tuple(properties), tuple(atom_properties), min_atoms)
    if int(prefetch) > 0:
        return _prefetched(_batches(*args), int(prefetch))
    return _batches(*args)


def _prefetched(batches: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run ``batches`` in a daemon thread, ``depth`` items ahead; errors re-raised in order."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone

    def work():
        try:
            for b in batches:
                if not put(b):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    thread = threading.Thread(target=work, name="phai-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _batches(source, batch_size, species, radial_cutoff, angular_cutoff, shuffle, seed, epoch, start, bucket_by_size,
             window, drop_last, forces, properties, atom_properties, min_atoms) -> Iterator[Batch]:
    from ..structures import atomic_numbers

    z_of = atomic_numbers(list(species))
    table = np.full(len(SYMBOLS), -1, dtype=np.int32)
    table[z_of] = np.arange(len(z_of), dtype=np.int32)
    b_slots = bucket(batch_size, minimum=1)
    # labels decided once for the whole set, so every batch of an epoch carries the same fields
    want_e = bool(getattr(source, "has_energy", True))
    want_f = bool(forces and getattr(source, "has_forces", True))
    step = 0
    for groups, batches in _plan_windows(source, batch_size, shuffle, seed, epoch, bucket_by_size, window,
                                         drop_last):
        if step + len(batches) <= start:
            step += len(batches)
            continue
        loaded = dict(zip(groups.tolist(), source.load_groups(groups.tolist())))
        offsets = np.concatenate([[0], np.cumsum(np.asarray(source.group_sizes, dtype=np.int64))])
        for idx in batches:
            if step >= start:
                yield _make_batch(loaded, offsets, idx, table, b_slots, radial_cutoff, angular_cutoff, want_e,
                                  want_f, properties, atom_properties, min_atoms, step)
            step += 1
        del loaded


def _make_batch(loaded: dict, offsets: np.ndarray, idx: np.ndarray, table: np.ndarray, b_slots: int,
                radial_cutoff: float, angular_cutoff: float, want_e: bool, want_f: bool, properties, atom_properties,
                min_atoms: int, step: int) -> Batch:
    from ..batching import pack

    g_of = np.searchsorted(offsets, idx, side="right") - 1
    items = [(loaded[int(g)], int(i - offsets[g])) for g, i in zip(g_of, idx)]
    species_list = []
    for grp, _ in items:
        s = table[grp.numbers]
        if (s < 0).any():
            bad = SYMBOLS[int(grp.numbers[np.nonzero(s < 0)[0][0]])]
            raise InputError(f"group {grp.name!r}: element {bad} is not among the model's species "
                             f"{[SYMBOLS[z] for z in np.nonzero(table >= 0)[0]]}")
        species_list.append(s)
    packed = pack(species_list, [grp.positions[c] for grp, c in items], num_species=int((table >= 0).sum()),
                  radial_cutoff=radial_cutoff, angular_cutoff=angular_cutoff, min_atoms=min_atoms,
                  min_molecules=b_slots)
    n, b = len(packed.R), packed.num_molecules
    numbers = np.zeros(n, np.int64)
    num_atoms = np.zeros(b, np.int64)
    mol_mask = np.zeros(b, bool)
    mol_mask[:len(items)] = True
    for field, wanted in (("energy", want_e), ("forces", want_f)):
        lacking = [grp.name for grp, _ in items if getattr(grp, field) is None]
        if wanted and lacking:
            raise InputError(f"group {lacking[0]!r}: field {field!r} is missing while other groups have it")
    has_e, has_f = want_e, want_f
    energy = np.zeros(b, np.float64) if has_e else None
    frc = np.zeros((n, 3), np.float64) if has_f else None
    props = {}
    for k, (grp, c) in enumerate(items):
        sl = slice(packed.offsets[k], packed.offsets[k + 1])
        numbers[sl] = grp.numbers
        num_atoms[k] = grp.num_atoms
        if has_e:
            energy[k] = grp.energy[c]
        if has_f:
            frc[sl] = grp.forces[c]
        for key in properties:
            v = _prop(grp, key)[c]
            if key not in props:
                props[key] = np.zeros((b,) + v.shape, v.dtype)
            props[key][k] = v
        for key in atom_properties:
            v = _prop(grp, key)[c]
            if key not in props:
                props[key] = np.zeros((n,) + v.shape[1:], v.dtype)
            props[key][sl] = v
    return Batch(packed, numbers, energy, frc, num_atoms, mol_mask, np.asarray(idx, np.int64), props, step)


def _prop(grp, key: str) -> np.ndarray:
    if key not in grp.properties:
        raise InputError(f"group {grp.name!r}: property {key!r} is missing (has {sorted(grp.properties)})")
    return grp.properties[key]
