"""HIP-NN: invariances (rotation, translation, permutation), padding changes nothing,
gradients against finite differences, a tiny fit lowers the loss, feature outputs.

All in float64 (tolerances 1e-10 for exact symmetries; finite differences by
``jax.test_util.check_grads`` at its float64 defaults).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from rdkit import Chem
from rdkit.Chem import AllChem
from scipy.spatial.transform import Rotation

from phai.geometry.neighbors import neighbor_pairs
from phai.models.hipnn import (
    HIPNN,
    all_pairs,
    batch_apply,
    fit_energies,
    hierarchicality,
    init_params,
    species_index,
)
from phai.physics import extended_huckel

MODEL = HIPNN(width=8, n_interactions=2, n_atom_layers=1, n_sensitivities=6, hard_cutoff=4.0, soft_max=3.0)
APPLY = jax.jit(MODEL.apply)


def _mol(smiles="NC=O", seed=3):
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(m, randomSeed=seed)
    return np.array([a.GetAtomicNum() for a in m.GetAtoms()]), m.GetConformer().GetPositions()


def _host(z, r, cutoff=4.0):
    i, j, _ = neighbor_pairs(r, cutoff)
    return species_index(z, MODEL.species), jnp.asarray(r), jnp.asarray(i, jnp.int32), jnp.asarray(j, jnp.int32)


@pytest.fixture
def setup(x64):
    z, r = _mol()
    s, R, i, j = _host(z, r)
    params = MODEL.init(jax.random.PRNGKey(0), s, R, i, j)
    return z, r, params


def test_invariances(setup):
    z, r, params = setup
    ref = APPLY(params, *_host(z, r))
    rot = Rotation.random(random_state=1).as_matrix()
    moved = r @ rot.T + np.array([3.0, -1.0, 7.5])
    out = APPLY(params, *_host(z, moved))
    np.testing.assert_allclose(out.energy, ref.energy, rtol=0, atol=1e-10)
    perm = np.random.default_rng(2).permutation(len(z))
    outp = APPLY(params, *_host(z[perm], r[perm]))
    np.testing.assert_allclose(outp.energy, ref.energy, rtol=0, atol=1e-10)
    for a, b in zip(outp.features, ref.features):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[perm], rtol=0, atol=1e-10)
    assert abs(float(ref.level_energies[2].sum())) > 0  # the last level contributes


def test_padding_changes_nothing(setup):
    z, r, params = setup
    ref = APPLY(params, *_host(z, r))
    A = len(z)
    zp = np.concatenate([z, [0, 0, 0]])
    rp = np.concatenate([r, np.zeros((3, 3)) + 0.1])  # padded atoms may sit anywhere
    i, j, _ = neighbor_pairs(r, 4.0)
    sent = A + 3
    ip = np.concatenate([i, [sent] * 7]).astype(np.int32)
    jp = np.concatenate([j, [sent] * 7]).astype(np.int32)
    out = APPLY(params, species_index(zp, MODEL.species), jnp.asarray(rp), jnp.asarray(ip), jnp.asarray(jp))
    np.testing.assert_allclose(out.energy, ref.energy, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(out.features[-1])[:A], np.asarray(ref.features[-1]), atol=1e-12)
    assert not np.asarray(out.atom_mask)[A:].any()
    np.testing.assert_array_equal(np.asarray(out.pair_features)[len(i):], 0.0)
    # all_pairs inside jit gives the same as host pairs within the cutoff (sensitivities vanish beyond)
    ia, ja = all_pairs(A + 3, A)
    out2 = APPLY(params, species_index(zp, MODEL.species), jnp.asarray(rp), ia, ja)
    np.testing.assert_allclose(out2.energy, ref.energy, rtol=0, atol=1e-12)
    # and a batch with two differently padded copies
    outb = batch_apply(MODEL, params, jnp.stack([species_index(zp, MODEL.species)] * 2),
                       jnp.stack([jnp.asarray(rp)] * 2), jnp.stack([ia, ia]), jnp.stack([ja, ja]))
    np.testing.assert_allclose(np.asarray(outb.energy), [ref.energy] * 2, rtol=0, atol=1e-12)


def test_pair_features_symmetric(setup):
    z, r, params = setup
    s, R, i, j = _host(z, r)
    out = APPLY(params, s, R, i, j)
    key = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(i, j))}
    pf = np.asarray(out.pair_features)
    for (a, b), k in key.items():
        np.testing.assert_allclose(pf[k], pf[key[(b, a)]], rtol=0, atol=1e-14)


def test_gradients_finite_differences(setup):
    z, r, params = setup
    s, R, i, j = _host(z, r)

    def energy_of_positions(R):
        return MODEL.apply(params, s, R, i, j).energy

    check_grads(jax.jit(energy_of_positions), (R,), order=1, modes=["rev", "fwd"])

    def energy_of_params(p):
        return MODEL.apply(p, s, R, i, j).energy

    check_grads(jax.jit(energy_of_params), (params,), order=1, modes=["rev"])
    h = hierarchicality(APPLY(params, s, R, i, j).level_energies, s >= 0)
    assert np.isfinite(float(h))


def test_tiny_fit_lowers_loss(x64):
    """Fit extended-Hückel band energies (2 x sum of occupied levels, eV) of distorted molecules."""
    rng = np.random.default_rng(0)
    mols = [_mol(s, 1) for s in ("C=CC=C", "C=NC=C", "C=CC=O", "NC=O")]
    A = 10
    S, R, E = [], [], []
    for z, r in mols:
        for _ in range(4):
            rr = r + rng.normal(0, 0.05, r.shape)
            res = extended_huckel(z, rr)
            E.append(2 * float(res.energies[: int(res.homo_index) + 1].sum()))
            zp = np.zeros(A, int)
            zp[: len(z)] = z
            rp = np.zeros((A, 3))
            rp[: len(z)] = rr
            S.append(species_index(zp, MODEL.species))
            R.append(rp)
    S, R, E = jnp.stack(S), jnp.asarray(np.stack(R)), np.asarray(E)
    n_at = jnp.sum(S >= 0, axis=1)
    I, J = jax.vmap(lambda n: all_pairs(A, n))(n_at)
    params = init_params(MODEL, jax.random.PRNGKey(1), S, R, I, J, energies=E)
    params, losses = fit_energies(MODEL, params, S, R, I, J, E, steps=100, learning_rate=3e-3)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses[[0, -1]]  # E^0 by least squares starts low
