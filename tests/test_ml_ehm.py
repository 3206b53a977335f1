"""ML-EHM: with alpha and K fixed to Hoffmann's values it is plain EHM (exactly, float64);
gradients of the orbital loss w.r.t. the network parameters are finite at degeneracies and
match finite differences away from them; training lowers the loss; save/load round trip;
``phai ehm --model FOLDER``; target alignment.
"""

from __future__ import annotations

import json

import ase
import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from phai.cli import main
from phai.errors import InputError, UnsupportedElementError
from phai.models import ml_ehm
from phai.physics import huckel_orbitals, huckel_system

SMALL = ml_ehm.MLEHM(width=8, n_interactions=1, n_atom_layers=1, n_sensitivities=6, pair_width=8)


def _mol(smiles, seed=5, noise=0.0):
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(m, randomSeed=seed)
    r = m.GetConformer().GetPositions()
    if noise:
        r = r + np.random.default_rng(seed).normal(0, noise, r.shape)
    return np.array([a.GetAtomicNum() for a in m.GetAtoms()], np.int32), r


def _batch(mols):
    return ml_ehm.make_batch([z for z, _ in mols], [r for _, r in mols])


def _randomise(params, key, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("weighted", [False, True])
def test_fixed_hoffmann_equals_plain_ehm(x64, weighted):
    z, r = _mol("C=NC=C", noise=0.1)
    system = jax.tree.map(jnp.asarray, huckel_system(z))
    A = len(z)
    out = ml_ehm.ml_ehm_orbitals(jnp.asarray(r), system, jnp.zeros((A, 2)), jnp.full((A, A), 1.75), weighted=weighted)
    ref = huckel_orbitals(jnp.asarray(r), system, weighted=weighted)
    np.testing.assert_array_equal(np.asarray(out.hamiltonian), np.asarray(ref.hamiltonian))
    np.testing.assert_array_equal(np.asarray(out.energies), np.asarray(ref.energies))
    # the untrained network (zero-initialised heads) is plain EHM too, in a padded batch
    model = ml_ehm.MLEHM(width=8, n_interactions=1, n_sensitivities=6, weighted=weighted)
    numbers, pos, sys_b = _batch([(z, r), _mol("C=O")])
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(numbers[0]), jnp.asarray(pos[0]),
                        jax.tree.map(lambda x: jnp.asarray(x[0]), sys_b))
    got = jax.jit(ml_ehm.batch_apply, static_argnums=0)(model, params, jnp.asarray(numbers), jnp.asarray(pos), jax.tree.map(jnp.asarray, sys_b))
    n = int(system.n_orbitals)
    np.testing.assert_allclose(np.asarray(got.energies[0, :n]), np.asarray(ref.energies), rtol=0, atol=1e-12)


