"""A Δ AIMNet-ME network that reads its base's atomic charges (``--base-charge-inputs``).

The network gets AIMNet2's ensemble-mean charges of the same state as a per-atom input
(``AIMNetConfig.atom_inputs = 1``). The energy is ``E_base(R) + E_net(R, q_base(R))``, so the
forces need the term through the charges, ``-(dE_net/dq_base) . dq_base/dR``
(:meth:`phai.models.aimnet2.AIMNet2.charges_vjp`). The oracles: central finite differences of
the charges and of the total energy (float64), and the parts evaluated separately. The labels are
real: three molecules of the committed charge/spin set, one geometry each, all charge states.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import phai
from phai.cli import main
from phai.errors import InputError
from phai.models.aimnet import AIMNet, AIMNetConfig
from phai.models.aimnet_me import AIMNetMEEnsemble, AIMNetMEPotential
from phai.physics.cdft import cdft
from phai.train import aimnet_me as me

DATA = Path(__file__).parent / "data" / "charge_labels" / "charge_labels.h5"
BASE = "aimnet2-b973c"


@pytest.fixture(scope="module")
def run(states, tmp_path_factory):
    """A 2-member Δ ensemble on AIMNet2-B97-3c with the base's charges as inputs (2 epochs, tiny)."""
    tmp = tmp_path_factory.mktemp("qin")
    data = tmp / "states.extxyz"
    me.write_charge_extxyz(data, states)
    assert main(["train-aimnet", "--data", str(data), "--epochs", "2", "--batch-size", "9", "--size", "tiny",
                 "--valid-fraction", "0", "--force-weight", "0", "--spin-shifts", "--members", "2",
                 "--base", BASE, "--base-charge-inputs", "--out", str(tmp / "delta")]) == 0
    return tmp / "delta"


def gradient_by_central_differences(f, r, h: float = 1e-4) -> np.ndarray:
    """``df/dr [A, 3]`` of a scalar function of positions (Å), central differences of step ``h``."""
    g = np.zeros_like(r)
    for i in range(r.shape[0]):
        for a in range(3):
            rp, rm = r.copy(), r.copy()
            rp[i, a] += h
            rm[i, a] -= h
            g[i, a] = (f(rp) - f(rm)) / (2 * h)
    return g


def test_charges_vjp_matches_finite_differences(base64, states, x64):
    k = int(np.flatnonzero((states.molecule == "formaldehyde") & (states.charge == -1))[0])
    z, r, q = states.numbers[k], states.positions[k], int(states.charge[k])
    c = np.random.default_rng(0).normal(size=len(z))
    g = base64.charges_vjp(z, r, q, c)
    assert g.shape == (len(z), 3)
    fd = gradient_by_central_differences(lambda x: c @ base64(z, x, charge=q).charges, r)
    assert np.abs(fd).max() > 1e-2                      # the charges do move with the geometry
    np.testing.assert_allclose(g, fd, atol=1e-7)
    with pytest.raises(InputError, match="cotangent has 3 entries for 4 atoms"):
        base64.charges_vjp(z, r, q, c[:3])


def test_energy_is_base_plus_members_on_the_base_charges(run, states, base64, x64):
    ens = phai.load(str(run), precision="float64")
    assert isinstance(ens, AIMNetMEEnsemble) and ens.record["atom_inputs"] == "base_charges"
    assert all(p.cfg.atom_inputs == 1 for p in ens.members_list)
    for k in (0, 4, 8):
        z, r, q, m = states.numbers[k], states.positions[k], int(states.charge[k]), int(states.multiplicity[k])
        b = base64(z, r, charge=q)
        parts = [p.network_with_inputs(z, r, q, m, b.charges[:, None]) for p in ens.members_list]
        res = ens(z, r, charge=q, multiplicity=m)
        assert abs(res.energy - (b.energy + np.mean([x.energy for x, _ in parts]))) < 1e-9
        np.testing.assert_allclose(res.charges, np.mean([x.charges for x, _ in parts], axis=0), atol=1e-12)
        assert abs(res.charges.sum() - q) < 1e-9
        # the inputs matter: other charges give another energy
        other = ens.members_list[0].network(z, r, q, m, np.zeros((len(z), 1)))
        assert abs(other.energy - parts[0][0].energy) > 1e-6


def test_forces_are_the_gradient_of_the_total_energy(run, states, base64, x64):
    ens = phai.load(str(run), precision="float64")
    k = int(np.flatnonzero((states.molecule == "methyl") & (states.charge == -1))[0])
    z, r, q, m = states.numbers[k], states.positions[k], int(states.charge[k]), int(states.multiplicity[k])
    res = ens(z, r, charge=q, multiplicity=m)
    fd = -gradient_by_central_differences(lambda x: ens(z, x, charge=q, multiplicity=m).energy, r)
    np.testing.assert_allclose(res.forces, fd, atol=2e-6)
    # the term through the base's charges is not negligible: forces at fixed charges miss it
    b = base64(z, r, charge=q)
    fixed = b.forces + np.mean([p.network_with_inputs(z, r, q, m, b.charges[:, None])[0].forces
                                for p in ens.members_list], axis=0)
    assert np.abs(fixed - fd).max() > 1e-4
    c = cdft(ens, z, r)                                  # the CDFT indices run through the same call
    assert np.isfinite([c.ip, c.ea, c.chi, c.eta, c.omega]).all()


def test_network_without_its_base_is_a_clear_error(run, states, tmp_path):
    z, r = states.numbers[0], states.positions[0]
    alone = AIMNetMEPotential.from_folder(run / "member0", "float64", base=False)
    with pytest.raises(InputError, match="base model's charges"):
        alone(z, r)
    with pytest.raises(InputError, match="its base's charges"):
        alone.network(z, r, 0, 1)
    # a folder whose network takes inputs but whose record does not say what they are
    bad = tmp_path / "bad"
    shutil.copytree(run / "member0", bad)
    cfg = json.loads((bad / "config.json").read_text())
    del cfg["delta"]["atom_inputs"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="does not say they are its base's charges"):
        phai.load(str(bad))


def test_settings_are_checked_and_old_configs_unchanged(states, tmp_path, capsys):
    with pytest.raises(InputError, match="set base too"):
        me.AIMNetMETrainer(me.MEConfig(base_charge_inputs=True, epochs=1), states)
    assert main(["train-aimnet", "--data", str(DATA), "--out", str(tmp_path / "x"), "--base-charge-inputs"]) == 2
    assert "--base-charge-inputs gives the network a base model's charges: give --base too" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # off by default: the saved settings are those of before the option (old checkpoints resume)
    assert "base_charge_inputs" not in me.MEConfig().to_json()
    assert "atom_inputs" not in me.config_to_json(AIMNetConfig())
    assert me.MEConfig(base_charge_inputs=True, base=BASE).aimnet_config().atom_inputs == 1
    # a network that takes inputs refuses to run without them
    cfg = AIMNetConfig(nfeature=4, pair_hidden=(4,), embed_hidden=(8,), update_hidden=(4,), interact_hidden=(4,),
                       aim_size=4, head_hidden=(4,), npass=1, atom_inputs=1)
    R, species, nb, mask = me.pad_structure(states.numbers[0], states.positions[0], cfg, 4)
    with pytest.raises(ValueError, match="atom_inputs of shape"):
        AIMNet(cfg).init(__import__("jax").random.PRNGKey(0), jnp.asarray(R, jnp.float32), jnp.asarray(species),
                         jnp.asarray(nb), jnp.asarray(mask), 0, 1)
