"""The committed ML-EHM data set (src/phai/data/ehm, made by scripts/make_ehm_dataset.py):
the train/test split keeps held-out torsion angles and the held-out molecule out of training
(distorted frames included), distorted frames are their parent geometry plus the recipe's
seeded noise, targets align with EHM's valence orbitals, and one stored label is recomputed
with PySCF at the recipe's level.
"""

from __future__ import annotations

import numpy as np
import pytest

from phai.models import ml_ehm

SCANNED = ("butadiene", "azabutadiene")
HELD_OUT_MOLECULE = "1-azabutadiene"
SEED, SIGMA = 2026, 0.05  # RECIPE.md: noise N(0, 0.05 Å), default_rng([2026, molecule+1, dihedral+1, index+1])


@pytest.fixture(scope="module")
def raw():
    with np.load(ml_ehm.DATASET, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _names(raw):
    return raw["molecule_names"][raw["molecule"]]


def test_split_keeps_held_out_frames_out_of_training(raw):
    names, ang, dist, test = _names(raw), raw["dihedral"], raw["distortion"], raw["test"]
    held_angle = np.isin(names, SCANNED) & ~np.isnan(ang) & (np.nan_to_num(ang) % 20 == 10)
    np.testing.assert_array_equal(test, (names == HELD_OUT_MOLECULE) | held_angle)
    train_keys = {(n, a) for n, a, t in zip(names, ang, test) if not t and n in SCANNED}
    test_keys = {(n, a) for n, a, t in zip(names, ang, test) if t and n in SCANNED}
    assert train_keys.isdisjoint(test_keys)
    assert HELD_OUT_MOLECULE not in set(names[~test])
    # distorted frames on both sides, and distorted frames of held-out angles and of the held-out molecule
    assert (dist[~test] >= 0).any() and (dist[test & held_angle] >= 0).any()
    assert (dist[test & (names == HELD_OUT_MOLECULE)] >= 0).any()
    keys = list(zip(names, np.nan_to_num(ang, nan=-1), dist))
    assert len(set(keys)) == len(keys), "duplicate frames"


def test_distorted_frames_are_parent_plus_seeded_noise(raw):
    names, ang, dist = _names(raw), raw["dihedral"], raw["distortion"]
    mol_index = raw["molecule"].astype(int)
    n_at = raw["n_atoms"].astype(int)
    parents = {(n, a): b for b, (n, a, d) in enumerate(zip(names, np.nan_to_num(ang, nan=-1), dist)) if d < 0}
    checked = 0
    for b in np.nonzero(dist >= 0)[0]:
        a = -1 if np.isnan(ang[b]) else int(ang[b])
        p = parents[(names[b], float(a))]
        rng = np.random.default_rng([SEED, mol_index[b] + 1, a + 1, int(dist[b]) + 1])
        noise = rng.normal(0.0, SIGMA, (n_at[b], 3))
        np.testing.assert_array_equal(raw["numbers"][b], raw["numbers"][p])
        got = raw["positions"][b, :n_at[b]] - raw["positions"][p, :n_at[b]]
        np.testing.assert_allclose(got, noise, atol=2e-6, err_msg=f"frame {b} ({names[b]} {a} {dist[b]})")
        checked += 1
    assert checked == int((dist >= 0).sum()) > 0


def test_targets_align_with_ehm_valence_orbitals(raw):
    data = ml_ehm.load_dataset()  # raises if a DFT valence count differs from EHM's
    homo = np.asarray(data.batch[2].n_electrons) // 2 - 1
    np.testing.assert_array_equal(homo + 1, raw["n_occupied"])
    np.testing.assert_array_equal(data.targets.weight.sum(1), raw["n_occupied"] + 2)
    for b, n in enumerate(raw["n_occupied"]):
        levels = np.concatenate([raw["occupied"][b, :n], raw["virtual"][b]])
        assert np.all(np.diff(levels) >= 0) and levels[n - 1] < levels[n]  # ascending, HOMO < LUMO
        assert np.all(np.isnan(raw["occupied"][b, n:]))


def test_one_label_recomputed_with_pyscf(raw):
    """The smallest distorted frame at B3LYP/6-31G(d) from a fresh SCF (the data set's SCF
    started from a neighbour's density): valence occupied and 4 lowest virtual energies."""
    pytest.importorskip("pyscf")
    from pyscf import dft, gto

    from phai.units import HARTREE_TO_EV

    dist, n_at = raw["distortion"], raw["n_atoms"].astype(int)
    b = min(np.nonzero(dist >= 0)[0], key=lambda k: n_at[k])
    z, x = raw["numbers"][b, :n_at[b]], raw["positions"][b, :n_at[b]]
    mol = gto.M(atom=[(int(a), tuple(p)) for a, p in zip(z, x)], basis="6-31g*", unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc = "b3lyp"
    mf.conv_tol = 1e-9
    mf.kernel()
    assert mf.converged
    eps = np.asarray(mf.mo_energy) * HARTREE_TO_EV
    n_occ, n_core = mol.nelectron // 2, int((z > 2).sum())
    n = int(raw["n_occupied"][b])
    assert n == n_occ - n_core
    # SCF converged to 1e-9 Ha in energy: orbital energies agree to ~1e-5 eV
    np.testing.assert_allclose(eps[n_core:n_occ], raw["occupied"][b, :n], atol=1e-4)
    np.testing.assert_allclose(eps[n_occ:n_occ + 4], raw["virtual"][b], atol=1e-4)
