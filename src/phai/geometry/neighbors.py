"""Neighbor lists built on the host (NumPy/SciPy), in jax-md's dense format.

Memory and time grow linearly with the atom count (a k-d tree search within the cutoff).
Several molecules packed into one flat system are kept apart by translating each one
far from the others before the search, so no pair ever crosses two molecules.
The capacity ``K`` of a list is chosen by :func:`phai.structures.bucket`, so that shapes
come from a small set and the jitted functions are not recompiled for every size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..structures import bucket


class NeighborLists(NamedTuple):
    """Dense radial and angular neighbor lists for a flat set of ``N`` atom slots.

    Attributes:
      radial: ``[N, Kr]`` int32, neighbors within the radial cutoff; sentinel ``N``.
      angular: ``[N, Ka]`` int32, the subset within the angular cutoff; sentinel ``N``.
    """

    radial: np.ndarray
    angular: np.ndarray


def neighbor_pairs(positions: np.ndarray, cutoff: float,
                   segments: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j)``, ``i != j``, with ``|R_j - R_i| <= cutoff``, free space.

    Args:
      positions: ``[N, 3]`` float (Å). Rows of padding slots must be excluded by the caller.
      cutoff: Å.
      segments: ``[N]`` int molecule index of each atom; pairs never join two segments.

    Returns:
      ``(i [P], j [P], d [P])`` with both orders of each pair, sorted by ``i`` then ``j``.
    """
    from scipy.spatial import cKDTree

    R = np.asarray(positions, dtype=np.float64)
    if len(R) < 2:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    if segments is not None and len(np.unique(segments)) > 1:
        seg = np.asarray(segments)
        lo = R.min(axis=0)
        extent = float(np.max(R.max(axis=0) - lo)) + 2.0 * cutoff + 1.0
        R = R - lo
        R = R + (seg.astype(np.float64) * extent)[:, None] * np.array([1.0, 0.0, 0.0])
    tree = cKDTree(R)
    half = tree.query_pairs(cutoff, output_type="ndarray")
    i = np.concatenate([half[:, 0], half[:, 1]])
    j = np.concatenate([half[:, 1], half[:, 0]])
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    d = np.linalg.norm(np.asarray(positions, dtype=np.float64)[j] - np.asarray(positions, dtype=np.float64)[i], axis=1)
    return i, j, d


def dense_from_pairs(i: np.ndarray, j: np.ndarray, n: int, capacity: int | None = None) -> np.ndarray:
    """Turn a sorted pair list into a dense ``[n, K]`` int32 index array, sentinel ``n``.

    ``K`` is ``capacity`` if given (it must hold the largest neighbor count), otherwise
    ``bucket(max count)``.
    """
    counts = np.bincount(i, minlength=n) if len(i) else np.zeros(n, dtype=np.int64)
    need = int(counts.max()) if n else 0
    if capacity is None:
        capacity = bucket(need, minimum=8)
    elif capacity < need:
        raise ValueError(f"neighbor list capacity {capacity} is smaller than the {need} neighbors "
                         f"of the most crowded atom: raise the capacity")
    idx = np.full((n, capacity), n, dtype=np.int32)
    if len(i):
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(i)) - start[i]
        idx[i, rank] = j
    return idx


def host_neighbor_lists(positions: np.ndarray, atom_mask: np.ndarray, segments: np.ndarray,
                        radial_cutoff: float, angular_cutoff: float,
                        capacity: tuple[int, int] | None = None) -> NeighborLists:
    """Radial and angular dense neighbor lists for a padded flat system.

    Args:
      positions: ``[N, 3]`` (Å); rows of padding slots are ignored.
      atom_mask: ``[N]`` bool, True for real atoms.
      segments: ``[N]`` int molecule index of each slot.
      radial_cutoff, angular_cutoff: Å, with ``angular_cutoff <= radial_cutoff``.
      capacity: optional fixed ``(Kr, Ka)``.

    Returns:
      :class:`NeighborLists` over all ``N`` slots (padding rows are empty).
    """
    n = len(positions)
    real = np.nonzero(atom_mask)[0]
    i, j, d = neighbor_pairs(np.asarray(positions)[real], radial_cutoff, np.asarray(segments)[real])
    i, j = real[i], real[j]
    close = d <= angular_cutoff
    kr, ka = capacity if capacity is not None else (None, None)
    return NeighborLists(dense_from_pairs(i, j, n, kr), dense_from_pairs(i[close], j[close], n, ka))
