"""PySCFUKSLabeller (unrestricted DFT with meta-Löwdin α/β populations) against PySCF itself.

Small basis sets keep this file at a few seconds; the data set's level (ωB97X/6-31+G(d),
density-fitted) runs the same code path.
"""

import json
from pathlib import Path

import numpy as np
import pytest

pyscf = pytest.importorskip("pyscf")

from phai.errors import InputError
from phai.labels import (
    Conformer,
    PySCFLabeller,
    PySCFUKSLabeller,
    label_many,
    labeller_from_level,
)
from phai.labels.store import load_records
from phai.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV

WATER_Z = np.array([8, 1, 1])
WATER_X = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]])


def _direct_uks(z, x, charge, mult, basis, xc="wb97x"):
    from pyscf import dft, gto

    mol = gto.M(atom=[(int(a), tuple(p)) for a, p in zip(z, x)], unit="Angstrom", basis=basis, charge=charge,
                spin=mult - 1, cart=basis.startswith("6-3"), verbose=0)
    mf = dft.UKS(mol)
    mf.xc = xc
    mf.conv_tol = 1e-10
    e = mf.kernel()
    g = mf.nuc_grad_method().kernel()
    return mol, mf, e, g


def test_cation_energy_forces_populations_match_direct_pyscf():
    from pyscf.scf import uhf

    charge, mult = 1, 2
    out = PySCFUKSLabeller(basis="6-31+g*").label(WATER_Z, WATER_X, charge, mult)
    mol, mf, e, g = _direct_uks(WATER_Z, WATER_X, charge, mult, "6-31+g*")
    assert out["energy"] == pytest.approx(e * HARTREE_TO_EV, abs=1e-6)
    np.testing.assert_allclose(out["forces"], -g * HARTREE_TO_EV / BOHR_TO_ANGSTROM, atol=1e-5)
    # net force: not exactly zero because PySCF omits the grid-weight derivatives by default
    assert np.abs(out["forces"].sum(0)).max() < 5e-3
    # populations: PySCF's own meta-Löwdin analysis is the oracle
    (pop_a_ao, pop_b_ao), chg = uhf.mulliken_meta(mol, mf.make_rdm1(), verbose=0)
    atom_of_ao = np.array([int(s.split()[0]) for s in mol.ao_labels()])
    np.testing.assert_allclose(out["pop_alpha"], np.bincount(atom_of_ao, pop_a_ao), atol=1e-6)
    np.testing.assert_allclose(out["pop_beta"], np.bincount(atom_of_ao, pop_b_ao), atol=1e-6)
    np.testing.assert_allclose(out["charges"], chg, atol=1e-6)
    n_alpha, n_beta = mol.nelec
    assert out["pop_alpha"].sum() == pytest.approx(n_alpha, abs=1e-6)
    assert out["pop_beta"].sum() == pytest.approx(n_beta, abs=1e-6)
    assert out["charges"].sum() == pytest.approx(charge, abs=1e-6)
    assert out["spin"].sum() == pytest.approx(mult - 1, abs=1e-6)
    # AIMNet-NSE's total spin charges Q_a = (Q - M + 1)/2, Q_b = (Q + M - 1)/2
    assert out["q_alpha"].sum() == pytest.approx((charge - mult + 1) / 2, abs=1e-6)
    assert out["q_beta"].sum() == pytest.approx((charge + mult - 1) / 2, abs=1e-6)
    np.testing.assert_allclose(out["q_alpha"] + out["q_beta"], out["charges"], atol=1e-12)
    # the hole of H2O+ sits on oxygen (its HOMO is the out-of-plane lone pair)
    assert out["spin"][0] > 0.9


def test_anion_matches_direct_pyscf_and_density_fit_is_close():
    charge, mult = -1, 2
    exact = PySCFUKSLabeller(basis="6-31+g*").label(WATER_Z, WATER_X, charge, mult)
    _, _, e, g = _direct_uks(WATER_Z, WATER_X, charge, mult, "6-31+g*")
    assert exact["energy"] == pytest.approx(e * HARTREE_TO_EV, abs=1e-6)
    np.testing.assert_allclose(exact["forces"], -g * HARTREE_TO_EV / BOHR_TO_ANGSTROM, atol=1e-5)
    assert exact["charges"].sum() == pytest.approx(-1, abs=1e-6)
    assert exact["pop_alpha"].sum() == pytest.approx(6, abs=1e-6)
    assert exact["pop_beta"].sum() == pytest.approx(5, abs=1e-6)
    lab = PySCFUKSLabeller(basis="6-31+g*", density_fit=True)
    fitted = lab.label(WATER_Z, WATER_X, charge, mult)
    assert lab.level == "uwb97x/6-31+g*/df"
    assert fitted["energy"] == pytest.approx(exact["energy"], abs=2e-3)  # eV
    np.testing.assert_allclose(fitted["forces"], exact["forces"], atol=5e-3)
    np.testing.assert_allclose(fitted["charges"], exact["charges"], atol=1e-3)


