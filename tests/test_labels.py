"""phai.labels: labellers against direct PySCF/tblite calls, forces against finite
differences, charge/multiplicity errors, a killed labelling run that resumes, the normal-mode
sampler, the CLI and the committed data set (tests/data/chno_labels/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyscf")
pytest.importorskip("tblite")
pytest.importorskip("rdkit")

from phai.errors import InputError
from phai.labels import (
    Conformer,
    LabelFailed,
    PySCFCCSDTLabeller,
    PySCFLabeller,
    TBLiteLabeller,
    check_electrons,
    export_ani_h5,
    label_many,
    labeller_from_level,
    load_records,
    sample_conformers,
)
from phai.labels.conformers import K_B_EV, nms_displace, too_close
from phai.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "tests" / "data" / "chno_labels" / "chno_labels.h5"

# a slightly distorted water (Å): not at a minimum, so forces are not ~0
WATER_Z = np.array([8, 1, 1])
WATER_R = np.array([[0.0, 0.0, 0.117], [0.0, 0.770, -0.470], [0.05, -0.745, -0.465]])
OH_Z = np.array([8, 1])
OH_R = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.99]])


def _atom(z, r):
    return [(int(a), tuple(p)) for a, p in zip(z, r)]


def test_wb97x_labeller_equals_direct_pyscf():
    """Oracle: pyscf.dft.RKS with xc=wb97x, 6-31G* in Cartesian d (Gaussian's 6D)."""
    from pyscf import dft, gto

    lab = PySCFLabeller()  # wb97x/6-31g*
    assert lab.level == "wb97x/6-31g*" and lab.cart
    out = lab.label(WATER_Z, WATER_R)
    mol = gto.M(atom=_atom(WATER_Z, WATER_R), basis="6-31g*", cart=True, unit="Angstrom", verbose=0)
    assert mol.nao == 19  # 6 Cartesian d functions on O: 2s... (spherical would be 18)
    mf = dft.RKS(mol)
    mf.xc = "wb97x"
    mf.conv_tol = 1e-10
    e = mf.kernel()
    g = mf.nuc_grad_method().kernel()
    # same program and settings: agreement to SCF convergence (1e-10 Ha ~ 3e-9 eV, gradient ~1e-6)
    assert out["energy"] == pytest.approx(e * HARTREE_TO_EV, abs=1e-7)
    np.testing.assert_allclose(out["forces"], -g * HARTREE_TO_EV / BOHR_TO_ANGSTROM, atol=2e-5)
    assert out["forces"].shape == (3, 3)
    # the Cartesian/spherical choice matters at the level of labels: > 0.1 mHa for water
    mol5 = gto.M(atom=_atom(WATER_Z, WATER_R), basis="6-31g*", cart=False, unit="Angstrom", verbose=0)
    mf5 = dft.RKS(mol5)
    mf5.xc = "wb97x"
    assert abs(mf5.kernel() - e) > 1e-4


def test_ccsdt_labeller_equals_direct_pyscf():
    from pyscf import cc, gto, scf

    out = PySCFCCSDTLabeller("cc-pvdz").label(WATER_Z, WATER_R)
    mol = gto.M(atom=_atom(WATER_Z, WATER_R), basis="cc-pvdz", unit="Angstrom", verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-10
    ehf = mf.kernel()
    mcc = cc.CCSD(mf, frozen=1)
    ecc = mcc.kernel()[0]
    et = mcc.ccsd_t()
    assert out["forces"] is None
    assert out["hf_energy"] == pytest.approx(ehf * HARTREE_TO_EV, abs=1e-7)
    assert out["energy"] == pytest.approx((ehf + ecc + et) * HARTREE_TO_EV, abs=1e-6)
    assert out["triples_correlation"] == pytest.approx(et * HARTREE_TO_EV, abs=1e-6)
    assert out["triples_correlation"] < 0 < -out["ccsd_correlation"]


def test_tblite_labeller_equals_direct_tblite_and_finite_differences():
    from tblite.interface import Calculator

    lab = TBLiteLabeller()
    out = lab.label(WATER_Z, WATER_R)
    calc = Calculator("GFN2-xTB", WATER_Z, WATER_R / BOHR_TO_ANGSTROM)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    assert out["energy"] == pytest.approx(res.get("energy") * HARTREE_TO_EV, abs=1e-10)
    np.testing.assert_allclose(out["forces"], -res.get("gradient") * HARTREE_TO_EV / BOHR_TO_ANGSTROM,
                               atol=1e-10)
    # forces = -dE/dR by central differences over every coordinate
    h = 1e-4
    fd = np.zeros_like(WATER_R)
    for a in range(3):
        for c in range(3):
            rp, rm = WATER_R.copy(), WATER_R.copy()
            rp[a, c] += h
            rm[a, c] -= h
            fd[a, c] = -(lab.label(WATER_Z, rp)["energy"] - lab.label(WATER_Z, rm)["energy"]) / (2 * h)
    np.testing.assert_allclose(out["forces"], fd, atol=2e-5)  # SCC converged to ~1e-8 eV: FD noise ~1e-5


def test_pyscf_forces_are_minus_the_energy_gradient():
    """HF/6-31G (no grid): analytic forces against a 4-point central difference of the energy."""
    lab = PySCFLabeller("hf", "6-31g")
    out = lab.label(WATER_Z, WATER_R)
    h = 2e-3

    def energy(a, c, d):
        r = WATER_R.copy()
        r[a, c] += d
        return lab.label(WATER_Z, r)["energy"]

    for a, c in [(0, 2), (1, 1), (2, 0)]:
        fd = -(8 * (energy(a, c, h) - energy(a, c, -h)) - (energy(a, c, 2 * h) - energy(a, c, -2 * h))) / (12 * h)
        # O(h^4) truncation ~1e-8; SCF noise 1e-10 Ha / h ~ 1e-6 eV/Å
        assert out["forces"][a, c] == pytest.approx(fd, abs=5e-6)


def test_open_shell_is_unrestricted():
    from pyscf import gto, scf

    out = PySCFLabeller("hf", "6-31g").label(OH_Z, OH_R, multiplicity=2)
    mol = gto.M(atom=_atom(OH_Z, OH_R), basis="6-31g", spin=1, unit="Angstrom", verbose=0)
    mf = scf.UHF(mol)
    mf.conv_tol = 1e-10
    assert out["energy"] == pytest.approx(mf.kernel() * HARTREE_TO_EV, abs=1e-7)
    # hydroxide anion: closed shell again
    anion = PySCFLabeller("hf", "6-31g").label(OH_Z, OH_R, charge=-1)
    assert np.isfinite(anion["energy"])
    xtb = TBLiteLabeller().label(OH_Z, OH_R, multiplicity=2)
    assert np.isfinite(xtb["energy"])


@pytest.mark.parametrize(("charge", "mult", "words"), [
    (0, 2, "cannot have multiplicity 2"),
    (1, 1, "cannot have multiplicity 1"),
    (0, 0, "positive integer"),
    (0, 13, "cannot have multiplicity 13"),
    (11, 1, "leaves -1 electrons"),
])
def test_charge_and_multiplicity_errors(charge, mult, words):
    for lab in (PySCFLabeller("hf", "sto-3g"), PySCFCCSDTLabeller(), TBLiteLabeller()):
        with pytest.raises(InputError, match=words):
            lab.label(WATER_Z, WATER_R, charge=charge, multiplicity=mult)
    assert check_electrons(OH_Z, 0, 2) == (5, 4)


def test_bad_geometry_and_level_errors():
    with pytest.raises(InputError, match="shape"):
        TBLiteLabeller().label(WATER_Z, WATER_R[:2])
    with pytest.raises(InputError, match="NaN"):
        TBLiteLabeller().label(WATER_Z, WATER_R * np.nan)
    with pytest.raises(InputError, match="METHOD/BASIS"):
        labeller_from_level("wb97x")
    assert labeller_from_level("ccsd(t)/cc-pvdz").level == "ccsd(t)/cc-pvdz"
    assert labeller_from_level("wb97x/6-31g*").cart and not labeller_from_level("wb97x/cc-pvdz").cart


def test_failed_scf_is_recorded_not_dropped(tmp_path):
    conf = Conformer("water", WATER_Z, WATER_R)
    lab = PySCFLabeller("wb97x", "6-31g*", max_cycle=2)
    with pytest.raises(LabelFailed, match="did not converge"):
        lab.label(WATER_Z, WATER_R)
    stats = label_many(lab, [conf], tmp_path)
    assert stats["failed"] == 1 and stats["computed"] == 0
    (rec,) = load_records(tmp_path, status="failed")
    assert rec["status"] == "failed" and "did not converge" in rec["error"]
    assert label_many(lab, [conf], tmp_path)["reused"] == 1  # not retried unless asked
    assert label_many(lab, [conf], tmp_path, retry_failed=True)["failed"] == 1


def _water_conformers(n):
    rng = np.random.default_rng(7)
    return [Conformer("water", WATER_Z, WATER_R + rng.normal(0, 0.03, WATER_R.shape), info={"sample": k})
            for k in range(n)]


CHILD = """
import json, sys
import numpy as np
from phai.labels import Conformer, PySCFLabeller, label_many

def main():
    raw = json.load(open(sys.argv[1]))
    confs = [Conformer(r["name"], np.array(r["numbers"]), np.array(r["positions"])) for r in raw]
    label_many(PySCFLabeller("hf", "6-31g*"), confs, sys.argv[2], processes=1)

if __name__ == "__main__":
    main()
"""


def test_killed_run_resumes_without_recomputing(tmp_path):
    confs = _water_conformers(60)
    (tmp_path / "confs.json").write_text(json.dumps(
        [{"name": c.name, "numbers": c.numbers.tolist(), "positions": c.positions.tolist()} for c in confs]))
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
    store = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "confs.json"), str(store)],
                             env=env)
    labels = store / "labels"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if labels.is_dir() and len(list(labels.glob("*.json"))) >= 3:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = {p.name: p.read_bytes() for p in labels.glob("*.json")}
    assert 3 <= len(done) < len(confs), "the child must be killed mid-run"
    stats = label_many(PySCFLabeller("hf", "6-31g*"), confs, store, processes=2)
    assert stats["reused"] == len(done)
    assert stats["computed"] == len(confs) - len(done) and stats["failed"] == 0
    for name, content in done.items():  # finished labels untouched
        assert (labels / name).read_bytes() == content
    recs = load_records(store)
    assert len(recs) == len(confs)
    # the resumed labels equal a fresh computation
    r0 = next(r for r in recs if r["name"] == "water" and r["key"] + ".json" not in done)
    again = PySCFLabeller("hf", "6-31g*").label(r0["numbers"], np.array(r0["positions"]))
    assert r0["energy"] == pytest.approx(again["energy"], abs=1e-7)


