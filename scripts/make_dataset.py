"""Build phai's small labelled CHNO data set (tests/data/chno_labels/, recipe in RECIPE.md there).

Stages (each resumable; the store keeps every finished label):

    python scripts/make_dataset.py sample --store STORE          # conformers -> STORE/conformers.json
    python scripts/make_dataset.py label --store STORE --level wb97x/6-31g* [--processes 1]
    python scripts/make_dataset.py label --store STORE --level ccsd(t)/cc-pvdz --max-heavy 5
    python scripts/make_dataset.py label --store STORE --level gfn2-xtb
    python scripts/make_dataset.py export --store STORE --out tests/data/chno_labels/chno_labels.h5
    python scripts/make_dataset.py check --out tests/data/chno_labels/chno_labels.h5   # agreement table

Run with ``OMP_NUM_THREADS=1`` (the sampler's GFN2-xTB minima are then bit-reproducible) and
``PYTHONPATH=src``. Labels are computed sample round by sample round (sample 0 of every
molecule, then sample 1, ...), so a run stopped early still covers every molecule.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from phai.labels.conformers import Conformer, MoleculeSpec, sample_molecules
from phai.labels.labellers import labeller_from_level
from phai.labels.store import (
    export_ani_h5,
    label_many,
    load_conformers,
    save_conformers,
    summary,
)

SEED = 0
TEMPERATURE = 600.0  # K: the ANI-Tools active-learning cycle's NMS temperature
NUM_EMBED = 3

# (name, SMILES, split). "test" molecules are held out whole for the transfer-learning test.
MOLECULES: tuple[tuple[str, str, str], ...] = (
    ("methane", "C", "train"),
    ("water", "O", "train"),
    ("ammonia", "N", "train"),
    ("hydrogen_cyanide", "C#N", "train"),
    ("ethane", "CC", "train"),
    ("ethylene", "C=C", "train"),
    ("acetylene", "C#C", "train"),
    ("formaldehyde", "C=O", "train"),
    ("methanol", "CO", "train"),
    ("methylamine", "CN", "train"),
    ("hydroxylamine", "NO", "test"),
    ("acetonitrile", "CC#N", "train"),
    ("acetaldehyde", "CC=O", "train"),
    ("ethanol", "CCO", "train"),
    ("formamide", "NC=O", "train"),
    ("formic_acid", "OC=O", "train"),
    ("propane", "CCC", "train"),
    ("dimethyl_ether", "COC", "test"),
    ("propene", "C=CC", "test"),
    ("acetic_acid", "CC(=O)O", "train"),
    ("acetone", "CC(C)=O", "train"),
    ("methyl_formate", "COC=O", "test"),
    ("urea", "NC(N)=O", "train"),
    ("glycine", "NCC(=O)O", "train"),
)


def heavy_atoms(smiles: str) -> int:
    from rdkit import Chem

    return Chem.MolFromSmiles(smiles).GetNumHeavyAtoms()


def conformers_per_molecule(smiles: str) -> int:
    """10 normal-mode samples for 1-2 heavy atoms, 8 for more (the DFT cost grows fast)."""
    return 10 if heavy_atoms(smiles) <= 2 else 8


def _log(line: str) -> None:
    print(line, flush=True)


def sample(store: Path) -> list[Conformer]:
    specs = [MoleculeSpec(name, smiles, conformers_per_molecule(smiles), split) for name, smiles, split in MOLECULES]
    out = sample_molecules(specs, TEMPERATURE, seed=SEED, num_embed=NUM_EMBED, log=_log)
    save_conformers(store / "conformers.json", out)
    return out


def rounds(conformers: list[Conformer]) -> list[Conformer]:
    """Order by sample index, then by size: every molecule gets its first labels first."""
    return sorted(conformers, key=lambda c: (c.info["sample"], len(c.numbers)))


def _relative(e: np.ndarray) -> np.ndarray:
    """Energies relative to the molecule's mean (the conformer-energy part a model must get right)."""
    return e - e.mean()