def test_closed_shell_uks_equals_rks_and_has_no_spin():
    uks = PySCFUKSLabeller(basis="6-31g*").label(WATER_Z, WATER_X, 0, 1)
    rks = PySCFLabeller(basis="6-31g*").label(WATER_Z, WATER_X, 0, 1)
    assert uks["energy"] == pytest.approx(rks["energy"], abs=1e-7)
    np.testing.assert_allclose(uks["forces"], rks["forces"], atol=1e-5)
    np.testing.assert_allclose(uks["spin"], 0.0, atol=1e-5)  # SCF converged to 1e-10 Ha: density to ~1e-5
    np.testing.assert_allclose(uks["q_alpha"], uks["q_beta"], atol=1e-5)


@pytest.mark.parametrize("charge,mult", [(0, 2), (1, 1), (-1, 3), (0, 0), (0, 1.5), (11, 1)])
def test_bad_charge_or_multiplicity_is_a_clear_error(charge, mult):
    lab = PySCFUKSLabeller(basis="sto-3g")
    with pytest.raises(InputError, match="multiplicity|electrons"):
        lab.label(WATER_Z, WATER_X, charge, mult)
    with pytest.raises(InputError, match="multiplicity|electrons"):
        lab.energy(WATER_Z, WATER_X, charge, mult)


def test_energy_alone_equals_the_labels_energy():
    """``energy`` (no gradient, no populations) is the same SCF as ``label``, for a UKS doublet
    cation and a density-fitted anion, and checks the geometry as ``label`` does."""
    for kw, (q, m) in (({"method": "pbe0", "basis": "6-31g"}, (1, 2)),
                       ({"method": "hf", "basis": "6-31+g*", "density_fit": True}, (-1, 2))):
        lab = PySCFUKSLabeller(**kw)
        assert lab.energy(WATER_Z, WATER_X, q, m) == pytest.approx(lab.label(WATER_Z, WATER_X, q, m)["energy"],
                                                                   abs=1e-7)
    with pytest.raises(InputError, match="NaN"):
        lab.energy(WATER_Z, np.full((3, 3), np.nan))


def test_level_parsing_and_store_roundtrip(tmp_path):
    lab = labeller_from_level("uhf/sto-3g")
    assert isinstance(lab, PySCFUKSLabeller) and lab.method == "hf" and lab.level == "uhf/sto-3g"
    assert type(labeller_from_level("wb97x/6-31g*")) is PySCFLabeller
    confs = [Conformer("water", WATER_Z, WATER_X, q, m, {"state": s}) for q, m, s in ((-1, 2, "anion"), (0, 1, "n"))]
    stats = label_many(lab, confs, tmp_path)
    assert stats["computed"] == 2 and stats["failed"] == 0
    recs = {r["charge"]: r for r in load_records(tmp_path)}
    direct = lab.label(WATER_Z, WATER_X, -1, 2)
    assert recs[-1]["energy"] == pytest.approx(direct["energy"], abs=1e-7)
    np.testing.assert_allclose(recs[-1]["extras"]["spin"], direct["spin"], atol=1e-7)
    assert sum(recs[-1]["extras"]["charges"]) == pytest.approx(-1, abs=1e-6)
    json.dumps(recs[-1])  # plain JSON
    assert label_many(lab, confs, tmp_path)["reused"] == 2


DATA = Path(__file__).parent / "data" / "charge_labels" / "charge_labels.h5"
RECIPE_SCRIPT = Path(__file__).parents[1] / "scripts" / "make_charge_dataset.py"
ION_MULTIPLICITY = {("methoxy", 1): 3}   # CH3O+ is a triplet (RECIPE.md)


def _recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_charge_dataset", RECIPE_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipe_molecules_are_valid_and_the_file_holds_them():
    pytest.importorskip("rdkit")
    h5py = pytest.importorskip("h5py")
    recipe = _recipe()
    recipe.check_molecules()                       # CHNO, radicals = multiplicity - 1, no duplicates
    assert recipe.ION_MULTIPLICITY == ION_MULTIPLICITY
    with pytest.raises(ValueError, match="methyl2: the same molecule as methyl"):
        recipe.check_molecules(recipe.MOLECULES + (("methyl2", "[CH3]", 2, "train"),))
    with pytest.raises(ValueError, match="1 radical electrons .* but multiplicity 1"):
        recipe.check_molecules((("methyl", "[CH3]", 1, "train"),))
    with pytest.raises(ValueError, match="outside H, C, N, O"):
        recipe.check_molecules((("chloromethane", "CCl", 1, "train"),))
    spec = {name: (smiles, mult, split) for name, smiles, mult, split in recipe.MOLECULES}
    with h5py.File(DATA) as f:
        assert set(f) <= set(spec)
        for name in f:
            smiles, mult, split = spec[name]
            assert (f[name].attrs["smiles"], int(f[name].attrs["neutral_multiplicity"]), f[name].attrs["split"]) == (
                smiles, mult, split)


