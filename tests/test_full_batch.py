"""phai.train.full_batch.fit_full_batch: the same numbers as a hand-written optax loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from phai.train.full_batch import fit_full_batch


def _problem():
    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.normal(size=(6, 3)))
    y = jnp.asarray(rng.normal(size=6))

    def loss_fn(p):  # least squares with a pytree of parameters
        return jnp.mean((A @ p["w"] + p["b"] - y) ** 2)

    return loss_fn, {"w": jnp.zeros(3), "b": jnp.asarray(0.5)}


def test_matches_explicit_loop_and_reports_loss_before_each_update(x64):
    loss_fn, p0 = _problem()
    opt = optax.adamw(optax.cosine_decay_schedule(0.1, 7), weight_decay=0.01)
    seen = []
    params, losses = fit_full_batch(loss_fn, p0, opt, 7, callback=lambda k, v: seen.append((k, v)))

    p, s, want = p0, opt.init(p0), []
    for _ in range(7):
        v, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        want.append(float(v))
    assert losses.shape == (7,) and losses.dtype == np.float64
    np.testing.assert_allclose(losses, want, rtol=1e-13)
    for k in p:
        np.testing.assert_allclose(np.asarray(params[k]), np.asarray(p[k]), rtol=1e-12, atol=1e-14)
    assert seen == [(k, losses[k]) for k in range(7)]
    # the jitted step may round the last bit differently from the eager loss
    np.testing.assert_allclose(losses[0], float(loss_fn(p0)), rtol=1e-14)
    assert losses[-1] < losses[0]


def test_zero_steps_returns_the_start():
    loss_fn, p0 = _problem()
    params, losses = fit_full_batch(loss_fn, p0, optax.sgd(0.1), 0)
    assert losses.shape == (0,) and params is p0