def test_energy_reference_and_p_field_keep_invariance(x64):
    # the energy reference adds exactly c to every real level (H + c S); the on-site p field built
    # from bond directions rotates with the molecule: energies are invariant under rotation and
    # atom permutation with every head randomised (field included)
    z, r = _mol("C=NC=C", noise=0.1)
    system = jax.tree.map(jnp.asarray, huckel_system(z))
    A, n = len(z), int(system.n_orbitals)
    zero = ml_ehm.ml_ehm_orbitals(jnp.asarray(r), system, jnp.zeros((A, 2)), jnp.full((A, A), 1.75))
    moved = ml_ehm.ml_ehm_orbitals(jnp.asarray(r), system, jnp.zeros((A, 2)), jnp.full((A, A), 1.75), shift=4.5)
    np.testing.assert_allclose(np.asarray(moved.energies[:n]), np.asarray(zero.energies[:n]) + 4.5, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(moved.hamiltonian), np.asarray(zero.hamiltonian + 4.5 * zero.overlap), atol=1e-12)
    model = ml_ehm.MLEHM(width=8, n_interactions=1, n_sensitivities=6, pair_width=8, energy_shift=4.5)
    rot = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    perm = np.random.default_rng(4).permutation(A)
    numbers, pos, sys_b = _batch([(z, r), (z, r @ rot.T + 0.7), (z[perm], r[perm])])
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(numbers[0]), jnp.asarray(pos[0]),
                        jax.tree.map(lambda x: jnp.asarray(x[0]), sys_b))
    assert "field_1" in params["params"] and "shift" in params["params"]
    params = _randomise(params, jax.random.PRNGKey(7))
    out = jax.jit(ml_ehm.batch_apply, static_argnums=0)(model, params, jnp.asarray(numbers), jnp.asarray(pos),
                                                        jax.tree.map(jnp.asarray, sys_b))
    e = np.asarray(out.energies[:, :n])
    np.testing.assert_allclose(e[1], e[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(e[2], e[0], rtol=0, atol=1e-10)
    # and the field is active: switching it off changes the levels
    off = ml_ehm.MLEHM(width=8, n_interactions=1, n_sensitivities=6, pair_width=8, energy_shift=4.5, p_field=False)
    p_off = {"params": {k: v for k, v in params["params"].items() if not k.startswith("field_")}}
    e_off = np.asarray(jax.jit(ml_ehm.batch_apply, static_argnums=0)(
        off, p_off, jnp.asarray(numbers[:1]), jnp.asarray(pos[:1]), jax.tree.map(lambda x: jnp.asarray(x[:1]), sys_b)).energies[0, :n])
    assert np.abs(e_off - e[0]).max() > 1e-3


def test_gradients_finite_at_degeneracy_and_match_fd(x64):
    # methane (t2: triply degenerate HOMO) and ethylene twisted to 90 degrees-free symmetric geometry
    z = np.array([6, 1, 1, 1, 1])
    r = 1.09 / np.sqrt(3) * np.array([[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    mols = [(z, r), _mol("C=CC=C", noise=0.05)]
    numbers, pos, system = (jax.tree.map(jnp.asarray, x) for x in _batch(mols))
    params = SMALL.init(jax.random.PRNGKey(1), numbers[0], pos[0], jax.tree.map(lambda x: x[0], system))
    params = _randomise(params, jax.random.PRNGKey(2))
    out = jax.jit(ml_ehm.batch_apply, static_argnums=0)(SMALL, params, numbers, pos, system)
    w = np.asarray(out.energies[0])
    assert np.ptp(w[1:4]) < 1e-10  # the t2 set stays exactly degenerate under the invariant network
    homo = np.asarray(out.homo_index)
    rng = np.random.default_rng(0)
    occ = np.full((2, 11), np.nan)
    n_occ = homo + 1
    for b in range(2):  # targets that split the degenerate set: a non-symmetric loss
        occ[b, :n_occ[b]] = np.sort(np.asarray(out.energies[b, :n_occ[b]]) + rng.normal(0, 1.0, n_occ[b]))
    virt = np.asarray(out.energies[:, :4]) * 0 + 1.0
    tgt = ml_ehm.align_targets(occ, n_occ, virt, homo, pos.shape[1] * 4)
    tgt = ml_ehm.OrbitalTargets(tgt.target[:, :system.alpha.shape[1]], tgt.weight[:, :system.alpha.shape[1]])

    # one compiled value-and-gradient for both target sets (compiles dominate this test)
    @jax.jit
    def value_grad(p, target, weight):
        t = ml_ehm.OrbitalTargets(target, weight)
        return jax.value_and_grad(lambda q: ml_ehm.orbital_loss(
            ml_ehm.batch_apply(SMALL, q, numbers, pos, system).energies, t))(p)

    _, g = value_grad(params, tgt.target, tgt.weight)
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
    assert np.all(np.isfinite(flat)) and np.abs(flat).max() > 0
    # directional finite difference on the butadiene-only loss (no degeneracy)
    tgt1 = (jnp.asarray(tgt.target * np.array([[0], [1]])), jnp.asarray(tgt.weight * np.array([[0], [1]])))
    d = _randomise(jax.tree.map(jnp.zeros_like, params), jax.random.PRNGKey(3), 1.0)
    _, g1 = value_grad(params, *tgt1)
    analytic = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(d)))
    h = 1e-5
    shift = lambda s: jax.tree.map(lambda p, v: p + s * v, params, d)
    fd = (float(value_grad(shift(h), *tgt1)[0]) - float(value_grad(shift(-h), *tgt1)[0])) / (2 * h)
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_train_lowers_loss_and_save_load_roundtrip(x64, tmp_path, capsys):
    mols = [_mol(s, seed, 0.05) for s in ("C=CC=C", "C=NC=C", "C=O") for seed in (1, 2)]
    batch = _batch(mols)
    numbers, pos, system = batch
    # targets: plain EHM energies shifted and stretched (a smooth, learnable map)
    params = SMALL.init(jax.random.PRNGKey(0), jnp.asarray(numbers[0]), jnp.asarray(pos[0]),
                        jax.tree.map(lambda x: jnp.asarray(x[0]), system))
    base = jax.jit(ml_ehm.batch_apply, static_argnums=0)(SMALL, params, *(jax.tree.map(jnp.asarray, x) for x in batch))
    homo = np.asarray(base.homo_index)
    e = np.asarray(base.energies)
    occ = np.full((len(mols), e.shape[1]), np.nan)
    for b in range(len(mols)):
        occ[b, :homo[b] + 1] = 0.8 * e[b, :homo[b] + 1] + 4.0
    virt = np.stack([0.5 * e[b, homo[b] + 1:homo[b] + 3] + 2.0 for b in range(len(mols))])
    tgt = ml_ehm.align_targets(occ, homo + 1, virt, homo, e.shape[1])
    params, losses = ml_ehm.train(SMALL, params, batch, tgt, steps=40, learning_rate=1e-2)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses[[0, -1]]
    trained = ml_ehm.TrainedMLEHM(SMALL, params, {"note": "test"})
    folder = ml_ehm.save(tmp_path / "model", trained)
    again = ml_ehm.load(folder)
    structures = [(z, r, 0) for z, r in mols[:3]]
    a = trained.predict(structures)
    b = again.predict(structures)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.energies, y.energies)
    direct = jax.jit(ml_ehm.batch_apply, static_argnums=0)(SMALL, params, *(jax.tree.map(jnp.asarray, x) for x in batch))
    n = int(system.n_orbitals[0])
    np.testing.assert_allclose(a[0].energies, np.asarray(direct.energies[0, :n]), rtol=0, atol=1e-10)
    # the command with --model FOLDER
    f = tmp_path / "m.extxyz"
    ase.io.write(f, [ase.Atoms(numbers=z, positions=r) for z, r, _ in structures])
    assert main(["ehm", str(f), "--model", str(folder), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    back = [(at.numbers, at.positions, 0) for at in ase.io.read(f, index=":")]  # the file's rounding
    for d, x in zip(lines, again.predict(back)):
        np.testing.assert_allclose(d["orbital_energies"], x.energies, rtol=0, atol=1e-12)
    with pytest.raises(UnsupportedElementError, match="S"):
        again.predict([(np.array([16, 1, 1]), np.array([[0, 0, 0], [1.3, 0, 0], [0, 1.3, 0]]), 0)])


def test_align_targets_checks_counts():
    with pytest.raises(InputError, match="valence occupied"):
        ml_ehm.align_targets(np.zeros((1, 4)), np.array([4]), np.zeros((1, 2)), np.array([5]), 12)
