"""A Δ model's correction in the base's own atomic charges (``--base-charge-terms``).

:meth:`phai.models.aimnet2.AIMNet2.with_charge_terms` adds ``sum_i a[Z_i] q_i + b[Z_i] q_i^2``
(each member's own charges, one table per total charge and electron parity) to the pretrained
AIMNet2; :func:`phai.train.aimnet_me.fit_base_charge_terms` fits ``a, b`` by least squares and
the trainer learns on top of the corrected base. The oracles: the formula evaluated from the
uncorrected model's own charges (float64), central finite differences, and a synthetic
residual with known terms built on the real base charges of real labelled molecules.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import space

import phai
import phai.md
from phai.cli import main
from phai.commands.train_aimnet import SIZES
from phai.errors import InputError, ModelFileError
from phai.models.aimnet_me import AIMNetMEPotential
from phai.train import aimnet_me as me

DATA = Path(__file__).parent / "data" / "charge_labels" / "charge_labels.h5"
BASE = "aimnet2-b973c"
KINDS = [(q, p) for q in (-1, 0, 1) for p in ("even", "odd")]


def random_terms(seed=0, elements=(1, 6, 7, 8)):
    rng = np.random.default_rng(seed)
    return [{"charge": q, "electrons": p, "elements": list(elements), "a": rng.normal(0, 1, len(elements)).tolist(),
             "b": rng.normal(0, 1, len(elements)).tolist()} for q, p in KINDS]


def formula(plain, z, terms, charge):
    """The term from the uncorrected result: a . q_mean + b . mean over members of q^2."""
    table = {(t["charge"], t["electrons"]): t for t in terms}
    t = table[me.state_kind(z, charge)]
    a = dict(zip(t["elements"], t["a"]))
    b = dict(zip(t["elements"], t["b"]))
    m = 4
    q2 = plain.charges ** 2 + plain.charges_std ** 2 * (m - 1) / m
    return sum(a[int(zi)] * qi + b[int(zi)] * q2i for zi, qi, q2i in zip(z, plain.charges, q2))


def test_terms_add_the_formula_and_leave_charges(base64, states, x64):
    terms = random_terms()
    corr = base64.with_charge_terms(terms)
    assert corr.charge_terms == terms and base64.charge_terms is None
    for k in range(len(states)):     # closed-shell and radical, all three charges: all six tables
        z, r, q = states.numbers[k], states.positions[k], int(states.charge[k])
        plain, c = base64(z, r, charge=q), corr(z, r, charge=q)
        assert abs(c.energy - plain.energy - formula(plain, z, terms, q)) < 1e-9
        np.testing.assert_allclose(c.charges, plain.charges, atol=1e-12)     # charges are not changed
    # with_precision keeps the terms
    assert base64.with_charge_terms(terms).with_precision("float32").charge_terms == terms


def test_corrected_forces_match_finite_differences_and_jaxmd(base64, states, x64):
    corr = base64.with_charge_terms(random_terms(1))
    k = int(np.flatnonzero((np.asarray([len(z) for z in states.numbers]) == 4) & (states.charge == 1))[0])
    z, r, q = states.numbers[k], states.positions[k], int(states.charge[k])
    res = corr(z, r, charge=q)
    h = 1e-4
    for atom, axis in [(0, 0), (1, 2), (3, 1)]:
        rp, rm = r.copy(), r.copy()
        rp[atom, axis] += h
        rm[atom, axis] -= h
        fd = -(corr(z, rp, charge=q).energy - corr(z, rm, charge=q).energy) / (2 * h)
        assert abs(fd - res.forces[atom, axis]) < 1e-6
    # the jax-md energy function (MD, minimisers) carries the same correction
    disp, _ = space.free()
    efn = phai.md.aimnet2_energy(corr, disp, z, charge=q)
    assert abs(float(efn(jnp.asarray(r))) - res.energy) < 1e-8
    assert abs(float(phai.md.aimnet2_energy(base64, disp, z, charge=q)(jnp.asarray(r)))
               - base64(z, r, charge=q).energy) < 1e-8


def test_missing_tables_and_malformed_terms_are_clear_errors(base64, states):
    only_neutral = [t for t in random_terms() if t["charge"] == 0]
    corr = base64.with_charge_terms(only_neutral)
    z, r = states.numbers[0], states.positions[0]
    with pytest.raises(InputError, match=r"covers charge 0 with even electrons, charge 0 with odd electrons; "
                                         r"not charge \+1 with an odd electron count"):
        corr(z, r, charge=1)
    with pytest.raises(ModelFileError, match="malformed"):
        base64.with_charge_terms([{"charge": 0}])
    with pytest.raises(ModelFileError, match="one a and b per element"):
        base64.with_charge_terms([{"charge": 0, "electrons": "even", "elements": [1, 6], "a": [0.1], "b": [0, 0]}])
    with pytest.raises(ModelFileError, match="lacks"):
        base64.with_charge_terms([{"charge": 0, "electrons": "even", "elements": [92], "a": [0.1], "b": [0.1]}])


def test_fit_recovers_a_known_correction(base64, x64):
    """Residuals built from known terms, self energies and per-kind offsets on the real base
    charges of 40 labelled molecules: what the fitted tables leave is exactly a sum of self
    energies plus the neutral radicals' offset (what the Δ model's own self energies fit). The
    charged kinds' offsets are in the tables (folded into ``a``: the charges sum to ``Q``). ``a``
    itself is defined only up to one shift per kind, so the test compares energies."""
    cs = me.read_charge_h5(DATA)
    mols = sorted(set(cs.molecule))[::6][:40]
    cs = cs.subset(np.flatnonzero(np.isin(cs.molecule, mols)))
    q, q2 = me.base_state_charges(cs, base64)
    truth = random_terms(2)
    table = {(t["charge"], t["electrons"]): t for t in truth}
    elements = [1, 6, 7, 8]

    def term(terms_by_kind, k):
        t = terms_by_kind[me.state_kind(cs.numbers[k], cs.charge[k])]
        a, b = dict(zip(t["elements"], t["a"])), dict(zip(t["elements"], t["b"]))
        return sum(a[int(z)] * x + b[int(z)] * y for z, x, y in zip(cs.numbers[k], q[k], q2[k]))

    counts = np.asarray([[np.sum(z == e) for e in elements] for z in cs.numbers], float)
    kinds = [me.state_kind(z, c) for z, c in zip(cs.numbers, cs.charge)]
    onehot = np.asarray([[kd == kk for kk in KINDS] for kd in kinds], float)
    offsets = np.array([-4.0, -2.5, 0.0, 0.8, 9.0, 10.5])       # per KINDS; none for closed-shell neutrals
    y = counts @ np.array([-0.3, 1.1, 0.7, -0.9]) + onehot @ offsets \
        + np.array([term(table, k) for k in range(len(cs))])
    resid = cs.subset(np.arange(len(cs)))
    resid.energy = y
    fitted = me.fit_base_charge_terms([resid], [(q, q2)], elements, ridge=1e-10)
    got = {(t["charge"], t["electrons"]): t for t in fitted}
    assert set(got) == set(kinds)
    rest = y - np.array([term(got, k) for k in range(len(cs))])
    A = np.concatenate([counts, onehot[:, [KINDS.index((0, "odd"))]]], axis=1)
    coef = np.linalg.lstsq(A, rest, rcond=None)[0]
    assert np.sqrt(np.mean((A @ coef - rest) ** 2)) < 1e-3      # the ridge's bias: ~5e-5 eV
    # and the fit is not vacuous: without the terms the remainder is far from that
    coef0 = np.linalg.lstsq(A, y, rcond=None)[0]
    assert np.sqrt(np.mean((A @ coef0 - y) ** 2)) > 1.0


def test_cli_run_records_terms_and_load_rebuilds_the_corrected_base(states, tmp_path, capsys, x64):
    data = tmp_path / "states.extxyz"
    me.write_charge_extxyz(data, states)
    common = ["train-aimnet", "--data", str(data), "--epochs", "2", "--batch-size", "9", "--size", "tiny",
              "--valid-fraction", "0", "--force-weight", "0", "--spin-shifts"]
    assert main(common + ["--out", str(tmp_path / "x"), "--base-charge-terms"]) == 2
    assert "give --base too" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "x"), "--base", BASE, "--base-diffuse-term"]) == 2
    assert "give --base-charge-terms too" in capsys.readouterr().err
    out = tmp_path / "ct"
    assert main(common + ["--out", str(out), "--members", "2", "--base", BASE, "--base-charge-terms"]) == 0
    record = json.loads((out / "config.json").read_text())["delta"]
    terms = record["charge_terms"]
    assert {(t["charge"], t["electrons"]) for t in terms} == {me.state_kind(z, c)
                                                                for z, c in zip(states.numbers, states.charge)}
    # both members fitted the same terms (all given states, whatever the seed), so one base serves both
    for k in range(2):
        assert json.loads((out / f"member{k}" / "config.json").read_text())["delta"] == record
    ens = phai.load(str(out), precision="float64")
    assert ens.base.charge_terms == terms
    corrected = phai.load(BASE, precision="float64").with_charge_terms(terms)
    parts = [AIMNetMEPotential.from_folder(out / f"member{k}", "float64", base=False) for k in range(2)]
    seen = me.read_charge_extxyz(data)
    for k in (0, 5):
        z, r, q, m = seen.numbers[k], seen.positions[k], int(seen.charge[k]), int(seen.multiplicity[k])
        res = ens(z, r, charge=q, multiplicity=m)
        want = corrected(z, r, charge=q).energy + np.mean([p(z, r, charge=q, multiplicity=m).energy for p in parts])
        assert abs(res.energy - want) < 1e-9
    # the network's targets are the labels minus the corrected base, which is the plain base
    # plus the formula in its charges
    cfg = me.MEConfig(model={"elements": [1, 6, 8], "nfeature": 4, "npass": 1}, elements=(1, 6, 8), epochs=1,
                      valid_fraction=0.0, force_weight=0.0, base=BASE, base_charge_terms=True)
    trainer = me.AIMNetMETrainer(cfg, seen, None, None)
    assert trainer.base_record["charge_terms"] == terms
    e_corr, _ = me.base_state_predictions(seen, corrected)
    np.testing.assert_allclose(trainer.train_set.energy, seen.energy - e_corr, atol=1e-9)
    base = phai.load(BASE, precision="float64")
    e_plain, _ = me.base_state_predictions(seen, base)
    for k in range(len(seen)):
        assert abs(e_corr[k] - e_plain[k] - formula(base(seen.numbers[k], seen.positions[k], charge=int(seen.charge[k])),
                                                     seen.numbers[k], terms, int(seen.charge[k]))) < 1e-8


def with_diffuse(terms, d=0.7, kind=(-1, "odd")):
    """``terms`` with a diffuse-basis term of coefficient ``d`` in the table of ``kind``."""
    from phai.physics.diffuse import diffuse_exponents

    out = [dict(t) for t in terms]
    for t in out:
        if (t["charge"], t["electrons"]) == kind:
            t["diffuse"], t["diffuse_alpha"] = d, diffuse_exponents(t["elements"]).tolist()
    return out


def test_diffuse_term_adds_d_times_the_orbital_energy_with_exact_forces(base64, states, x64):
    from phai.physics.diffuse import diffuse_exponents, diffuse_orbital_energy

    terms = random_terms(3)
    plain_terms, diff = base64.with_charge_terms(terms), base64.with_charge_terms(with_diffuse(terms))
    for k in range(len(states)):
        z, r, q = states.numbers[k], states.positions[k], int(states.charge[k])
        gap = diff(z, r, charge=q).energy - plain_terms(z, r, charge=q).energy
        want = 0.7 * float(diffuse_orbital_energy(r, diffuse_exponents(z))) \
            if me.state_kind(z, q) == (-1, "odd") else 0.0     # only the closed-shell molecules' anions
        assert abs(gap - want) < 1e-9
        assert want == 0.0 or want > 0.5
    k = int(np.flatnonzero((states.molecule == "formaldehyde") & (states.charge == -1))[0])
    z, r = states.numbers[k], states.positions[k]
    res = diff(z, r, charge=-1)
    h = 1e-4
    for atom, axis in [(0, 0), (1, 2), (2, 1)]:
        rp, rm = r.copy(), r.copy()
        rp[atom, axis] += h
        rm[atom, axis] -= h
        fd = -(diff(z, rp, charge=-1).energy - diff(z, rm, charge=-1).energy) / (2 * h)
        assert abs(fd - res.forces[atom, axis]) < 1e-6
    for fast in (True, False):    # the jax-md paths: the scatter-free one and the plain (Hessian) one
        efn = phai.md.aimnet2_energy(diff, space.free()[0], z, charge=-1, fast=fast)
        assert abs(float(efn(jnp.asarray(r))) - res.energy) < 1e-8
    bad = with_diffuse(terms)
    next(t for t in bad if "diffuse" in t)["diffuse_alpha"] = [0.1]
    with pytest.raises(ModelFileError, match="one exponent >= 0 per element"):
        base64.with_charge_terms(bad)


def test_fit_recovers_a_known_diffuse_coefficient(base64, x64):
    """A residual with a known diffuse-basis coefficient on the closed-shell molecules' anions
    (and known charge terms): the fit returns that coefficient, in that kind's table only."""
    from phai.physics.diffuse import (
        DIFFUSE_S_631PLUS,
        diffuse_exponents,
        diffuse_orbital_energy,
    )

    cs = me.read_charge_h5(DATA)
    mols = sorted(set(cs.molecule))[::6][:40]
    cs = cs.subset(np.flatnonzero(np.isin(cs.molecule, mols)))
    q, q2 = me.base_state_charges(cs, base64)
    elements = [1, 6, 7, 8]
    truth = {(t["charge"], t["electrons"]): t for t in random_terms(4)}
    y = []
    for k in range(len(cs)):
        z, kind = cs.numbers[k], me.state_kind(cs.numbers[k], cs.charge[k])
        t = truth[kind]
        a, b = dict(zip(t["elements"], t["a"])), dict(zip(t["elements"], t["b"]))
        e = sum(a[int(zi)] * x + b[int(zi)] * x2 for zi, x, x2 in zip(z, q[k], q2[k])) + 0.1 * len(z)
        if kind == (-1, "odd"):
            e += 0.45 * float(diffuse_orbital_energy(np.asarray(cs.positions[k]), diffuse_exponents(z)))
        y.append(e)
    resid = cs.subset(np.arange(len(cs)))
    resid.energy = np.asarray(y)
    fitted = me.fit_base_charge_terms([resid], [(q, q2)], elements, ridge=1e-10, diffuse=DIFFUSE_S_631PLUS)
    with_d = [t for t in fitted if "diffuse" in t]
    assert [(t["charge"], t["electrons"]) for t in with_d] == [(-1, "odd")]
    assert abs(with_d[0]["diffuse"] - 0.45) < 1e-3
    assert with_d[0]["diffuse_alpha"] == diffuse_exponents(elements).tolist()
    plain = me.fit_base_charge_terms([resid], [(q, q2)], elements, ridge=1e-10)
    assert all("diffuse" not in t for t in plain)
    with pytest.raises(InputError, match="set base_charge_terms too"):
        me.AIMNetMETrainer(me.MEConfig(base=BASE, base_diffuse_term=True), cs, None, None)


