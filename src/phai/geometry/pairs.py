"""In-jit gathers over neighbor lists (dense ``[N, K]`` or flat pair/triple lists), safe
for padding and for gradients."""

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
    counting a pair twice. Returns two ``[k (k - 1) / 2]`` int32 arrays.
    """
    p, q = np.triu_indices(k, 1)
    return p.astype(np.int32), q.astype(np.int32)


def pair_vectors(R, i, j, displacement_fn=None):
    """Displacements and distances of a flat list of atom pairs.

    Args:
      R: positions ``[N, 3]`` (Å).
      i, j: ``[P]`` int32 atom indices; entries with ``i >= N`` (the sentinel) are padding.
      displacement_fn: jax-md displacement (free space if ``None``).

    Returns:
      ``(dR [P, 3], d [P], mask [P] bool)`` with ``dR = R[j] - R[i]`` (minimum image in a
      periodic space). Padding entries have ``d = 1`` and ``dR = 0``, behind a double
      ``where``, so no NaN reaches a gradient.
    """
    n = R.shape[0]
    mask = i < n
    Ri, Rj = R[jnp.minimum(i, n - 1)], R[jnp.minimum(j, n - 1)]
    disp = _free_displacement if displacement_fn is None else jax.vmap(displacement_fn)
    dR = jnp.where(mask[:, None], disp(Rj, Ri), 0.0)
    r2 = jnp.einsum("px,px->p", dR, dR)
    d = jnp.sqrt(jnp.where(mask, r2, 1.0))
    return dR, d, mask


def pairs_from_dense(idx):
    """Unordered pairs ``[2, N K]`` (``i < j``, padding ``N``) from a dense list ``[N, K]``
    that holds both directions of every pair (jax-md's ``Dense`` format). Jit-compatible."""
    n, k = idx.shape
    i = jnp.broadcast_to(jnp.arange(n, dtype=idx.dtype)[:, None], (n, k))
    keep = (idx < n) & (i < idx)
    return jnp.stack([jnp.where(keep, i, n).reshape(-1), jnp.where(keep, idx, n).reshape(-1)])


def triples_from_dense(idx):
    """Angular triples ``[3, N K (K - 1) / 2]`` (centre, j, k) with padding ``N`` from a
    dense angular neighbor list ``[N, K]``. Jit-compatible."""
    n, k = idx.shape
    p, q = triu_slot_pairs(k)
    j, kk = idx[:, p], idx[:, q]
    keep = (j < n) & (kk < n)
    c = jnp.broadcast_to(jnp.arange(n, dtype=idx.dtype)[:, None], j.shape)
    return jnp.stack([jnp.where(keep, c, n).reshape(-1), jnp.where(keep, j, n).reshape(-1),
                      jnp.where(keep, kk, n).reshape(-1)])
