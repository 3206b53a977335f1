r"""Long-range Coulomb energy of atomic charges over all pairs, in free space.

The form is AIMNet2's ``LRCoulomb`` (2023 TorchScript ensembles, "simple" all-pairs mode):

.. math::

   E_\mathrm{coul} = \frac{k_e}{2} \sum_{i \ne j} \bigl(1 - f_\mathrm{exp}(r_{ij}; r_s)\bigr)
                      \frac{q_i q_j}{r_{ij}},
   \qquad f_\mathrm{exp}(r; r_s) = \frac{\exp\!\bigl(-1 / (1 - \min(r / r_s, 0.999999)^2)\bigr)}{e^{-1}}

The switch ``1 - f_exp`` is 0 at ``r = 0`` and 1 from ``r = r_s`` on, so the bare Coulomb law
acts only beyond ``r_s`` (4.6 Å in AIMNet2); shorter range is left to the network. There is no
outer cutoff and no periodic image: every pair of the molecule counts.

All-pairs sums are evaluated by :func:`pair_row_sums` in blocks of rows, each block
rematerialised in the backward pass, so memory stays ``O(block N)`` instead of ``O(N^2)``
for energies *and* forces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

AIMNET2_HALF_KE = 7.1998226
"""eV Å e^-2: the Coulomb constant 14.3996452 eV Å e^-2 halved, as inlined in AIMNet2's code
(the sum runs over ordered pairs)."""


def exp_cutoff(d, cutoff):
    r"""AIMNet2's exponential bump ``exp(-1 / (1 - x^2)) / exp(-1)``, ``x = clip(d / cutoff, 0, 0.999999)``.

    Args:
      d: distances, any shape (Å).
      cutoff: ``r_s`` (Å), scalar.

    Returns:
      Array like ``d``: 1 at ``d = 0``, smoothly 0 (underflow) from ``d = cutoff`` on; the
      clip keeps the exponent finite, so gradients are finite everywhere.
    """
    x = jnp.clip(d / cutoff, 0.0, 0.999999)
    return jnp.exp(-1.0 / (1.0 - x * x)) / 0.36787944117144233


def pair_row_sums(pair_fn: Callable[..., Any], positions, atom_mask, rows: Any = None, cols: Any = None,
                  *, block_size: int | None = None):
    r"""``out[i] = sum_{j != i} pair_fn(d_ij, rows_i, cols_j)`` over all pairs of real atoms.

    Args:
      pair_fn: ``pair_fn(d [C, N], rows, cols) -> [C, N, ...]`` values of a block of ``C`` rows
        against all ``N`` columns. ``rows`` is the pytree ``rows`` gathered at the block's row
        atoms (leading axis ``C``), ``cols`` is passed whole (leading axis ``N``). Masked
        pairs (``i == j``, padding) receive ``d = 1`` so the function stays finite; their values
        are discarded behind a ``where``.
      positions: ``[N, 3]`` (Å).
      atom_mask: ``[N]`` bool, False for padding slots.
      rows, cols: pytrees of per-atom arrays with leading axis ``N`` (or None).
      block_size: rows per block (static). ``None`` or ``>= N``: one dense ``[N, N]`` block.
        Otherwise ``ceil(N / C)`` blocks are evaluated by ``lax.map`` with ``jax.checkpoint``
        around each block, so neither the forward nor the reverse pass holds an ``[N, N]`` array.

    Returns:
      ``[N, ...]`` per-atom sums in the dtype of ``pair_fn``'s output; padding rows are 0.
    """
    n = positions.shape[0]
    cols_idx = jnp.arange(n)

    def block(i, ok):
        ri = positions[i]
        dr = positions[None, :, :] - ri[:, None, :]
        r2 = jnp.sum(dr * dr, axis=-1)
        pm = ok[:, None] & atom_mask[i][:, None] & atom_mask[None, :] & (i[:, None] != cols_idx[None, :])
        d = jnp.sqrt(jnp.where(pm, r2, jnp.ones_like(r2)))
        val = pair_fn(d, jax.tree_util.tree_map(lambda x: x[i], rows), cols)
        pm = pm.reshape(pm.shape + (1,) * (val.ndim - 2))
        return jnp.sum(jnp.where(pm, val, jnp.zeros_like(val)), axis=1)

    if block_size is None or block_size >= n:
        return block(cols_idx, jnp.ones(n, dtype=bool))
    c = int(block_size)
    nb = -(-n // c)
    idx = jnp.arange(nb * c)
    ok = idx < n
    idx = jnp.minimum(idx, n - 1)
    out = jax.lax.map(jax.checkpoint(lambda args: block(*args)), (idx.reshape(nb, c), ok.reshape(nb, c)))
    return out.reshape((nb * c,) + out.shape[2:])[:n]


def coulomb_energy(positions, charges, atom_mask, *, switch_radius: float,
                   half_ke: float = AIMNET2_HALF_KE, block_size: int | None = None):
    r"""AIMNet2's long-range Coulomb energy (eV) of one molecule, all pairs, free space.

    Args:
      positions: ``[N, 3]`` (Å), float32 or float64.
      charges: ``[N]`` atomic charges (e); padding slots are ignored.
      atom_mask: ``[N]`` bool, False for padding slots.
      switch_radius: ``r_s`` of the switch ``1 - f_exp`` (Å; 4.599999904632568 in AIMNet2).
      half_ke: ``k_e / 2`` in eV Å e^-2 (sum over ordered pairs).
      block_size: see :func:`pair_row_sums`.

    Returns:
      Scalar energy in eV, in the dtype of ``positions``.
    """
    def pair(d, qi, qj):
        fc = 1.0 - exp_cutoff(d, switch_radius)
        return half_ke * fc * qi[:, None] * qj[None, :] / d

    return jnp.sum(pair_row_sums(pair, positions, atom_mask, charges, charges, block_size=block_size))