POOL_CHILD = """
import sys
import numpy as np
from phai.labels import Conformer, PySCFLabeller, label_many

def main():
    t = np.arange(6) * np.pi / 3
    ring = np.c_[np.cos(t), np.sin(t), np.zeros(6)]
    xyz = np.r_[1.39 * ring, 2.47 * ring]          # benzene, Å
    confs = [Conformer(f"benzene{k}", [6] * 6 + [1] * 6, xyz * (1 + 0.01 * k)) for k in range(4)]
    label_many(PySCFLabeller("b3lyp", "def2-tzvp"), confs, sys.argv[1], processes=2)   # minutes per label

if __name__ == "__main__":
    main()
"""


def _pool_workers(parent: int) -> list[int]:
    """Pids of the ``spawn`` workers whose parent is ``parent`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat, cmd = (d / "stat").read_text(), (d / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in cmd:
            out.append(int(d.name))
    return out


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_end_when_the_labelling_process_is_killed(tmp_path):
    # only the parent writes labels: a worker outliving it would burn its core for nothing
    (tmp_path / "child.py").write_text(textwrap.dedent(POOL_CHILD))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "store")], env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2:
            workers = _pool_workers(child.pid)
            time.sleep(0.1)
        assert len(workers) == 2
        time.sleep(5)                                    # the workers are importing or inside a label
        assert all(_running(w) for w in workers)
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(w) for w in workers):
            time.sleep(0.1)
        assert not any(_running(w) for w in workers), "workers outlived the killed labelling process"
        assert not list((tmp_path / "store" / "labels").glob("*.json"))   # nothing finished in 5 s
    finally:
        child.kill()
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_export_layout_with_missing_levels(tmp_path):
    import h5py

    from phai.data import read_ani_h5

    confs = _water_conformers(4)
    label_many(TBLiteLabeller(), confs, tmp_path)
    label_many(PySCFCCSDTLabeller("sto-3g"), confs[:2], tmp_path)
    out = export_ani_h5(tmp_path, tmp_path / "w.h5")
    with h5py.File(out) as f:
        g = f["water"]
        assert g["coordinates"].shape == (4, 3, 3)
        assert np.isnan(g["ccsd(t)_sto-3g.energy"][2:]).all() and np.isfinite(g["ccsd(t)_sto-3g.energy"][:2]).all()
        assert g["gfn2.forces"].attrs["units"] == "Hartree/Angstrom"
    xtb = read_ani_h5(out, "gfn2.energy", "gfn2.forces")
    assert len(xtb) == 4
    with pytest.warns(UserWarning, match="dropped 2 of 4"):
        cc = read_ani_h5(out, "ccsd(t)_sto-3g.energy")
    assert len(cc) == 2
    e_direct = TBLiteLabeller().label(WATER_Z, confs[0].positions)["energy"]
    k = int(np.argmin(np.abs(xtb.groups[0].positions - confs[0].positions).sum(axis=(1, 2))))
    assert xtb.groups[0].energy[k] == pytest.approx(e_direct, abs=1e-9)


def test_normal_mode_sampling_recipe_and_reproducibility():
    a = sample_conformers("CO", 6, 600.0, name="methanol", seed=3)
    b = sample_conformers("CO", 6, 600.0, name="methanol", seed=3)
    c = sample_conformers("CO", 6, 600.0, name="methanol", seed=4)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.positions, y.positions, atol=1e-8)
    assert not np.allclose(a[0].positions, c[0].positions)
    from phai.labels.conformers import minima

    (m,) = minima("CO", seed=3, name="methanol")
    r0 = np.linalg.norm(m.positions[:, None] - m.positions[None], axis=-1)
    for conf in a:
        assert not too_close(conf.numbers, conf.positions)
        r = np.linalg.norm(conf.positions[:, None] - conf.positions[None], axis=-1)
        bonded = (r0 < 1.6) & (r0 > 0)
        assert np.abs(r - r0)[bonded].max() < 0.4  # bonds stretched, not broken
    # the recipe: harmonic energy sum_i K_i R_i^2 / 2 = s N_f k_B T / 2 with s ~ U(0,1) the first
    # draw after the N_f mode fractions (no clipping at these amplitudes)
    nf = len(m.force_constants)
    assert nf == 3 * 6 - 6
    rng = np.random.default_rng(11)
    x = nms_displace(rng, m.positions, m.modes, m.force_constants, 600.0)
    # the Cartesian patterns are linearly independent (not orthogonal): recover R_i exactly
    coeff = np.linalg.lstsq(m.modes.reshape(nf, -1).T, (x - m.positions).ravel(), rcond=None)[0]
    rng2 = np.random.default_rng(11)
    rng2.random(nf)
    s = rng2.random()
    assert 0.5 * np.sum(m.force_constants * coeff**2) == pytest.approx(s * nf * K_B_EV * 600.0 / 2, rel=1e-8)


def test_vibrational_modes_match_phai_md():
    """The sampler's own (JAX-free) normal modes equal phai.md.vibrations.harmonic_analysis."""
    from ase.data import atomic_masses

    from phai.labels.conformers import minima, vibrational_modes, xtb_hessian
    from phai.md.vibrations import harmonic_analysis

    (m,) = minima("C=O", name="formaldehyde")
    h = xtb_hessian(m.numbers, m.positions)
    masses = atomic_masses[m.numbers]
    modes, lam = vibrational_modes(h, m.positions, masses)
    ref = harmonic_analysis(h, m.positions, masses)
    assert modes.shape == ref.modes.shape == (6, 4, 3)
    overlap = np.abs(np.einsum("kac,kac->k", modes, ref.modes))  # same patterns up to sign
    np.testing.assert_allclose(overlap, 1.0, atol=1e-8)
    assert np.all(lam > 0)