def test_base_cache_keeps_the_plain_base_and_the_newest_term_tables(base64, states, tmp_path, monkeypatch, x64):
    # every fold of every run fits its own tables: the cache keeps only the newest few of them
    # (and always the plain base), and what it keeps is read back, not recomputed
    monkeypatch.setattr(me, "BASE_CACHE_TERM_TABLES", 2)
    two = states.subset(np.arange(2))
    cache = tmp_path / "base.npz"
    plain, _ = me.base_state_predictions(two, base64, cache)
    termed = [base64.with_charge_terms(random_terms(seed)) for seed in (1, 2, 3)]
    want = [me.base_state_predictions(two, t, cache)[0] for t in termed]

    def term_tags():
        with np.load(cache) as f:
            tags = {k.split("-")[1] for k in f.files if k != me._TERM_ORDER}
            return sorted(t for t in tags if t.startswith("t")), sum(t.startswith("p") for t in tags), \
                [str(t) for t in f[me._TERM_ORDER]]

    kept, n_plain, order = term_tags()
    assert len(kept) == 2 and n_plain == 1 and sorted(order) == kept
    assert not np.allclose(want[0], want[2])
    # the kept tables and the plain base are read back: tampering shows through
    with np.load(cache) as f:
        tampered = {k: (f[k] + 1.0 if k.endswith("/e") else f[k]) for k in f.files}
    np.savez(cache, **tampered)
    np.testing.assert_allclose(me.base_state_predictions(two, base64, cache)[0], plain + 1.0, atol=1e-12)
    np.testing.assert_allclose(me.base_state_predictions(two, termed[2], cache)[0], want[2] + 1.0, atol=1e-12)
    # the oldest table was dropped: recomputed (untampered), which drops the next oldest
    np.testing.assert_allclose(me.base_state_predictions(two, termed[0], cache)[0], want[0], atol=1e-9)
    kept_after, n_plain, order_after = term_tags()      # oldest first: [t1, t2] -> [t2, t0]
    assert n_plain == 1 and sorted(order_after) == kept_after
    assert order_after[0] == order[1] and order_after[1] not in kept


