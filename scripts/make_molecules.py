"""Generate phai's bundled molecules and the test set of CHNO structures.

Recipe (recorded here so the files can be regenerated exactly):
  RDKit ETKDGv3 conformer (randomSeed=42) of the SMILES with explicit hydrogens, then an
  MMFF94 optimisation (maxIters=2000). "distorted" frames add Gaussian noise of
  sigma = 0.08 Å to every coordinate (numpy default_rng(seed=7)). Coordinates in Å.

Usage:  python scripts/make_molecules.py      (needs rdkit and ase)
Writes: src/phai/data/molecules/{aspirin,caffeine,ethanol}.xyz, tests/data/chno_molecules.extxyz
"""

from pathlib import Path

import ase
import ase.io
import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

ROOT = Path(__file__).resolve().parents[1]

BUNDLED = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "ethanol": "CCO",
}

TEST = {
    "hydrogen": "[H][H]", "methane": "C", "water": "O", "ammonia": "N", "ethanol": "CCO",
    "acetonitrile": "CC#N", "formamide": "NC=O", "urea": "NC(N)=O", "nitromethane": "C[N+](=O)[O-]",
    "glycine": "NCC(=O)O", "benzene": "c1ccccc1", "pyridine": "c1ccncc1", "morpholine": "C1COCCN1",
    "caffeine": BUNDLED["caffeine"], "aspirin": BUNDLED["aspirin"],
    "alanine_dipeptide": "CC(=O)NC(C)C(=O)NC", "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "hexanoic_acid": "CCCCCC(=O)O", "imidazole": "c1cnc[nH]1", "nicotine": "CN1CCCC1c1cccnc1",
    "tryptophan": "N[C@@H](Cc1c[nH]c2ccccc12)C(=O)O", "decane": "CCCCCCCCCC",
}


def embed(smiles: str) -> ase.Atoms:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = 42
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"embedding failed for {smiles}")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    return ase.Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
                     positions=mol.GetConformer().GetPositions())


def main():
    out = ROOT / "src/phai/data/molecules"
    out.mkdir(parents=True, exist_ok=True)
    for name, smi in BUNDLED.items():
        atoms = embed(smi)
        atoms.info.update(name=name, smiles=smi, recipe="RDKit ETKDGv3 seed 42 + MMFF94")
        ase.io.write(out / f"{name}.xyz", atoms, format="extxyz")
    rng = np.random.default_rng(7)
    frames = []
    for name, smi in TEST.items():
        atoms = embed(smi)
        atoms.info.update(name=name, smiles=smi, kind="mmff")
        frames.append(atoms)
        dist = atoms.copy()
        dist.positions += rng.normal(scale=0.08, size=dist.positions.shape)
        dist.info.update(name=name, smiles=smi, kind="distorted")
        frames.append(dist)
    (ROOT / "tests/data").mkdir(parents=True, exist_ok=True)
    ase.io.write(ROOT / "tests/data/chno_molecules.extxyz", frames, format="extxyz")
    print(f"wrote {len(BUNDLED)} bundled molecules and {len(frames)} test frames")


if __name__ == "__main__":
    main()
