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


def _min_image_distances(R: np.ndarray, i: np.ndarray, j: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum-image distances of pairs (``box`` columns = lattice vectors, Å)."""
    s = np.linalg.solve(box, (R[j] - R[i]).T).T
    s -= np.round(s)
    return np.linalg.norm(s @ box.T, axis=1)


def ghost_images(frac: np.ndarray, box: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Atoms plus their periodic images within ``cutoff`` of the cell's faces.

    Args:
      frac: ``[N, 3]`` fractional coordinates in ``[0, 1)``.
      box: ``[3, 3]`` lattice vectors as columns (Å).

    Returns:
      ``(points [N + G, 3] Å, owner [N + G] int)``: the first ``N`` points are the atoms
      themselves, each image records the atom it copies.
    """
    a, b, c = box[:, 0], box[:, 1], box[:, 2]
    volume = abs(float(np.dot(a, np.cross(b, c))))
    widths = volume / np.array([np.linalg.norm(np.cross(b, c)), np.linalg.norm(np.cross(c, a)),
                                np.linalg.norm(np.cross(a, b))])
    margin = cutoff / widths
    n = len(frac)
    pts, owner = [frac], [np.arange(n)]
    for shift in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T:
        if not shift.any():
            continue
        moved = frac + shift
        inside = np.all((moved >= -margin) & (moved < 1.0 + margin), axis=1)
        pts.append(moved[inside])
        owner.append(np.nonzero(inside)[0])
    return np.concatenate(pts) @ box.T, np.concatenate(owner)


def periodic_neighbor_pairs(positions: np.ndarray, cutoff: float,
                            box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j)``, ``i != j``, whose minimum-image distance is <= ``cutoff``.

    Args:
      positions: ``[N, 3]`` Cartesian (Å), anywhere (wrapped here).
      cutoff: Å. Every perpendicular width of the cell must be >= ``2 cutoff`` (checked by
        the caller, :func:`phai.geometry.cell.check_cell`), so each pair has one image within
        the cutoff and the minimum image is that one.
      box: ``[3, 3]`` lattice vectors as *columns* (jax-md's ``box``; ``atoms.cell.T``).

    Returns:
      ``(i [P], j [P], d [P])``, both orders of each pair, sorted by ``i`` then ``j``;
      ``d`` are minimum-image distances. Linear cost: a periodic k-d tree for orthorhombic
      cells, and for triclinic cells a k-d tree over the atoms plus the periodic images
      that lie within ``cutoff`` of a face.
    """
    from scipy.spatial import cKDTree

    R = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    n = len(R)
    if n < 2:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    s = np.linalg.solve(box, R.T).T
    s = np.mod(s, 1.0)
    s[s >= 1.0] = 0.0
    if np.allclose(box, np.diag(np.diag(box))):
        L = np.diag(box)
        Rw = np.minimum(s * L, np.nextafter(L, 0))
        half = cKDTree(Rw, boxsize=L).query_pairs(cutoff, output_type="ndarray")
    else:
        pts, owner = ghost_images(s, box, cutoff)
        allp = cKDTree(pts).query_pairs(cutoff, output_type="ndarray")
        allp = allp[(allp[:, 0] < n) | (allp[:, 1] < n)]
        a, b = owner[allp[:, 0]], owner[allp[:, 1]]
        keep = a != b
        lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
        half = np.unique(np.stack([lo, hi], axis=1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
    i = np.concatenate([half[:, 0], half[:, 1]]).astype(np.int64)
    j = np.concatenate([half[:, 1], half[:, 0]]).astype(np.int64)
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    return i, j, _min_image_distances(R, i, j, box)


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


SMALL_SYSTEM = 48
"""Slot counts up to this get capacities that depend on the slot count alone."""
SMALL_ANGULAR = 16


class PairLists(NamedTuple):
    """Flat lists for a padded system of ``N`` slots (sentinel ``N`` pads both).

    Attributes:
      pairs: ``[2, P]`` int32 unordered pairs ``i < j`` within the radial cutoff.
      triples: ``[3, T]`` int32 ``(centre, j, k)``, ``j < k`` both within the angular
        cutoff of the centre.

    Each pair appears once (TorchANI's layout), so the work is half that of a dense list.
    Capacities depend on the slot count ``N`` as far as possible, so that molecules of
    one size bucket share a compilation: for ``N <= SMALL_SYSTEM`` they are all pairs and
    ``N * 16 * 15 / 2`` triples (room for 16 angular neighbors per atom, more than
    organic molecules have within 3.5 Å); above, :func:`per_slot_capacity`.
    """

    pairs: np.ndarray
    triples: np.ndarray


def host_pair_lists(positions: np.ndarray, atom_mask: np.ndarray, segments: np.ndarray,
                    radial_cutoff: float, angular_cutoff: float, box: np.ndarray | None = None) -> PairLists:
    """Pairs and angular triples of a padded flat system, built on the host (linear cost).

    Args:
      positions: ``[N, 3]`` (Å); rows of padding slots are ignored.
      atom_mask: ``[N]`` bool, True for real atoms.
      segments: ``[N]`` molecule index of each slot (no pair crosses molecules).
      radial_cutoff, angular_cutoff: Å.
      box: ``[3, 3]`` lattice vectors as columns for a periodic system (one segment
        only); pairs are then minimum-image pairs (:func:`periodic_neighbor_pairs`).
    """
    n = len(positions)
    real = np.nonzero(atom_mask)[0]
    if box is None:
        i, j, d = neighbor_pairs(np.asarray(positions)[real], radial_cutoff, np.asarray(segments)[real])
    else:
        i, j, d = periodic_neighbor_pairs(np.asarray(positions)[real], radial_cutoff, box)
    i, j = real[i], real[j]
    half = i < j
    small = n <= SMALL_SYSTEM
    p_cap = n * (n - 1) // 2 if small else per_slot_capacity(int(half.sum()), n, floor=16)
    pairs = np.full((2, p_cap), n, dtype=np.int32)
    pairs[:, :half.sum()] = np.stack([i[half], j[half]])
    close = d <= angular_cutoff
    dense = dense_from_pairs(i[close], j[close], n, None)
    counts = np.sum(dense < n, axis=1)
    k = int(counts.max()) if n else 0
    dense = dense[:, :max(k, 2)]
    p, q = np.triu_indices(dense.shape[1], 1)
    tj, tk = dense[:, p], dense[:, q]
    keep = (tj < n) & (tk < n)
    centre = np.broadcast_to(np.arange(n)[:, None], tj.shape)[keep]
    t = int(keep.sum())
    small_t = n * SMALL_ANGULAR * (SMALL_ANGULAR - 1) // 2
    t_cap = small_t if small and t <= small_t else per_slot_capacity(t, n, floor=48)
    triples = np.full((3, t_cap), n, dtype=np.int32)
    triples[:, :t] = np.stack([centre, tj[keep], tk[keep]])
    return PairLists(pairs, triples)


def per_slot_capacity(count: int, slots: int, floor: int = 8) -> int:
    """Capacity for ``count`` entries of a system of ``slots`` atom slots: ``slots`` times
    the per-atom count ``count / slots`` rounded up on the ladder of :func:`bucket`
    (16, 24, 32, 48, 64, 96, 128, ...), at least ``floor``.

    Tying the capacity to the (already bucketed) slot count, on a coarse ladder, means
    molecules of one size bucket share a shape whatever their exact pair count: organic
    molecules need 16-32 pairs and 48-96 triples per atom, liquid water 32 and 96.
    """
    return slots * bucket(-(-count // max(slots, 1)), minimum=floor)
