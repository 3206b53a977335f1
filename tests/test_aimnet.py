"""AIMNet / AIMNet-ME (untrained flax models): shapes, invariances, charge conservation, the
dependence of the energy on charge and spin, padding and gradients. No oracle exists for an
untrained model; these are properties every parameter set must have."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phai.errors import InputError
from phai.geometry import dense_from_pairs, neighbor_pairs
from phai.models import aimnet as an

CFG = an.AIMNetConfig(elements=(1, 6, 7, 8), embed_hidden=(64, 48), interact_hidden=(48,), aim_size=32,
                      head_hidden=(32,), pair_hidden=(16,), update_hidden=(32,), nse_eps=1e-12)
# nse_eps 1e-12 (default 1e-6): the eps term is the only departure from exact charge conservation,
# and with random weights sum(k^2) can be ~0.1, which would leave ~1e-5 e.
# acetaldehyde-like CH3CHO plus an NH3, 11 atoms
Z = np.array([6, 6, 8, 1, 1, 1, 1, 7, 1, 1, 1])
R = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.1, 1.05, 0.0], [-0.4, 1.0, 0.1], [-0.35, -0.5, 0.9],
              [-0.35, -0.55, -0.85], [2.05, -0.95, 0.0], [1.0, 2.6, 1.8], [1.9, 2.9, 2.2], [0.4, 3.4, 1.7],
              [0.6, 2.1, 2.6]])


def inputs(z, r, n_slots=16, k_slots=16, dtype=np.float64):
    i, j, _ = neighbor_pairs(r, CFG.radial_cutoff)
    nb = dense_from_pairs(i, j, n_slots, k_slots)
    pos = np.zeros((n_slots, 3))
    pos[:len(z)] = r
    species = np.zeros(n_slots, dtype=np.int32)
    species[:len(z)] = [CFG.elements.index(x) for x in z]
    mask = np.arange(n_slots) < len(z)
    return jnp.asarray(pos, dtype), jnp.asarray(species), jnp.asarray(nb), jnp.asarray(mask)


@pytest.fixture(scope="module")
def setup():
    with jax.enable_x64(True):
        model = an.AIMNet(CFG)
        params = model.init(jax.random.PRNGKey(0), *inputs(Z, R), 0, 1)
        # give the (zero-initialised) atomic shifts values, so they are tested too
        params = jax.tree_util.tree_map(lambda x: x, params)
        params["params"]["atomic_shift"] = jnp.asarray([-13.6, -1030.0, -1480.0, -2040.0], jnp.float32)
    apply = jax.jit(model.apply)
    return model, params, apply


def run(setup, z, r, charge=0, mult=1, **kw):
    _, params, apply = setup
    return {k: np.asarray(v) for k, v in apply(params, *inputs(z, r, **kw), charge, mult).items()}


def test_shapes_and_charge_conservation(setup):
    with jax.enable_x64(True):
        for charge, mult in [(0, 1), (1, 2), (-1, 2), (0, 3)]:
            out = run(setup, Z, R, charge, mult)
            assert out["energy"].shape == () and out["charges"].shape == (16,) and out["aim"].shape == (16, 32)
            qa, qb = an.spin_charges(charge, mult)
            # NSE: sums hit the targets up to eps * residual / sum(k^2)
            assert abs(out["charges"].sum() - charge) < 1e-9
            assert abs(out["charges_alpha"].sum() - qa) < 1e-9 and abs(out["charges_beta"].sum() - qb) < 1e-9
            assert not out["charges"][len(Z):].any() and not out["atomic_energies"][len(Z):].any()


def test_energy_depends_on_charge_and_spin(setup):
    with jax.enable_x64(True):
        e = {(c, m): float(run(setup, Z, R, c, m)["energy"]) for c, m in [(0, 1), (1, 2), (-1, 2), (0, 3)]}
    # different charge states: different AFV tables and charge targets; different spins: the spin
    # embedding and the alpha/beta targets. Untrained, the differences are O(0.1-10) eV.
    assert abs(e[(1, 2)] - e[(0, 1)]) > 1e-3
    assert abs(e[(-1, 2)] - e[(0, 1)]) > 1e-3
    assert abs(e[(0, 3)] - e[(0, 1)]) > 1e-3


def test_rotation_translation_permutation_invariance(setup):
    rng = np.random.default_rng(1)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    perm = rng.permutation(len(Z))
    with jax.enable_x64(True):
        base = run(setup, Z, R, 1, 2)
        moved = run(setup, Z, R @ rot.T + np.array([3.0, -1.0, 7.0]), 1, 2)
        shuffled = run(setup, Z[perm], R[perm], 1, 2)
    assert abs(moved["energy"] - base["energy"]) < 1e-9
    np.testing.assert_allclose(moved["charges"], base["charges"], atol=1e-10)
    assert abs(shuffled["energy"] - base["energy"]) < 1e-9
    np.testing.assert_allclose(shuffled["charges"][:len(Z)], base["charges"][:len(Z)][perm], atol=1e-10)


def test_padding_does_not_leak(setup):
    _, params, apply = setup
    with jax.enable_x64(True):
        small = run(setup, Z, R, 0, 1)
        big = run(setup, Z, R, 0, 1, n_slots=24, k_slots=24)
        pos, species, nb, mask = inputs(Z, R, n_slots=24, k_slots=24)
        pos = pos.at[len(Z):].set(jnp.asarray(np.random.default_rng(2).normal(size=(24 - len(Z), 3))))
        species = species.at[len(Z):].set(2)
        garbage = apply(params, pos, species, nb, mask, 0, 1)
    assert abs(big["energy"] - small["energy"]) < 1e-10
    assert abs(float(garbage["energy"]) - small["energy"]) < 1e-10


def test_forces_match_finite_differences(setup):
    _, params, apply = setup
    with jax.enable_x64(True):
        pos, species, nb, mask = inputs(Z, R)
        energy = jax.jit(lambda x: apply(params, x, species, nb, mask, -1, 2)["energy"])
        g = np.asarray(jax.grad(energy)(pos))
        assert np.all(np.isfinite(g)) and not g[len(Z):].any()
        rng = np.random.default_rng(3)
        h = 1e-5
        for _ in range(3):
            v = np.zeros((16, 3))
            v[:len(Z)] = rng.normal(size=(len(Z), 3))
            v /= np.linalg.norm(v)
            fd = (float(energy(pos + h * v)) - float(energy(pos - h * v))) / (2 * h)
            assert abs(fd - np.sum(g * v)) < 1e-6 * max(1.0, abs(fd))


def test_nse_formula_and_plain_aimnet():
    q = jnp.asarray([[0.1], [0.2], [0.3], [9.0]])
    k = jnp.asarray([[1.0], [2.0], [0.0], [5.0]])
    mask = jnp.asarray([True, True, True, False])
    out = np.asarray(an.nse(jnp.asarray([1.0]), q, k, mask, eps=0.0))[:, 0]
    # residual 1 - 0.6 = 0.4 shared as k^2 / sum k^2 = (1, 4, 0) / 5; the padding slot is 0
    np.testing.assert_allclose(out, [0.1 + 0.08, 0.2 + 0.32, 0.3, 0.0], atol=1e-7)
    cfg = an.AIMNetConfig(elements=(1, 6, 7, 8), charge_spin=False, embed_hidden=(32,), interact_hidden=(16,),
                          aim_size=16, head_hidden=(16,), pair_hidden=(8,), update_hidden=(16,), npass=2)
    model = an.AIMNet(cfg)
    args = inputs(Z, R, dtype=np.float32)
    params = model.init(jax.random.PRNGKey(1), *args, 0, 1)
    out = model.apply(params, *args, 1, 1)
    assert abs(float(out["charges"].sum()) - 1.0) < 1e-4
    np.testing.assert_allclose(out["charges_alpha"], out["charges_beta"])


def test_check_state():
    an.check_state(CFG, Z, 1, 2)
    with pytest.raises(InputError, match="outside"):
        an.check_state(CFG, [9, 1], 0, None)
    with pytest.raises(InputError, match="no embedding"):
        an.check_state(CFG, Z, 2, None)
    with pytest.raises(InputError, match="does not fit"):
        an.check_state(CFG, Z, 0, 2)
