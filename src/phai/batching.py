"""Packing molecules into one padded flat system, with neighbor lists and species tiles.

Layout of a :class:`Packed` batch of ``B`` molecules (``N`` atom slots, ``N`` a bucket size
from :func:`phai.structures.bucket`): molecule ``b``'s atoms occupy consecutive slots
starting at ``offsets[b]``; the remaining slots are padding with ``atom_mask`` False.
Padding slots sit at the origin, have species 0 and molecule index 0, are nobody's
neighbor, belong to no species list and are discarded by the mask, so they change no
result and receive zero gradient (tests fill them with garbage to check this).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .geometry import host_pair_lists
from .structures import bucket


class Packed(NamedTuple):
    """A padded flat system; all arrays are NumPy, ready to pass to a jitted function.

    Attributes:
      R: ``[N, 3]`` float64 positions (Å).
      species: ``[N]`` int32 model species index.
      atom_mask: ``[N]`` bool.
      mol_index: ``[N]`` int32.
      pairs: ``[2, P]`` int32 unordered pairs within the radial cutoff, sentinel ``N``.
      triples: ``[3, T]`` int32 angular triples (centre, j, k), sentinel ``N``.
      species_atoms: per species, ``[C_s]`` int32 slots of its atoms, sentinel ``N``.
      num_molecules: ``B`` padded molecule count (static).
      offsets: ``[b + 1]`` int64 slot where each real molecule starts (host only).
    """

    R: np.ndarray
    species: np.ndarray
    atom_mask: np.ndarray
    mol_index: np.ndarray
    pairs: np.ndarray
    triples: np.ndarray
    species_atoms: tuple
    num_molecules: int
    offsets: np.ndarray

    @property
    def device_args(self) -> tuple:
        """The arrays a jitted ANI function takes, in order."""
        return (self.R, self.species, self.atom_mask, self.mol_index, self.pairs,
                self.triples, self.species_atoms)

    @property
    def static_args(self) -> dict:
        return {"num_molecules": self.num_molecules}

    @property
    def shape_key(self) -> tuple:
        """Everything that decides a compilation."""
        return (self.R.shape[0], self.pairs.shape[1], self.triples.shape[1],
                tuple(len(a) for a in self.species_atoms), self.num_molecules)


SHARED_SPECIES_SLOTS = 48


def species_slots(species: np.ndarray, atom_mask: np.ndarray, num_species: int) -> tuple:
    """Slots of the real atoms of each species, each padded to a bucket with the sentinel ``N``.

    Every species gets at least 8 slots, present or not, so that molecules of one size
    bucket but different composition (with or without N, say) share a compilation; in
    small systems all species share the capacity of the most
    numerous one, so that composition never changes the shape (up to
    ``SHARED_SPECIES_SLOTS`` slots; larger systems, typically one composition along a
    trajectory, get a capacity per species to save network evaluations).
    """
    n = len(species)
    groups = [np.nonzero(atom_mask & (species == s))[0] for s in range(num_species)]
    shared = bucket(max(len(g) for g in groups), minimum=8) if n <= SHARED_SPECIES_SLOTS else None
    out = []
    for atoms in groups:
        cap = shared or _species_capacity(len(atoms), n)
        idx = np.full(cap, n, dtype=np.int32)
        idx[:len(atoms)] = atoms
        out.append(idx)
    return tuple(out)


_FRACTIONS = tuple(k / 8 for k in range(1, 9))


def _species_capacity(count: int, slots: int) -> int:
    """Slots for one species: a multiple of 1/8 of the
    system's ``slots``, at least 8; above 1024 slots, multiples of 64 (large systems keep
    one composition along a trajectory, and each padded slot costs a network evaluation).

    Tying capacities to the bucketed slot count keeps the number of distinct shapes, and so
    of compilations, small across compositions.
    """
    if slots > 1024:
        return max(8, -(-count // 64) * 64)
    for f in _FRACTIONS:
        if count <= f * slots:
            return max(8, int(f * slots))
    return slots


def pack(species_list: Sequence[np.ndarray], positions_list: Sequence[np.ndarray], *, num_species: int,
         radial_cutoff: float, angular_cutoff: float, min_atoms: int = 8,
         min_molecules: int = 1, box: np.ndarray | None = None) -> Packed:
    """Pack validated molecules (species indices and positions in Å) into a :class:`Packed`.

    ``box`` (``[3, 3]``, lattice vectors as columns, Å) makes the one structure periodic:
    its pairs and triples are minimum-image ones, and the jitted code must then compute
    displacements with the same cell (:func:`phai.geometry.cell.minimum_image`).
    """
    if box is not None and len(species_list) != 1:
        raise ValueError("a periodic structure is packed alone (box given with several structures)")
    sizes = np.array([len(s) for s in species_list], dtype=np.int64)
    total = int(sizes.sum())
    n = bucket(total, minimum=min_atoms)
    b = bucket(len(sizes), minimum=min_molecules)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    R = np.zeros((n, 3), dtype=np.float64)
    species = np.zeros(n, dtype=np.int32)
    mol_index = np.zeros(n, dtype=np.int32)
    atom_mask = np.zeros(n, dtype=bool)
    for k, (s, r) in enumerate(zip(species_list, positions_list)):
        sl = slice(offsets[k], offsets[k + 1])
        R[sl], species[sl], mol_index[sl], atom_mask[sl] = r, s, k, True
    nl = host_pair_lists(R, atom_mask, mol_index, radial_cutoff, angular_cutoff, box=box)
    return Packed(R, species, atom_mask, mol_index, nl.pairs, nl.triples,
                  species_slots(species, atom_mask, num_species), b, offsets)
