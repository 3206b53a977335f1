"""Periodic cells: jax-md box conventions, perpendicular widths, wrapping, the size check.

jax-md describes a cell by ``box``: a scalar (cube side, Å), a ``[3]`` vector
(orthorhombic sides) or a ``[3, 3]`` matrix whose *columns* are the lattice vectors
(``transform(box, s)`` maps fractional ``s`` to Cartesian). ASE's ``atoms.cell`` holds
the lattice vectors as *rows*, so ``box = atoms.cell.array.T``
(:func:`box_from_cell`).

phai potentials use the minimum-image convention and need every perpendicular width of
the cell to be at least twice the radial cutoff (5.2 Å for ANI-1x, so 10.4 Å): then
every pair closer than the cutoff has exactly one image within it, the one the
fractional-coordinate wrap finds (``|s_a| = |d . a*| <= |d| / w_a < 1/2``). Smaller cells
are refused with an :class:`phai.errors.InputError`; replicate the cell yourself
(``atoms.repeat``) if you need one.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..errors import InputError


def box_matrix(box) -> np.ndarray:
    """``[3, 3]`` float64 matrix (columns = lattice vectors, Å) of a jax-md ``box``."""
    b = np.asarray(box, dtype=np.float64)
    if b.ndim == 0:
        return np.eye(3) * float(b)
    if b.shape == (3,):
        return np.diag(b)
    if b.shape == (3, 3):
        return b
    raise InputError(f"box must be a number, a [3] vector or a [3, 3] matrix (Å), got shape {b.shape}")


def box_from_cell(cell) -> np.ndarray:
    """jax-md box matrix (columns = lattice vectors) from an ASE-style cell (rows)."""
    c = np.asarray(cell, dtype=np.float64)
    if c.shape != (3, 3):
        raise InputError(f"cell must be a [3, 3] matrix with lattice vectors as rows (Å), got shape {c.shape}")
    return c.T.copy()


def perpendicular_widths(box) -> np.ndarray:
    """``[3]`` distances between opposite faces of the cell (Å): ``V / |b x c|`` etc."""
    m = box_matrix(box)
    a, b, c = m[:, 0], m[:, 1], m[:, 2]
    volume = abs(float(np.dot(a, np.cross(b, c))))
    areas = np.array([np.linalg.norm(np.cross(b, c)), np.linalg.norm(np.cross(c, a)),
                      np.linalg.norm(np.cross(a, b))])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(areas > 0, volume / np.where(areas > 0, areas, 1.0), 0.0)


def check_cell(box, cutoff: float, *, model: str = "this model") -> np.ndarray:
    """Raise :class:`InputError` unless every perpendicular width is >= ``2 cutoff``.

    Returns the ``[3, 3]`` box matrix. A degenerate (flat) cell is an error too.
    """
    m = box_matrix(box)
    if not np.all(np.isfinite(m)):
        raise InputError("the cell has non-finite entries")
    w = perpendicular_widths(m)
    if abs(np.linalg.det(m)) < 1e-9 or np.any(w <= 0):
        raise InputError("the periodic cell is degenerate (zero volume): give three independent lattice vectors")
    small = np.nonzero(w < 2.0 * cutoff)[0]
    if len(small):
        k = int(small[0])
        raise InputError(
            f"periodic cell too small for {model}: its width along lattice vector {'abc'[k]} is {w[k]:.3f} Å, "
            f"less than twice the {cutoff:g} Å cutoff ({2 * cutoff:g} Å); every image of an atom within the "
            f"cutoff must be unique, so replicate the cell (e.g. atoms.repeat) until each width is at least "
            f"{2 * cutoff:g} Å")
    return m


def wrap_positions(R, box, fractional_coordinates: bool = False):
    """Positions mapped into the cell (jnp, jit-safe).

    Args:
      R: ``[N, 3]`` Cartesian (Å), or fractional if ``fractional_coordinates``.
      box: jax-md box (scalar, ``[3]`` or ``[3, 3]`` columns = lattice vectors).

    Returns:
      ``[N, 3]`` in ``[0, 1)`` (fractional) or inside the parallelepiped (Å).
    """
    if fractional_coordinates:
        return jnp.mod(R, 1.0)
    b = jnp.asarray(box, R.dtype)
    if b.ndim < 2:
        return jnp.mod(R, jnp.broadcast_to(b, R.shape[-1:])[None, :])
    s = jnp.linalg.solve(b, R.T).T
    return (jnp.mod(s, 1.0)) @ b.T


def minimum_image(dR, box):
    """Minimum-image displacements ``[..., 3]`` (Å) in the cell ``box`` (``[3, 3]``,
    columns = lattice vectors), exact when every width is >= twice the largest |dR| kept.

    The cell may be a traced array (used for strain derivatives: stress)."""
    s = jnp.einsum("ij,...j->...i", jnp.linalg.inv(box), dR)
    s = s - jnp.round(s)
    return jnp.einsum("ij,...j->...i", box, s)
