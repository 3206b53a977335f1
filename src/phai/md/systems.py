"""Reproducible test systems: periodic boxes of liquid water."""

from __future__ import annotations

import numpy as np

WATER_OH = 0.9572
"""Å, O-H bond of rigid TIP3P-like water."""
WATER_HOH = 104.52
"""degrees."""
WATER_MOLECULES_PER_A3 = 0.033428
"""Molecules per Å^3 at 1 g/cm^3 (18.015 g/mol)."""


def _random_rotations(rng: np.random.Generator, k: int) -> np.ndarray:
    """``[k, 3, 3]`` uniformly random rotation matrices (from random unit quaternions)."""
    q = rng.normal(size=(k, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def water_box(num_molecules: int, *, density: float = 1.0, seed: int = 0, min_distance: float = 1.6,
              max_rounds: int = 200):
    """A cubic periodic box of rigid water molecules on a simple cubic lattice.

    Molecules sit on the sites of an ``m^3`` lattice (``m = ceil(cbrt(n))``, the first
    ``n`` sites in a fixed order) of a cube sized for ``density`` g/cm^3, each rotated at
    random; molecules with an atom closer than ``min_distance`` Å (through the cell) to
    another molecule's atom are re-rotated until none is. Deterministic for a ``seed``.

    Returns:
      ``ase.Atoms`` (O, H, H per molecule), ``pbc=True``, cubic cell (Å).
    """
    from ase import Atoms
    from scipy.spatial import cKDTree

    n = int(num_molecules)
    side = (n / (WATER_MOLECULES_PER_A3 * density)) ** (1.0 / 3.0)
    m = int(np.ceil(n ** (1.0 / 3.0) - 1e-9))
    spacing = side / m
    sites = np.array(np.meshgrid(*[np.arange(m)] * 3, indexing="ij")).reshape(3, -1).T[:n]
    centres = (sites + 0.5) * spacing
    half = np.radians(WATER_HOH) / 2
    local = np.array([[0.0, 0.0, 0.0],
                      [WATER_OH * np.sin(half), 0.0, WATER_OH * np.cos(half)],
                      [-WATER_OH * np.sin(half), 0.0, WATER_OH * np.cos(half)]])
    rng = np.random.default_rng(seed)
    rot = _random_rotations(rng, n)
    mol = np.repeat(np.arange(n), 3)
    for _ in range(max_rounds):
        pos = (centres[:, None, :] + np.einsum("kij,aj->kai", rot, local)).reshape(-1, 3)
        tree = cKDTree(np.mod(pos, side), boxsize=side)
        pairs = tree.query_pairs(min_distance, output_type="ndarray")
        pairs = pairs[mol[pairs[:, 0]] != mol[pairs[:, 1]]]
        if not len(pairs):
            break
        bad = np.unique(mol[pairs.ravel()])
        rot[bad] = _random_rotations(rng, len(bad))
    else:
        raise RuntimeError(f"could not place {n} waters without contacts closer than {min_distance} Å")
    return Atoms("OH2" * n, positions=pos, cell=[side] * 3, pbc=True)
