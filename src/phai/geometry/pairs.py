"""In-jit gathers over dense neighbor lists, safe for padding and for gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _free_displacement(Ra, Rb):
    return Ra - Rb


def neighbor_vectors(R, idx, displacement_fn=None):
    """Displacements and distances from each atom to its listed neighbors.

    Args:
      R: positions ``[N, 3]`` (Å), float32 or float64.
      idx: neighbor indices ``[N, K]`` int32, sentinel ``N`` for an empty slot.
      displacement_fn: jax-md ``displacement_fn(Ra, Rb) -> Ra - Rb`` (minimum image in a
        periodic space). ``None`` means free space.

    Returns:
      ``(dR [N, K, 3], d [N, K], mask [N, K] bool)`` with ``dR[i, k] = R[idx[i,k]] - R[i]``.
      Empty slots have ``mask`` False, ``d`` = 1 and ``dR`` = 0; the square root is taken
      behind a double ``where`` so that no NaN reaches any gradient.
    """
    n = R.shape[0]
    mask = idx < n
    Rj = R[jnp.minimum(idx, n - 1)]
    disp = _free_displacement if displacement_fn is None else displacement_fn
    dR = jax.vmap(jax.vmap(disp, (0, None)), (0, 0))(Rj, R)
    dR = jnp.where(mask[..., None], dR, jnp.zeros_like(dR))
    r2 = jnp.sum(dR * dR, axis=-1)
    safe_r2 = jnp.where(mask, r2, jnp.ones_like(r2))
    d = jnp.sqrt(safe_r2)
    return dR, d, mask


@functools.lru_cache(maxsize=64)
def triu_slot_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Static slot index pairs ``(p, q)`` with ``p < q`` over ``k`` neighbor slots.

    Used to enumerate the unordered neighbor pairs (j, k) of an angular term without
    counting a pair twice. The pairs are ordered by ``q``, then ``p``: since a dense list
    fills its slots from the left, the pairs of an atom with ``c`` neighbors are exactly the
    first ``c (c - 1) / 2``, so a list of pairs can be cut after ``max_c c (c - 1) / 2``
    entries (:func:`num_slot_pairs`) without losing any. Returns two
    ``[k (k - 1) / 2]`` int32 arrays.
    """
    q, p = np.tril_indices(k, -1)
    return p.astype(np.int32), q.astype(np.int32)


def num_slot_pairs(max_neighbors: int) -> int:
    """How many leading entries of :func:`triu_slot_pairs` cover ``max_neighbors`` neighbors."""
    return max_neighbors * (max_neighbors - 1) // 2