def test_base_cache_is_read_once_while_the_file_is_unchanged(base64, states, tmp_path, monkeypatch, x64):
    # a Δ run asks the cache for every set and again for the charges: the file is parsed once,
    # and parsed again only when another process (here: a rewrite) has changed it
    two = states.subset(np.arange(2))
    cache = tmp_path / "base.npz"
    first, _ = me.base_state_predictions(two, base64, cache)
    loads = []
    real_load = np.load
    monkeypatch.setattr(me.np, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    for _ in range(3):
        np.testing.assert_array_equal(me.base_state_predictions(two, base64, cache)[0], first)
        me.base_state_charges(two, base64, cache)
    assert loads == []
    with real_load(cache) as f:
        changed = {k: (f[k] + 2.0 if k.endswith("/e") else f[k]) for k in f.files}
    np.savez(cache, **changed)
    np.testing.assert_allclose(me.base_state_predictions(two, base64, cache)[0], first + 2.0, atol=1e-12)
    assert len(loads) == 1


def test_diffuse_term_takes_the_labels_basis(states, tmp_path, capsys, x64):
    # labels in another diffuse basis get that basis' exponents in the fitted table; a basis
    # without diffuse functions is refused before any training
    from phai.physics.diffuse import diffuse_s_table

    pytest.importorskip("pyscf")
    cfg = me.MEConfig(base=BASE, base_charge_terms=True, base_diffuse_term="aug-cc-pVDZ", epochs=1,
                      valid_fraction=0, model={"elements": [1, 6, 7, 8], **SIZES["tiny"]})
    t = me.AIMNetMETrainer(cfg, states, None, None)
    table = [x for x in t.base_record["charge_terms"] if "diffuse" in x]
    assert [(x["charge"], x["electrons"]) for x in table] == [(-1, "odd")]
    aug = diffuse_s_table("aug-cc-pVDZ")
    assert table[0]["diffuse_alpha"] == [aug[z] for z in (1, 6, 7, 8)]
    assert aug[1] == pytest.approx(0.02974)        # aug-cc-pVDZ puts one on hydrogen too

    data = tmp_path / "states.extxyz"
    me.write_charge_extxyz(data, states)
    assert main(["train-aimnet", "--data", str(data), "--out", str(tmp_path / "x"), "--base", BASE,
                 "--base-charge-terms", "--base-diffuse-term", "cc-pVDZ"]) == 2
    assert "'cc-pVDZ' has no diffuse functions" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_diffuse_term_basis_defaults_to_the_labels_and_must_agree(tmp_path):
    # the flag alone takes the basis an HDF5 export records in its 'level' ("uwb97x/6-31+g*/df");
    # a named basis whose diffuse functions differ from the recorded one is refused
    import h5py

    from phai.commands.train_aimnet import diffuse_setting, labels_basis

    pytest.importorskip("pyscf")
    assert labels_basis(DATA) == "6-31+g*"
    assert diffuse_setting(None, DATA) is False
    assert diffuse_setting("", DATA) is True and diffuse_setting("6-31+G(d)", DATA) is True
    with pytest.raises(InputError, match="are at 6-31\\+g\\*"):
        diffuse_setting("aug-cc-pVDZ", DATA)
    other = tmp_path / "aug.h5"
    with h5py.File(other, "w") as f:
        f.attrs["level"] = "uwb97x/aug-cc-pvdz"
    assert diffuse_setting("", other) == "aug-cc-pvdz"
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.attrs["level"] = "uwb97x/6-31g*"
    with pytest.raises(InputError, match="no diffuse functions"):
        diffuse_setting("", plain)
    assert diffuse_setting("", tmp_path / "states.extxyz") is True      # nothing recorded: 6-31+G(d)
