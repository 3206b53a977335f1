"""AIMNet-ME folders beyond one model: Δ on the pretrained AIMNet2 (``phai train-aimnet --base``)
and ensembles (``--members K``), as ``phai.load`` and ``phai cdft --model DIR`` see them.

The labels are real: three molecules of the committed charge/spin set (UKS ωB97X/6-31+G(d),
tests/data/charge_labels; the ``states`` fixture of conftest.py), one geometry each, all three
charge states. The oracle for the combined models is their own parts evaluated separately: the
pretrained AIMNet2 ensemble (itself checked against the TorchScript files in tests/test_aimnet2.py)
and each member folder loaded without its base, in float64, so the sums must agree to rounding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import phai
from phai.cli import main
from phai.models.aimnet_me import AIMNetMEEnsemble, AIMNetMEPotential
from phai.physics.cdft import cdft
from phai.train import aimnet_me as me

BASE = "aimnet2-b973c"  # the base benchmarks/README.md recommends for CDFT (the other base runs the same code)


@pytest.fixture(scope="module")
def runs(states, tmp_path_factory):
    """Two CLI runs of 2 epochs (tiny network, energies and charges: the force targets' residuals are
    checked below without training on them, which would cost a second-derivative compilation): a
    2-member Δ ensemble on AIMNet2, and a 2-member ensemble from scratch."""
    tmp = tmp_path_factory.mktemp("me_ens")
    data = tmp / "states.extxyz"
    me.write_charge_extxyz(data, states)
    common = ["train-aimnet", "--data", str(data), "--epochs", "2", "--batch-size", "9", "--size", "tiny",
              "--valid-fraction", "0", "--force-weight", "0", "--spin-shifts", "--members", "2"]
    assert main(common + ["--out", str(tmp / "delta"), "--base", BASE]) == 0
    assert main(common + ["--out", str(tmp / "scratch")]) == 0
    return tmp / "delta", tmp / "scratch"


def test_delta_ensemble_is_base_plus_mean_of_members(runs, states, x64):
    delta_dir, _ = runs
    ens = phai.load(str(delta_dir), precision="float64")
    assert isinstance(ens, AIMNetMEEnsemble) and ens.members == 2 and ens.record["base"]["model"] == BASE
    base = phai.load(BASE, precision="float64")
    parts = [AIMNetMEPotential.from_folder(delta_dir / f"member{k}", "float64", base=False) for k in range(2)]
    one = phai.load(str(delta_dir / "member0"), precision="float64")       # a member folder alone: base + Δ0
    for k in (0, 4, 8):
        z, r, q, m = states.numbers[k], states.positions[k], int(states.charge[k]), int(states.multiplicity[k])
        b = base(z, r, charge=q)
        d = [p(z, r, charge=q, multiplicity=m) for p in parts]
        res = ens(z, r, charge=q, multiplicity=m)
        assert abs(res.energy - (b.energy + np.mean([x.energy for x in d]))) < 1e-9
        np.testing.assert_allclose(res.forces, b.forces + np.mean([x.forces for x in d], axis=0), atol=1e-9)
        np.testing.assert_allclose(res.member_energies, b.energy + np.array([x.energy for x in d]), atol=1e-9)
        spread = np.std([x.energy for x in d], ddof=1)
        assert abs(res.energy_std - np.hypot(b.energy_std, spread)) < 1e-9
        # charges are the members' own (trained on the labels' charges); NSE keeps their sum
        np.testing.assert_allclose(res.charges, np.mean([x.charges for x in d], axis=0), atol=1e-12)
        assert abs(res.charges.sum() - q) < 1e-9
        assert abs(one(z, r, charge=q, multiplicity=m).energy - (b.energy + d[0].energy)) < 1e-9


def test_delta_members_learned_the_residuals(runs, states, x64):
    # the targets were E - E_AIMNet2 (float64, cached): the self energies of the residuals are
    # a few eV per atom at most, not the ~1e3 eV per atom of total energies
    delta_dir, scratch_dir = runs
    d = phai.load(str(delta_dir / "member0"), precision="float64")
    s = phai.load(str(scratch_dir / "member0"), precision="float64")
    assert np.max(np.abs(d.sae)) < 10 and np.max(np.abs(s.sae)) > 100
    base = phai.load(BASE, precision="float64")
    # the states exactly as the training runs read them (their extxyz file: positions rounded at
    # ~1e-8 Å, which moves AIMNet2's forces by ~1e-7 eV/Å against the HDF5 positions)
    seen = me.read_charge_extxyz(delta_dir.parent / "states.extxyz")
    e, f = me.base_state_predictions(seen, base)                    # uncached: the reference
    resid = me.subtract_base(seen, base, me.base_cache_path(BASE, me.BASE_PRECISION))
    np.testing.assert_allclose(resid.energy, seen.energy - e, atol=1e-9)
    for k in range(len(seen)):
        np.testing.assert_allclose(resid.forces[k], seen.forces[k] - f[k], atol=1e-9)


def test_scratch_ensemble_is_the_member_mean(runs, states, x64):
    _, scratch_dir = runs
    ens = phai.load(str(scratch_dir), precision="float64")
    assert isinstance(ens, AIMNetMEEnsemble) and ens.base is None
    parts = [phai.load(str(scratch_dir / f"member{k}"), precision="float64") for k in range(2)]
    z, r = states.numbers[1], states.positions[1]
    res = ens(z, r, charge=-1)
    d = [p(z, r, charge=-1) for p in parts]
    assert abs(res.energy - np.mean([x.energy for x in d])) < 1e-9
    assert abs(res.energy_std - np.std([x.energy for x in d], ddof=1)) < 1e-9
    # the CDFT spread is that of each member's own indices
    c, cs = cdft(ens, z, r), [cdft(p, z, r) for p in parts]
    assert abs(c.std.ip - np.std([x.ip for x in cs], ddof=1)) < 1e-9
    assert abs(c.ip - np.mean([x.ip for x in cs])) < 1e-9


def test_cdft_command_on_ensemble_folders(runs, tmp_path, capsys):
    from ase import Atoms

    delta_dir, _ = runs
    path = tmp_path / "w.xyz"
    Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]).write(path)
    # float64: the programs compiled by the tests above (float32 would compile both models again)
    assert main(["cdft", str(path), "--model", str(delta_dir), "--json", "--precision", "float64"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isclose(row["ip"], row["energies"][0] - row["energies"][1])
    assert row["std"]["ip"] >= 0 and set(row["std"]) == {"ip", "ea", "chi", "eta", "omega"}
    assert main(["cdft", str(path), "--model", str(delta_dir), "--precision", "float64"]) == 0
    table = capsys.readouterr().out
    assert "±IP" in table and "±omega" in table      # every index's spread, as in the JSON
    # phai energy on the same folder: the cation's energy of the cdft row
    assert main(["energy", str(path), "--model", str(delta_dir), "--charge", "1", "--json", "--precision",
                 "float64"]) == 0
    e = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(e["energy"] - row["energies"][0]) < 1e-9 and abs(sum(e["charges"]) - 1) < 1e-9


def test_bad_ensemble_folders_are_clear_errors(runs, tmp_path):
    from phai.models.aimnet_me import save_ensemble

    delta_dir, scratch_dir = runs
    cfg = json.loads((scratch_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "members": ["nowhere"]}))
    with pytest.raises(phai.InputError, match="member folder 'nowhere' is missing"):
        phai.load(str(tmp_path))
    # members on different bases (one from scratch, one on AIMNet2) cannot form one ensemble
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(scratch_dir / "member0", mixed / "a")
    shutil.copytree(delta_dir / "member0", mixed / "b")
    with pytest.raises(phai.InputError, match="different bases"):
        save_ensemble(mixed, [mixed / "a", mixed / "b"])
    with pytest.raises(phai.InputError, match="charge-blind"):
        me.load_base("ani-1x")


def test_base_cache_is_keyed_by_code_version(states, tmp_path, monkeypatch, x64):
    # predictions cached by other code (an older phai, uncommitted edits) must not be reused:
    # the key carries a fingerprint of the base's source files, and a rewrite drops stale entries
    base = phai.load(BASE, precision="float64")
    two = states.subset(np.arange(2))
    cache = tmp_path / "base.npz"
    e, _ = me.base_state_predictions(two, base, cache)
    version = me.code_fingerprint(base)
    assert len(version) == 12 and version == me.code_fingerprint(phai.load(BASE, precision="float32"))
    with np.load(cache) as f:
        entries = [k for k in f.files if k != me._TERM_ORDER]
        assert len(entries) == 8 and all(k.startswith(version + "-") for k in entries)   # e, f, q, q2
    # a stored value from this version is read back, not recomputed
    with np.load(cache) as f:
        tampered = {k: (f[k] + 1.0 if k.endswith("/e") else f[k]) for k in f.files}
    np.savez(cache, **tampered)
    assert np.allclose(me.base_state_predictions(two, base, cache)[0], e + 1.0, atol=1e-12)
    # another code version: recomputed, and the stale entries are gone from the file
    monkeypatch.setattr(me, "code_fingerprint", lambda obj: "0123456789ab")
    again, _ = me.base_state_predictions(two, base, cache)
    np.testing.assert_allclose(again, e, atol=1e-9)
    with np.load(cache) as f:
        entries = [k for k in f.files if k != me._TERM_ORDER]
        assert len(entries) == 8 and all(k.startswith("0123456789ab-") for k in entries)
