"""AIMNet-ME training (phai.train.aimnet_me) on a tiny set labelled here with PySCF UKS.

The oracle is real: PySCF UHF/STO-3G energies, analytic forces and Mulliken spin populations
of H2O, NH3 and CH4 geometries at charges -1, 0, +1 (lowest multiplicity): 18 unrestricted
calculations, a few seconds on one thread (UHF rather than UKS only to skip the DFT grid; the
training code does not care which unrestricted method made the labels).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import phai
from phai.errors import InputError
from phai.train import aimnet_me as me
from phai.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV

MOLECULES = {
    "water": ([8, 1, 1], [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]),
    "ammonia": ([7, 1, 1, 1], [[0.0, 0.0, 0.0], [1.01, 0.0, 0.0], [-0.34, 0.95, 0.0], [-0.34, -0.3, 0.9]]),
    "methane": ([6, 1, 1, 1, 1], [[0.0, 0.0, 0.0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                  [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]]),
}
SMALL = {"elements": [1, 6, 7, 8], "nfeature": 8, "radial_shifts": list(np.linspace(0.8, 4.4, 8)),
         "angular_shifts": [0.9, 1.9], "theta_shifts": list((np.arange(4) + 0.5) * np.pi / 4),
         "pair_hidden": [8], "embed_hidden": [32], "update_hidden": [16], "interact_hidden": [32],
         "aim_size": 16, "head_hidden": [16], "npass": 2}


def uks_label(numbers, positions, charge, multiplicity):
    """PySCF UHF/STO-3G: energy (eV), forces (eV/Å), q^alpha_i = Z_i/2 - n^alpha_i (Mulliken)."""
    from pyscf import gto, lib, scf

    lib.num_threads(1)

    mol = gto.M(atom=[(int(z), tuple(r)) for z, r in zip(numbers, positions)], unit="Angstrom", basis="sto-3g",
                charge=charge, spin=multiplicity - 1, verbose=0)
    mf = scf.UHF(mol)
    mf.conv_tol = 1e-9
    e = mf.kernel()
    assert mf.converged
    g = mf.nuc_grad_method().kernel()
    s = mf.get_ovlp()
    da, db = mf.make_rdm1()
    pa = np.zeros(mol.natm)
    pb = np.zeros(mol.natm)
    atom_of_ao = [lab[0] for lab in mol.ao_labels(fmt=False)]
    np.add.at(pa, atom_of_ao, np.einsum("ij,ji->i", da, s))
    np.add.at(pb, atom_of_ao, np.einsum("ij,ji->i", db, s))
    z = np.asarray(numbers, float)
    return e * HARTREE_TO_EV, -g * HARTREE_TO_EV / BOHR_TO_ANGSTROM, z / 2 - pa, z / 2 - pb


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    recs = []
    for name, (z, r) in MOLECULES.items():
        for g in range(2):
            pos = np.asarray(r) + (0.05 * rng.normal(size=(len(z), 3)) if g else 0.0)
            for q in (1, 0, -1):
                m = 1 + (sum(z) - q) % 2
                e, f, qa, qb = uks_label(z, pos, q, m)
                recs.append((z, pos, q, m, e, f, qa, qb, name, f"{name}/{g}"))
    cols = list(zip(*recs))
    return me.ChargeSet(list(cols[0]), list(cols[1]), cols[2], cols[3], cols[4], list(cols[5]), list(cols[6]),
                        list(cols[7]), np.asarray(cols[8]), np.asarray(cols[9]))


def test_labels_follow_the_spin_convention(dataset):
    # Mulliken populations are exact partitions: sum q^alpha = (Q - M + 1)/2, sum q^beta = (Q + M - 1)/2
    for k in range(len(dataset)):
        q, m = dataset.charge[k], dataset.multiplicity[k]
        assert abs(dataset.q_alpha[k].sum() - (q - m + 1) / 2) < 1e-6
        assert abs(dataset.q_beta[k].sum() - (q + m - 1) / 2) < 1e-6


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("me") / "run"
    cfg = me.MEConfig(model=SMALL, epochs=40, batch_size=6, lr=3e-3, valid_fraction=0.0, force_weight=0.0)
    t = me.AIMNetMETrainer(cfg, dataset, None, out)
    first = t.evaluate(t.train_pad)["loss"]
    t.fit()
    return t, out, first


def test_self_energies_per_charge_state(dataset):
    sae, shift = me.fit_self_energies(dataset, (1, 6, 7, 8), (-1, 0, 1))
    # the cation offset is an average ionisation energy (~10+ eV in STO-3G), the anion's below the neutral's
    assert shift[1] == 0.0 and shift[2] > 5.0 and shift[0] > shift[2] - 20
    resid = dataset.energy - me.reference_energy(dataset.numbers, dataset.charge, (1, 6, 7, 8), (-1, 0, 1), sae, shift)
    assert np.sqrt(np.mean(resid ** 2)) < np.std(dataset.energy)
    # per charge and multiplicity: every state here is one (Q, M) cell per charge, so the same fit;
    # cells without states (a singlet cation, ...) take their charge's mean
    sae2, shift2 = me.fit_self_energies(dataset, (1, 6, 7, 8), (-1, 0, 1), max_multiplicity=3)
    assert shift2.shape == (3, 3)
    np.testing.assert_allclose(sae2, sae, atol=1e-8)
    np.testing.assert_allclose(shift2, np.repeat(shift[:, None], 3, axis=1), atol=1e-8)
    # the set twice, the copy's cations as quartets 3 eV higher: a (+1, 4) offset 3 eV above (+1, 2),
    # the fit otherwise unchanged (3 compositions for 4 elements: compare fitted energies, not coefficients)
    cat = dataset.charge == 1
    both = me.ChargeSet(dataset.numbers * 2, dataset.positions * 2, np.tile(dataset.charge, 2),
                        np.concatenate([dataset.multiplicity, np.where(cat, 4, dataset.multiplicity)]),
                        np.concatenate([dataset.energy, dataset.energy + 3.0 * cat]))
    sae4, shift4 = me.fit_self_energies(both, (1, 6, 7, 8), (-1, 0, 1), max_multiplicity=4)
    assert shift4[1, 0] == 0.0
    e4 = me.reference_energy(both.numbers, both.charge, (1, 6, 7, 8), (-1, 0, 1), sae4, shift4, both.multiplicity)
    np.testing.assert_allclose(e4[:len(dataset)], dataset.energy - resid, atol=1e-6)
    np.testing.assert_allclose(e4[len(dataset):] - e4[:len(dataset)], 3.0 * cat, atol=1e-6)


def test_loss_decreases_and_charges_sum(trained, dataset):
    t, _, first = trained
    last = t.evaluate(t.train_pad)["loss"]
    assert last < 0.5 * first, (first, last)
    pot = t.potential()
    for k in range(0, len(dataset), 5):
        r = pot(dataset.numbers[k], dataset.positions[k], charge=int(dataset.charge[k]),
                multiplicity=int(dataset.multiplicity[k]))
        qa, qb = (dataset.charge[k] - dataset.multiplicity[k] + 1) / 2, (dataset.charge[k] + dataset.multiplicity[k] - 1) / 2
        assert abs(r.charges.sum() - dataset.charge[k]) < 1e-5      # float32 sums of O(1) numbers
        assert abs(r.charges_alpha.sum() - qa) < 1e-5 and abs(r.charges_beta.sum() - qb) < 1e-5


def test_charges_sum_exactly_in_float64(trained):
    _, out, _ = trained
    pot = phai.load(str(out), precision="float64")
    z, r = MOLECULES["ammonia"]
    for q in (-1, 0, 1):
        res = pot(z, r, charge=q)
        assert abs(res.charges.sum() - q) < 1e-12


def test_cation_differs_from_neutral_and_follows_dft(trained, dataset):
    t, _, _ = trained
    pot = t.potential()
    k0 = next(k for k in range(len(dataset)) if dataset.charge[k] == 0)
    kp = next(k for k in range(len(dataset)) if dataset.charge[k] == 1 and dataset.geometry[k] == dataset.geometry[k0])
    e0 = pot(dataset.numbers[k0], dataset.positions[k0], charge=0).energy
    ep = pot(dataset.numbers[kp], dataset.positions[kp], charge=1).energy
    ip_dft = dataset.energy[kp] - dataset.energy[k0]
    assert abs((ep - e0) - ip_dft) < 0.3 * abs(ip_dft), (ep - e0, ip_dft)


def test_saved_folder_reloads_identically(trained, dataset):
    t, out, _ = trained
    a, b = t.potential(), phai.load(str(out))
    assert type(b).__name__ == "AIMNetMEPotential"
    for k in (0, 4, 8):
        ra = a(dataset.numbers[k], dataset.positions[k], charge=int(dataset.charge[k]))
        rb = b(dataset.numbers[k], dataset.positions[k], charge=int(dataset.charge[k]))
        assert ra.energy == rb.energy
        np.testing.assert_array_equal(ra.charges_alpha, rb.charges_alpha)
        np.testing.assert_array_equal(ra.forces, rb.forces)


def test_resume_continues_exactly(dataset, tmp_path):
    cfg = me.MEConfig(model=SMALL, epochs=2, batch_size=6, lr=3e-3, valid_fraction=0.0, force_weight=0.0)
    full = me.AIMNetMETrainer(cfg, dataset, None, None)
    full.fit()

    def kill(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):   # killed after the first epoch's checkpoint
        me.AIMNetMETrainer(cfg, dataset, None, tmp_path / "r").fit(kill)
    resumed = me.AIMNetMETrainer(cfg, dataset, None, tmp_path / "r")
    assert resumed.epoch == 1
    resumed.fit()
    for x, y in zip(jax.tree_util.tree_leaves(full.params), jax.tree_util.tree_leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the same folder with other training data (one state less, or one energy changed) is refused,
    # not silently resumed: a cross-validation fold reusing an output folder would train on test data
    fewer = dataset.subset(np.arange(1, len(dataset)))
    moved = dataset.subset(np.arange(len(dataset)))
    moved.energy = moved.energy + np.eye(len(dataset))[0] * 1e-3
    for other in (fewer, moved):
        with pytest.raises(InputError, match="trained on other data"):
            me.AIMNetMETrainer(cfg, other, None, tmp_path / "r")
    assert dataset.fingerprint() == dataset.subset(np.arange(len(dataset))).fingerprint()


def test_cdft_command_runs(trained, tmp_path, capsys):
    from ase import Atoms

    from phai.cli import main

    _, out, _ = trained
    z, r = MOLECULES["water"]
    path = tmp_path / "w.xyz"
    Atoms(numbers=z, positions=r).write(path)
    assert main(["cdft", str(path), "--model", str(out), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["charges_of_states"] == [1, 0, -1]
    assert np.isclose(row["chi"], (row["ip"] + row["ea"]) / 2)
    assert np.isclose(row["ip"], row["energies"][0] - row["energies"][1])
    assert abs(sum(row["atomic_charges"][0]) - 1) < 1e-5


def test_loss_gradient_matches_finite_differences(dataset):
    with jax.enable_x64(True):
        cfg = me.MEConfig(model={**SMALL, "npass": 1}, epochs=1, batch_size=4, valid_fraction=0.0, force_weight=0.1)
        t = me.AIMNetMETrainer(cfg, dataset, None, None)
        assert t.use_forces and t.use_charges
        t.dtype = jnp.float64
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), t.params)
        batch = t.batch(t.train_pad, np.arange(4))
        loss = jax.jit(lambda p: t.loss_fn(p, batch)[0])
        g = jax.grad(loss)(params)
        for path in (("params", "charge_head", "Dense_0", "kernel"), ("params", "energy_head", "Dense_1", "bias"),
                     ("params", "afv")):
            leaf = params
            gl = g
            for k in path:
                leaf, gl = leaf[k], gl[k]
            idx = tuple(np.unravel_index(int(np.argmax(np.abs(np.asarray(gl)))), leaf.shape))
            h = 1e-5

            def shifted(d, path=path, idx=idx):
                p = jax.tree_util.tree_map(lambda x: x, params)
                node = p
                for k in path[:-1]:
                    node[k] = dict(node[k])
                    node = node[k]
                node[path[-1]] = node[path[-1]].at[idx].add(d)
                return float(loss(p))

            fd = (shifted(h) - shifted(-h)) / (2 * h)
            assert abs(fd - float(gl[idx])) < 1e-6 * max(1.0, abs(fd)), (path, fd, float(gl[idx]))


def test_readers_round_trip(dataset, tmp_path):
    import h5py

    # the data set's HDF5 layout (/<molecule>/<state>, Hartree units, NaN = not computed)
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        for k in range(len(dataset)):
            mol, c = dataset.geometry[k].split("/")
            g = f.require_group(f"{mol}/q{dataset.charge[k]}")
            g.attrs["charge"], g.attrs["multiplicity"] = dataset.charge[k], dataset.multiplicity[k]
            if "coordinates" not in g:
                n = sum(dataset.geometry[j].startswith(mol + "/") and dataset.charge[j] == dataset.charge[k]
                        for j in range(len(dataset)))
                a = len(dataset.numbers[k])
                g["atomic_numbers"] = dataset.numbers[k]
                g["coordinates"] = np.zeros((n + 1, a, 3))
                for key, shape in (("x.energy", (n + 1,)), ("x.forces", (n + 1, a, 3)), ("x.q_alpha", (n + 1, a)),
                                   ("x.q_beta", (n + 1, a))):
                    g[key] = np.full(shape, np.nan)
                g["x.energy"].attrs["units"] = "Hartree"
                g["x.forces"].attrs["units"] = "Hartree/Angstrom"
            c = int(c)
            g["coordinates"][c] = dataset.positions[k]
            g["x.energy"][c] = dataset.energy[k] / HARTREE_TO_EV
            g["x.forces"][c] = dataset.forces[k] / HARTREE_TO_EV
            g["x.q_alpha"][c], g["x.q_beta"][c] = dataset.q_alpha[k], dataset.q_beta[k]
    back = me.read_charge_data(path)     # the NaN row of every group is dropped
    assert len(back) == len(dataset)
    order = {(g, q): i for i, (g, q) in enumerate(zip(back.geometry, back.charge))}
    for k in range(len(dataset)):
        i = order[(dataset.geometry[k], dataset.charge[k])]
        assert abs(back.energy[i] - dataset.energy[k]) < 1e-9
        np.testing.assert_allclose(back.forces[i], dataset.forces[k], atol=1e-12)
        np.testing.assert_array_equal(back.q_beta[i], dataset.q_beta[k])
    xyz = tmp_path / "c.extxyz"
    me.write_charge_extxyz(xyz, dataset)
    again = me.read_charge_data(xyz)
    assert list(again.geometry) == list(dataset.geometry)
    np.testing.assert_allclose(again.energy, dataset.energy, rtol=1e-12)
    np.testing.assert_allclose(np.concatenate(again.q_alpha), np.concatenate(dataset.q_alpha), atol=1e-8)


def test_state_difference_term_is_the_ip_ea_error(dataset):
    # w_D * mean over the charged states of [(E_q - E_0) - (E_q^ref - E_0^ref)]^2, with whole geometries per batch
    # the settings of `trained`, so that its compiled programs are reused
    kw = {"model": SMALL, "epochs": 1, "batch_size": 6, "lr": 3e-3, "valid_fraction": 0.0, "force_weight": 0.0}
    t = me.AIMNetMETrainer(me.MEConfig(diff_weight=2.5, **kw), dataset, None, None)
    plain = me.AIMNetMETrainer(me.MEConfig(**kw), dataset, None, None)
    plan = t.plan(t.train_pad, epoch=3)
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(dataset)))
    for idx in plan:
        assert len(idx) <= 6 and all(np.sum(dataset.geometry == g) == np.sum(dataset.geometry[idx] == g)
                                     for g in dataset.geometry[idx])
    idx = plan[0]
    b = t.batch(t.train_pad, idx)
    extra = float(t._eval(t.params, b)[0]) - float(plain._eval(t.params, b)[0])
    energy = jax.jit(jax.vmap(lambda *a: t.model.apply(t.params, *a)["energy"]))
    e = np.asarray(energy(b["R"], b["species"], b["neighbors"], b["atom_mask"], b["charge"], b["multiplicity"]),
                   np.float64)[:len(idx)]
    total = e + me.reference_energy([dataset.numbers[i] for i in idx], dataset.charge[idx], t.cfg.elements,
                                    t.cfg.charge_states, t.sae, t.state_shift)
    err = []
    for k, i in enumerate(idx):
        n = [j for j, m in enumerate(idx) if dataset.geometry[m] == dataset.geometry[i] and dataset.charge[m] == 0]
        if dataset.charge[i] != 0 and n:
            err.append((total[k] - total[n[0]]) - (dataset.energy[i] - dataset.energy[idx[n[0]]]))
    assert len(err) >= 2
    assert abs(extra - 2.5 * np.mean(np.square(err))) < 1e-4 * max(1.0, abs(extra))


def test_train_aimnet_command_passes_the_ip_ea_options(dataset, tmp_path, capsys):
    import phai
    from phai.cli import main

    data = tmp_path / "states.extxyz"
    me.write_charge_extxyz(data, dataset)
    out = tmp_path / "cli"
    args = ["train-aimnet", "--data", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "6",
            "--size", "tiny", "--force-weight", "0", "--valid-fraction", "0"]
    assert main(args + ["--diff-weight", "-1"]) == 2
    assert "--diff-weight" in capsys.readouterr().err
    assert main(args + ["--diff-weight", "30", "--spin-shifts"]) == 0
    pot = phai.load(str(out))
    # offsets per charge and multiplicity: [charge states, multiplicities]; per charge only: [charge states]
    assert pot.state_shift.ndim == 2
    z, r = MOLECULES["water"]
    e_cation, e_neutral = (pot(np.asarray(z), np.asarray(r), charge=q).energy for q in (1, 0))
    assert np.isfinite(e_cation) and e_cation != e_neutral


def test_zero_energy_head_starts_at_the_self_energies(dataset):
    # zero_energy_head: the untrained model predicts exactly its fitted self energies, and it
    # still learns (the zeroed layer gets gradients, the layers below follow)
    cfg = me.MEConfig(model=SMALL, epochs=3, batch_size=6, lr=3e-3, valid_fraction=0.0, force_weight=0.0,
                      spin_state_shifts=True, zero_energy_head=True)
    t = me.AIMNetMETrainer(cfg, dataset, None, None)
    pot = t.potential(best=False, precision="float64")
    ref = me.reference_energy(dataset.numbers, dataset.charge, t.cfg.elements, t.cfg.charge_states, t.sae,
                              t.state_shift, dataset.multiplicity)
    for k in range(len(dataset)):
        r = pot(dataset.numbers[k], dataset.positions[k], charge=int(dataset.charge[k]),
                multiplicity=int(dataset.multiplicity[k]))
        assert abs(r.energy - ref[k]) < 1e-9
    before = t.params
    t.fit()
    moved = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                                   before["params"], t.params["params"])
    head = moved["energy_head"]
    last = f"Dense_{len(SMALL['head_hidden'])}"
    assert head[last]["kernel"] > 0 and head["Dense_0"]["kernel"] > 0
    assert me.MEConfig(zero_energy_head=True).to_json()["zero_energy_head"] is True
    assert "zero_energy_head" not in me.MEConfig().to_json()     # old checkpoints resume unchanged
