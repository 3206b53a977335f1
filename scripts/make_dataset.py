"""Build phai's small labelled CHNO data set (tests/data/chno_labels/, recipe in RECIPE.md there).

Stages (each resumable; the store keeps every finished label):

    python scripts/make_dataset.py sample --store STORE          # conformers -> STORE/conformers.json
    python scripts/make_dataset.py label --store STORE --level wb97x/6-31g* [--processes 1]
    python scripts/make_dataset.py label --store STORE --level ccsd(t)/cc-pvdz --max-heavy 5
    python scripts/make_dataset.py label --store STORE --level gfn2-xtb
    python scripts/make_dataset.py export --store STORE --out tests/data/chno_labels/chno_labels.h5

Run with ``OMP_NUM_THREADS=1`` (the sampler's GFN2-xTB minima are then bit-reproducible) and
``PYTHONPATH=src``. Labels are computed sample round by sample round (sample 0 of every
molecule, then sample 1, ...), so a run stopped early still covers every molecule.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from phai.labels.conformers import Conformer, sample_conformers
from phai.labels.labellers import labeller_from_level
from phai.labels.store import export_ani_h5, label_many, summary

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


def sample(store: Path) -> list[Conformer]:
    out = []
    for name, smiles, split in MOLECULES:
        t0 = time.perf_counter()
        cs = sample_conformers(smiles, conformers_per_molecule(smiles), TEMPERATURE, name=name, seed=SEED,
                               num_embed=NUM_EMBED)
        for c in cs:
            c.info["split"] = split
        out += cs
        print(f"{name:18s} {len(cs):3d} conformers, {len(cs[0].numbers):2d} atoms, "
              f"{len({c.info['base'] for c in cs})} minima, {time.perf_counter() - t0:.1f} s", flush=True)
    store.mkdir(parents=True, exist_ok=True)
    with open(store / "conformers.json", "w") as fh:
        json.dump([{"name": c.name, "numbers": c.numbers.tolist(), "positions": c.positions.tolist(),
                    "charge": c.charge, "multiplicity": c.multiplicity, "info": c.info} for c in out], fh)
    return out


def load_conformers(store: Path) -> list[Conformer]:
    with open(store / "conformers.json") as fh:
        raw = json.load(fh)
    return [Conformer(r["name"], np.asarray(r["numbers"]), np.asarray(r["positions"]), r["charge"],
                      r["multiplicity"], r["info"]) for r in raw]


def rounds(conformers: list[Conformer]) -> list[Conformer]:
    """Order by sample index, then by size: every molecule gets its first labels first."""
    return sorted(conformers, key=lambda c: (c.info["sample"], len(c.numbers)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["sample", "label", "export", "summary"])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--level", default="wb97x/6-31g*")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--max-heavy", type=int, default=None, help="label only molecules with at most this many heavy atoms")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.stage == "sample":
        sample(args.store)
    elif args.stage == "label":
        confs = rounds(load_conformers(args.store))
        if args.max_heavy is not None:
            confs = [c for c in confs if int(np.sum(c.numbers > 1)) <= args.max_heavy]
        stats = label_many(labeller_from_level(args.level), confs, args.store, processes=args.processes,
                           progress=True)
        print(json.dumps(stats))
    elif args.stage == "export":
        export_ani_h5(args.store, args.out)
        print(args.out)
    else:
        print(json.dumps(summary(args.store), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
