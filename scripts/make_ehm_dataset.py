"""Generate the ML-EHM data set: DFT orbital energies of small conjugated molecules.

Recipe (also in ``src/phai/data/ehm/RECIPE.md``; regenerate with ``python scripts/make_ehm_dataset.py``):

* **Geometries**: RDKit ETKDGv3 conformer (``randomSeed=42``) of the SMILES with explicit
  hydrogens, MMFF94 optimisation; for torsion scans the heavy-atom dihedral 0-1-2-3 is set
  (0 = s-cis, 180 = s-trans) and the rest of the molecule relaxed by MMFF94 with that dihedral
  constrained (``MMFFAddTorsionConstraint``, force constant 1e4 kcal/mol/rad^2). "Distorted"
  frames add Gaussian noise (sigma 0.05 Å, ``numpy.random.default_rng([SEED, molecule+1,
  dihedral+1, index+1])``) to every coordinate of such a geometry.
* **Split** (:func:`split_of`): the odd multiples of 10 degrees of the butadiene and
  2-aza-1,3-butadiene scans and every frame of 1-aza-1,3-butadiene are test, distorted or not.
* **Reference**: PySCF restricted Kohn-Sham B3LYP/6-31G(d) (QM9's functional, a hybrid whose
  occupied orbital energies track ionisation energies better than a pure GGA; no diffuse
  functions, so the lowest virtual orbitals stay valence-like pi*/sigma*, the kind a minimal
  STO basis can describe), default grids, ``conv_tol=1e-9``, one thread.
* **Stored orbitals**: every valence occupied orbital (all occupied minus one 1s core orbital
  per heavy atom; their count equals extended Hückel's n_electrons/2) and the 4 lowest virtual
  orbitals, in eV ascending.

Output: ``src/phai/data/ehm/ehm_dft.npz`` (atomically written) and a resumable work file
``ehm_dft.jsonl`` beside it (one JSON line per finished calculation; a rerun skips those).
Run with ``nice -n 10``; it uses one process and one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from phai.atomic import atomic_output

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "phai" / "data" / "ehm"
SEED = 2026
HARTREE_TO_EV = 27.211386024367243
N_VIRTUAL = 4
XC, BASIS = "b3lyp", "6-31g*"

# name, SMILES (heavy atoms 0-1-2-3 form the scanned dihedral when a scan is given)
MOLECULES = {
    "butadiene": "C=CC=C",
    "azabutadiene": "C=NC=C",  # 2-aza-1,3-butadiene
    "acrolein": "C=CC=O",
    "glyoxal": "O=CC=O",
    "1-azabutadiene": "N=CC=C",  # held-out molecule
    "ethylene": "C=C",
    "formaldehyde": "C=O",
    "methanimine": "C=N",
    "propene": "C=CC",
    # second session: more conjugated molecules with a heavy-atom torsion 0-1-2-3 (training)
    "glyoxal-diimine": "N=CC=N",
    "acrylic-acid": "C=CC(=O)O",
    "acrylamide": "C=CC(=O)N",
    "methyl-vinyl-ether": "C=COC",
    "methyl-formate": "O=COC",
    "acrylonitrile": "C=CC#N",  # small molecules without a scan (training)
    "vinylamine": "C=CN",
    "formamide": "NC=O",
    "acetaldehyde": "CC=O",
    "n-methylmethanimine": "C=NC",
}
EXTRA = ("glyoxal-diimine", "acrylic-acid", "acrylamide", "methyl-vinyl-ether")
SMALL_EXTRA = ("acrylonitrile", "vinylamine", "formamide", "acetaldehyde", "n-methylmethanimine")


SCANNED = ("butadiene", "azabutadiene")  # the seed-figure scans: odd multiples of 10 degrees held out
HELD_OUT_MOLECULE = "1-azabutadiene"


def split_of(molecule, dihedral):
    """``"test"`` for the held-out molecule and for the held-out angles (odd multiples of 10
    degrees) of the seed-figure scans, whether distorted or not; else ``"train"``."""
    if molecule == HELD_OUT_MOLECULE:
        return "test"
    if molecule in SCANNED and dihedral is not None and int(dihedral) % 20 != 0:
        return "test"
    return "train"


def jobs():
    """(molecule, dihedral or None, distortion index or -1, split) in priority order.

    First session (30-minute budget on one shared core): the seed-figure scans at every 10
    degrees (odd multiples of 10 held out), coarser scans of acrolein and glyoxal, the small
    molecules, a held-out molecule (1-aza-1,3-butadiene), a few distorted frames, the 30/90/150
    degree acrolein and glyoxal frames. Second session (45 minutes): distorted frames at held-out
    angles and of the held-out molecule (test), distorted frames at more training angles and of
    every training molecule (train), more angles of the held-out molecule, then distorted frames
    at the remaining held-out angles, then four more molecules (glyoxal diimine, acrylic acid,
    acrylamide, methyl vinyl ether; training), distorted frames of the held-out molecule at its
    new angles (test), a second distorted frame at every training angle of the seed scans, and
    six more small molecules with distorted frames (training). The distortion index only has to be unique per
    (molecule, dihedral): it seeds the noise together with them.
    """
    out = []
    for mol in SCANNED:  # the seed figure first
        for ang in range(0, 181, 10):
            out.append((mol, ang, -1))
    for mol in ("acrolein", "glyoxal"):
        for ang in range(0, 181, 60):
            out.append((mol, ang, -1))
    for mol in ("ethylene", "formaldehyde", "methanimine", "propene"):
        out.append((mol, None, -1))
    for ang in range(0, 181, 60):
        out.append((HELD_OUT_MOLECULE, ang, -1))
    for mol in SCANNED:
        for k, ang in enumerate(range(0, 181, 60)):
            out.append((mol, ang, k))
    for mol in ("ethylene", "formaldehyde", "methanimine", "propene"):
        for k in range(2):
            out.append((mol, None, k))
    for mol in ("acrolein", "glyoxal"):
        for ang in range(30, 181, 60):
            out.append((mol, ang, -1))
    # second session
    for mol in SCANNED:  # distorted frames at held-out angles: test
        for ang in (30, 90, 150):
            for k in range(2):
                out.append((mol, ang, k))
    for ang in range(0, 181, 60):  # distorted frames of the held-out molecule: test
        out.append((HELD_OUT_MOLECULE, ang, 0))
    for mol in SCANNED:  # distorted frames at more training angles
        for ang in (20, 40, 80, 100, 140, 160):
            out.append((mol, ang, 0))
    for mol in ("acrolein", "glyoxal"):
        for ang in range(0, 181, 60):
            out.append((mol, ang, 0))
    for mol in ("ethylene", "formaldehyde", "methanimine", "propene"):
        for k in (2, 3):
            out.append((mol, None, k))
    for ang in (30, 90, 150):  # more angles of the held-out molecule
        out.append((HELD_OUT_MOLECULE, ang, -1))
    for mol in SCANNED:  # distorted frames at the remaining held-out angles
        for ang in (10, 50, 70, 110, 130, 170):
            out.append((mol, ang, 0))
    for mol in EXTRA:  # more molecules: scans every 30 degrees, distorted s-cis and s-trans
        for ang in range(0, 181, 30):
            out.append((mol, ang, -1))
    for mol in EXTRA:
        for ang in (0, 180):
            out.append((mol, ang, 0))
    for ang in (30, 90, 150):  # distorted frames of the held-out molecule at its new angles: test
        out.append((HELD_OUT_MOLECULE, ang, 0))
    for mol in SCANNED:  # a second distorted frame at every training angle
        for ang, k in [(a, 1) for a in (0, 20, 40, 80, 100, 140, 160)] + [(a, 0) for a in (60, 120, 180)]:
            out.append((mol, ang, k))
    for ang in range(0, 181, 60):
        out.append(("methyl-formate", ang, -1))
    out.append(("methyl-formate", 0, 0))
    for mol in SMALL_EXTRA:
        out.append((mol, None, -1))
        for k in range(3):
            out.append((mol, None, k))
    keys = [(m, a, d) for m, a, d in out]
    assert len(set(keys)) == len(keys), "duplicate job"
    return [(m, a, d, split_of(m, a)) for m, a, d in out]


def geometry(name, dihedral, distortion):
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolTransforms

    mol = Chem.AddHs(Chem.MolFromSmiles(MOLECULES[name]))
    AllChem.EmbedMolecule(mol, _etkdg())
    props = AllChem.MMFFGetMoleculeProperties(mol)
    ff = AllChem.MMFFGetMoleculeForceField(mol, props)
    ff.Minimize(maxIts=2000)
    if dihedral is not None:
        conf = mol.GetConformer()
        rdMolTransforms.SetDihedralDeg(conf, 0, 1, 2, 3, float(dihedral))
        ff = AllChem.MMFFGetMoleculeForceField(mol, props)
        ff.MMFFAddTorsionConstraint(0, 1, 2, 3, False, float(dihedral), float(dihedral), 1e4)
        ff.Minimize(maxIts=5000)
    pos = mol.GetConformer().GetPositions()
    if distortion >= 0:
        key = (list(MOLECULES).index(name), -1 if dihedral is None else int(dihedral), distortion)
        rng = np.random.default_rng([SEED, *[k + 1 for k in key]])
        pos = pos + rng.normal(0.0, 0.05, pos.shape)
    return [a.GetAtomicNum() for a in mol.GetAtoms()], pos


def _etkdg():
    from rdkit.Chem import AllChem

    p = AllChem.ETKDGv3()
    p.randomSeed = 42
    return p


_LAST_DM = {}


def label(numbers, pos):
    """B3LYP/6-31G(d) orbital energies (eV); the SCF starts from the previous density of the
    same molecule (a scan's neighbour), which changes the converged result by < conv_tol."""
    from pyscf import dft, gto, lib

    lib.num_threads(1)
    mol = gto.M(atom=[(int(z), tuple(r)) for z, r in zip(numbers, pos)], basis=BASIS, verbose=0, unit="Angstrom")
    mf = dft.RKS(mol)
    mf.xc = XC
    mf.conv_tol = 1e-9
    key = tuple(numbers)
    e_tot = mf.kernel(dm0=_LAST_DM.get(key))
    _LAST_DM[key] = mf.make_rdm1()
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    n_occ = mol.nelectron // 2
    n_core = sum(1 for z in numbers if z > 2)
    eps = np.asarray(mf.mo_energy) * HARTREE_TO_EV
    return {"occupied": eps[n_core:n_occ].tolist(), "virtual": eps[n_occ:n_occ + N_VIRTUAL].tolist(),
            "core": eps[:n_core].tolist(), "e_total_ev": float(e_tot) * HARTREE_TO_EV}


def _atomic_write(path: Path, write):
    """Call ``write(binary file)`` into a temporary file, moved onto ``path`` only when it ends normally."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        write(f)


def assemble(records, path: Path):
    """Pad the records into one npz (NaN marks padding in the orbital arrays)."""
    n = len(records)
    a = max(len(r["numbers"]) for r in records)
    o = max(len(r["occupied"]) for r in records)
    numbers = np.zeros((n, a), np.int8)
    positions = np.zeros((n, a, 3), np.float64)
    occ = np.full((n, o), np.nan)
    for k, r in enumerate(records):
        numbers[k, :len(r["numbers"])] = r["numbers"]
        positions[k, :len(r["numbers"])] = r["positions"]
        occ[k, :len(r["occupied"])] = r["occupied"]
    names = list(MOLECULES)
    arrays = {
        "numbers": numbers, "positions": positions,
        "n_atoms": np.array([len(r["numbers"]) for r in records], np.int16),
        "molecule": np.array([names.index(r["molecule"]) for r in records], np.int16),
        "molecule_names": np.array(names),
        "dihedral": np.array([np.nan if r["dihedral"] is None else r["dihedral"] for r in records]),
        "distortion": np.array([r["distortion"] for r in records], np.int16),
        "test": np.array([r["split"] == "test" for r in records]),
        "occupied": occ, "n_occupied": np.array([len(r["occupied"]) for r in records], np.int16),
        "virtual": np.array([r["virtual"] for r in records]),
    }
    _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds of labelling before stopping")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "ehm_dft.jsonl"
    done = {}
    if work.exists():
        for line in work.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r["split"] != split_of(r["molecule"], r["dihedral"]):
                    raise SystemExit(f"{work}: {r['molecule']} {r['dihedral']} {r['distortion']} is stored as "
                                     f"{r['split']!r} but the split rule says {split_of(r['molecule'], r['dihedral'])!r}")
                done[(r["molecule"], r["dihedral"], r["distortion"])] = r
    t0 = time.time()
    with open(work, "a") as f:
        for mol, ang, dist, split in jobs():
            if (mol, ang, dist) in done:
                continue
            if time.time() - t0 > args.budget:
                print("budget exhausted; rerun to continue", flush=True)
                break
            z, pos = geometry(mol, ang, dist)
            t = time.time()
            lab = label(z, pos)
            rec = dict(molecule=mol, dihedral=ang, distortion=dist, split=split, numbers=z,
                       positions=np.round(pos, 6).tolist(), **lab, seconds=round(time.time() - t, 1))
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
            done[(mol, ang, dist)] = rec
            print(f"{mol} {ang} {dist}: {time.time() - t:.1f} s, HOMO {lab['occupied'][-1]:.3f} eV", flush=True)
    order = {(m, a, d): k for k, (m, a, d, _) in enumerate(jobs())}
    records = sorted(done.values(), key=lambda r: order.get((r["molecule"], r["dihedral"], r["distortion"]), 1e9))
    assemble(records, OUT / "ehm_dft.npz")
    print(f"{len(records)} records -> {OUT / 'ehm_dft.npz'}")


if __name__ == "__main__":
    main()