@pytest.mark.filterwarnings("ignore:.*without finite.*:UserWarning")  # NaN = state not computed
def test_committed_charge_set_layout_and_sum_rules():
    h5py = pytest.importorskip("h5py")
    from phai.data import read_ani_h5

    states = {"anion": -1, "neutral": 0, "cation": 1}
    triples, geometries = 0, {}
    with h5py.File(DATA) as f:
        assert f.attrs["level"] == "uwb97x/6-31+g*/df"
        for name in f:
            mol = f[name]
            assert set(mol) == set(states)
            x0 = mol["neutral/coordinates"][()]
            finite = []
            for state, q in states.items():
                g = mol[state]
                z = g["atomic_numbers"][()].astype(int)
                mult = int(g.attrs["multiplicity"])
                assert int(g.attrs["charge"]) == q
                # the lowest multiplicity of each state: by electron parity, except the ions whose
                # ground state the labels showed to be higher (the recipe's ION_MULTIPLICITY)
                assert mult == ION_MULTIPLICITY.get((name, q), 1 if (z.sum() - q) % 2 == 0 else 2)
                np.testing.assert_array_equal(g["coordinates"][()], x0)  # vertical: same geometries
                ok = np.isfinite(g["wb97x_pd.energy"][()])
                finite.append(ok)
                if not ok.any():
                    continue
                pa, pb = g["wb97x_pd.pop_alpha"][()][ok], g["wb97x_pd.pop_beta"][()][ok]
                np.testing.assert_allclose(pa.sum(1), (z.sum() - q + mult - 1) / 2, atol=1e-6)
                np.testing.assert_allclose(pb.sum(1), (z.sum() - q - mult + 1) / 2, atol=1e-6)
                np.testing.assert_allclose(g["wb97x_pd.charges"][()][ok].sum(1), q, atol=1e-6)
                np.testing.assert_allclose(g["wb97x_pd.q_alpha"][()][ok].sum(1), (q - mult + 1) / 2, atol=1e-6)
                np.testing.assert_allclose(g["wb97x_pd.spin"][()][ok].sum(1), mult - 1, atol=1e-6)
                assert np.isfinite(g["wb97x_pd.forces"][()][ok]).all()
            both = finite[0] & finite[1] & finite[2]
            triples += int(both.sum())
            geometries[len(x0)] = geometries.get(len(x0), 0) + 1
            e = {s: mol[s]["wb97x_pd.energy"][()][both] for s in states}
            assert np.all(e["cation"] > e["neutral"])  # a positive vertical IP for every geometry
    # ragged: the first build's 33 molecules have 4 geometries, the later builds' 221 one each
    assert geometries == {4: 33, 1: 221}
    assert triples == 353  # all complete: 33 x 4 + 221 x 1
    c = read_ani_h5(DATA, "wb97x_pd.energy", "wb97x_pd.forces", properties=("charge", "wb97x_pd.charges"))
    assert len(c) >= 3 * triples


def test_committed_label_is_reproduced():
    """Recompute one stored label (water cation) with the labeller at the set's level."""
    h5py = pytest.importorskip("h5py")

    with h5py.File(DATA) as f:
        g = f["water/cation"]
        c = int(np.flatnonzero(np.isfinite(g["wb97x_pd.energy"][()]))[0])
        z, x = g["atomic_numbers"][()].astype(int), g["coordinates"][c]
        e, frc, q = g["wb97x_pd.energy"][c], g["wb97x_pd.forces"][c], g["wb97x_pd.charges"][c]
        assert g["wb97x_pd.energy"].attrs["units"] == "Hartree"
    out = PySCFUKSLabeller(basis="6-31+g*", density_fit=True, conv_tol=1e-9).label(z, x, 1, 2)
    assert out["energy"] == pytest.approx(e * HARTREE_TO_EV, abs=1e-5)
    np.testing.assert_allclose(out["forces"], frc * HARTREE_TO_EV, atol=1e-4)
    np.testing.assert_allclose(out["charges"], q, atol=1e-5)