def test_cli_label_xyz_and_export(tmp_path, capsys):
    import ase.io
    from ase import Atoms

    from phai.cli import main

    xyz = tmp_path / "w.extxyz"
    ase.io.write(xyz, [Atoms(numbers=WATER_Z, positions=c.positions) for c in _water_conformers(3)])
    store = tmp_path / "st"
    assert main(["label", "--xyz", str(xyz), "--method", "gfn2-xtb", "--out", str(store)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["computed"] == 3
    assert main(["label", "--xyz", str(xyz), "--method", "gfn2-xtb", "--out", str(store)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reused"] == 3
    assert main(["label", "export", str(store), str(tmp_path / "o.h5")]) == 0
    from phai.data import read_ani_h5

    assert len(read_ani_h5(tmp_path / "o.h5", "gfn2.energy", "gfn2.forces")) == 3
    assert main(["label", "--xyz", str(xyz), "--method", "wb97x", "--out", str(store)]) == 2
    assert "METHOD/BASIS" in capsys.readouterr().err
    smi = tmp_path / "m.smi"
    smi.write_text("CO methanol\n")
    assert main(["label", "--smiles", str(smi), "--method", "gfn2-xtb", "--out", str(store),
                 "--multiplicity", "2"]) == 2
    assert "cannot have multiplicity 2" in capsys.readouterr().err


@pytest.mark.skipif(not DATASET.is_file(), reason="data set not generated yet")
def test_committed_dataset_is_consistent():
    import h5py

    from phai.data import read_ani_h5

    with h5py.File(DATASET) as f:
        names = list(f)
        assert len(names) >= 20
        n_dft = sum(int(np.isfinite(f[n]["wb97x_dz.energy"][()]).sum()) for n in names)
        for name in names:
            g = f[name]
            a = len(g["atomic_numbers"])
            c = len(g["coordinates"])
            assert set(np.unique(g["atomic_numbers"][()])) <= {1, 6, 7, 8}
            assert g["coordinates"].shape == (c, a, 3)
            for key in ("wb97x_dz.energy", "ccsd(t)_dz.energy", "hf_dz.energy", "gfn2.energy"):
                assert g[key].shape == (c,) and g[key].attrs["units"] == "Hartree"
            for key in ("wb97x_dz.forces", "gfn2.forces"):
                assert g[key].shape == (c, a, 3) and g[key].attrs["units"] == "Hartree/Angstrom"
            assert np.isfinite(g["gfn2.energy"][()]).all()  # GFN2-xTB labels are complete
            assert g.attrs["split"] in ("train", "test")
            e = g["wb97x_dz.energy"][()]
            ok = np.isfinite(e)
            # energies in Hartree: below the sum of ANI-1x's self energies by an atomisation-like
            # energy (0.11-0.16 Ha per atom here), never in eV
            z = g["atomic_numbers"][()]
            sae = np.sum(np.select([z == 1, z == 6, z == 7, z == 8], [-0.5006, -37.8302, -54.5680, -75.0362]))
            assert np.all((e[ok] < sae) & (e[ok] > sae - 0.25 * len(z)))
            # where both exist, CCSD(T)/cc-pVDZ lies below HF/cc-pVDZ by a sane correlation energy
            cc, hf = g["ccsd(t)_dz.energy"][()], g["hf_dz.energy"][()]
            both = np.isfinite(cc)
            corr = (cc - hf)[both]
            assert np.all((corr < -0.05 * np.sum(z > 1)) & (corr > -0.3 * np.sum(z > 1) - 0.05))
    with warnings.catch_warnings():  # read_ani_h5 warns about the NaN (not computed) labels it drops
        warnings.simplefilter("ignore", UserWarning)
        data = read_ani_h5(DATASET, "wb97x_dz.energy", "wb97x_dz.forces")
    assert len(data) == n_dft and data.num_groups >= 20 and data.has_forces
    # spot check: a stored label against a fresh PySCF computation (smallest molecule)
    g = min(data.groups, key=lambda g: g.num_atoms)
    fresh = PySCFLabeller().label(g.numbers, g.positions[0])
    assert g.energy[0] == pytest.approx(fresh["energy"], abs=1e-5)
    np.testing.assert_allclose(g.forces[0], fresh["forces"], atol=1e-4)