def check(path: Path) -> str:
    """Agreement of the levels with each other and with ANI-1x / ANI-1ccx on the labelled geometries.

    Relative conformer energies (each molecule's energies minus their mean over the
    conformations that carry both labels), MAE and RMSE in kcal/mol, and force MAE in
    kcal/mol/Å. A wrong unit, basis convention or sign in the labels shows up here at once:
    ANI-1x was trained on ωB97X/6-31G(d) and must reproduce these labels to about 1 kcal/mol.
    """
    import h5py

    import phai
    from phai.units import EV_TO_KCALMOL, HARTREE_TO_KCALMOL

    pots = {"ani-1x": phai.load("ani-1x", precision="float64"), "ani-1ccx": phai.load("ani-1ccx", precision="float64")}
    pairs = [("wb97x_dz", "gfn2"), ("wb97x_dz", "ani-1x"), ("ccsd(t)_dz", "wb97x_dz"), ("ccsd(t)_dz", "ani-1ccx"),
             ("ccsd(t)_dz", "ani-1x"), ("ccsd(t)_dz", "hf_dz")]
    err: dict[tuple, list] = {p: [] for p in pairs}
    ferr: dict[tuple, list] = {("wb97x_dz", "gfn2"): [], ("wb97x_dz", "ani-1x"): []}
    with h5py.File(path) as f:
        for name in f:
            g = f[name]
            z = g["atomic_numbers"][()].astype(int)
            x = g["coordinates"][()]
            lab = {k.split(".")[0]: g[k][()] * HARTREE_TO_KCALMOL for k in g if k.endswith(".energy")}
            frc = {k.split(".")[0]: g[k][()] * HARTREE_TO_KCALMOL for k in g if k.endswith(".forces")}
            for model, pot in pots.items():
                res = [pot(z, xi) for xi in x]
                lab[model] = np.array([r.energy for r in res]) * EV_TO_KCALMOL
                frc[model] = np.stack([r.forces for r in res]) * EV_TO_KCALMOL
            for a, b in pairs:
                ok = np.isfinite(lab[a]) & np.isfinite(lab[b])
                if ok.sum() >= 2:
                    err[(a, b)].append(_relative(lab[b][ok]) - _relative(lab[a][ok]))
            for (a, b), parts in ferr.items():
                ok = np.isfinite(frc[a]).all(axis=(1, 2))
                if ok.any():
                    parts.append((frc[b][ok] - frc[a][ok]).ravel())
    lines = ["| reference | compared | conformations | rel. energy MAE | RMSE | force MAE |", "|---|---|---|---|---|---|"]
    for (a, b), parts in err.items():
        d = np.concatenate(parts) if parts else np.zeros(0)
        fm = f"{np.abs(np.concatenate(ferr[(a, b)])).mean():.2f}" if ferr.get((a, b)) else ""
        if len(d):
            lines.append(f"| {a} | {b} | {len(d)} | {np.abs(d).mean():.2f} | {np.sqrt(np.mean(d**2)):.2f} | {fm} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["sample", "label", "export", "summary", "check"])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--level", default="wb97x/6-31g*")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--max-heavy", type=int, default=None, help="label only molecules with at most this many heavy atoms")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.stage == "sample":
        sample(args.store)
    elif args.stage == "label":
        confs = rounds(load_conformers(args.store / "conformers.json"))
        if args.max_heavy is not None:
            confs = [c for c in confs if int(np.sum(c.numbers > 1)) <= args.max_heavy]
        stats = label_many(labeller_from_level(args.level), confs, args.store, processes=args.processes,
                           progress=True)
        print(json.dumps(stats))
    elif args.stage == "export":
        export_ani_h5(args.store, args.out)
        print(args.out)
    elif args.stage == "check":
        print(check(args.out))
    else:
        print(json.dumps(summary(args.store), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
