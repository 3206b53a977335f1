"""Cutoff functions."""

import jax.numpy as jnp


def cosine_cutoff(d, cutoff: float):
    """Behler's cosine cutoff ``f_C(d) = 0.5 cos(pi d / Rc) + 0.5`` for ``d <= Rc``, else 0.

    Args:
      d: distances, any shape (Å).
      cutoff: ``Rc`` (Å).

    Returns:
      Array of the shape and dtype of ``d``. Continuous with a continuous first derivative
      at ``Rc``; pairs at exactly ``Rc`` are kept (value 0), as in TorchANI.
    """
    fc = 0.5 * jnp.cos(d * (jnp.pi / cutoff)) + 0.5
    return jnp.where(d <= cutoff, fc, jnp.zeros_like(fc))
