"""A full-batch gradient loop: the whole training set in every step, one jitted update.

For small fits where the data fit in memory at once and there is nothing to shuffle or
validate (HIP-NN energies, ML-EHM orbital energies, Hückel parameter fits): the loss is a
closure over its data, and each step is ``value_and_grad`` followed by an optax update.
Large sets with mini-batches, validation and checkpoints use :mod:`phai.train.trainer`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import optax


def fit_full_batch(loss_fn: Callable, params, optimizer: optax.GradientTransformation, steps: int, *,
                   callback: Callable[[int, float], None] | None = None):
    """Minimise ``loss_fn(params) -> scalar`` with ``optimizer`` for ``steps`` steps.

    Args:
      loss_fn: a pure function of the parameter pytree (the data closed over), returning the
        scalar loss; differentiated with :func:`jax.value_and_grad`.
      params: the starting parameter pytree.
      optimizer: any optax transformation (its state starts from ``optimizer.init(params)``;
        ``update`` gets the parameters, as AdamW and masked transforms need).
      steps: number of updates.
      callback: called as ``callback(k, loss_k)`` after step ``k`` (e.g. to log).

    Returns ``(params, losses)``: the parameters after the last step and ``losses [steps]``
    (float64 NumPy), ``losses[k]`` being the loss *before* update ``k``. The step is jitted
    once per call (the shapes never change), so the loop recompiles only when called again
    with a new ``loss_fn``.
    """
    state = optimizer.init(params)

    @jax.jit
    def step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    losses = []
    for k in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
        if callback is not None:
            callback(k, losses[-1])
    return params, np.asarray(losses)
