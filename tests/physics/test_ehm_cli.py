"""``phai ehm``: JSON equals RDKit's EHT (rdEHTTools, YAeHMOP) for whole files of frames;
one-line errors with exit status 2; the batched engine pads exactly.

Tolerances (float64) as tests/physics/test_huckel.py: S 1e-7, H 1e-6 eV, energies 1e-6 eV
(below 30 eV; 3e-8 relative above), set by YAeHMOP's truncated overlap series.
"""

from __future__ import annotations

import json
import subprocess
import sys

import ase
import ase.io
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdEHTTools

from phai.cli import main
from phai.physics import NonFiniteMatrixError, extended_huckel
from phai.physics.ehm_batch import plain_kernel, run_batched

SMILES = ["C=CC=C", "C=NC=C", "NCC(=O)O", "c1ccncc1", "O"]


def _mol(smiles, seed=7):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol


def _atoms(mol):
    return ase.Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
                     positions=mol.GetConformer().GetPositions())


def _sym(upper):
    m = np.triu(np.asarray(upper))
    return m + np.triu(m, 1).T


def test_json_matrices_equal_rdkit(tmp_path, capsys):
    mols = [_mol(s) for s in SMILES]
    f = tmp_path / "mols.extxyz"
    ase.io.write(f, [_atoms(m) for m in mols])
    assert main(["ehm", str(f), "--json", "--matrices"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["frame"] for d in lines] == list(range(len(SMILES)))
    for d, mol in zip(lines, mols):
        ok, res = rdEHTTools.RunMol(mol, keepOverlapAndHamiltonianMatrices=True)
        assert ok
        E = np.asarray(res.GetOrbitalEnergies())
        got = np.asarray(d["orbital_energies"])
        assert got.shape == E.shape and np.all(np.diff(got) >= 0)
        np.testing.assert_allclose(got, E, rtol=3e-8, atol=1e-6)
        assert d["homo_index"] == round(res.numElectrons) // 2 - 1
        S, H = np.asarray(d["overlap"]), np.asarray(d["hamiltonian"])
        np.testing.assert_array_equal(S, S.T)
        np.testing.assert_array_equal(H, H.T)
        np.testing.assert_allclose(S, _sym(res.GetOverlapMatrix()), rtol=0, atol=1e-7)
        np.testing.assert_allclose(H, _sym(res.GetHamiltonian()), rtol=0, atol=1e-6)


def test_batch_equals_single_molecule_calls():
    """Grouped, padded, vmapped batches give each molecule's own unpadded result."""
    mols = [_mol(s, seed) for seed in (1, 2) for s in SMILES]
    structures = [(np.array([a.GetAtomicNum() for a in m.GetAtoms()]), m.GetConformer().GetPositions(), 0)
                  for m in mols]
    got = run_batched(structures, matrices=True)
    for (z, r, _), g in zip(structures, got):
        ref = extended_huckel(z, r)
        np.testing.assert_allclose(g.energies, ref.energies, rtol=0, atol=1e-10)
        np.testing.assert_allclose(g.hamiltonian, ref.hamiltonian, rtol=0, atol=1e-12)
        assert g.homo_index == int(ref.homo_index)


def test_table(tmp_path, capsys):
    f = tmp_path / "b.xyz"
    ase.io.write(f, _atoms(_mol("C=CC=C")), format="xyz")
    assert main(["ehm", str(f)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "HOMO / eV" in out[0] and len(out) == 2 and "C4H6" in out[1]


def _run(args):
    return subprocess.run([sys.executable, "-m", "phai.cli", "ehm", *args], capture_output=True, text=True, check=False)


def test_errors_one_line_exit_2(tmp_path, capsys):
    cu = tmp_path / "cu.xyz"
    ase.io.write(cu, ase.Atoms("CuH", positions=[[0, 0, 0], [0, 0, 1.5]]), format="xyz")
    radical = tmp_path / "ch3.xyz"
    ase.io.write(radical, ase.Atoms("CH3", positions=[[0, 0, 0], [1.08, 0, 0], [-0.54, 0.94, 0], [-0.54, -0.94, 0]]),
                 format="xyz")
    water = tmp_path / "w.xyz"
    ase.io.write(water, _atoms(_mol("O")), format="xyz")
    cases = [
        ([str(cu)], "no parameters for element(s) Cu"),
        ([str(radical)], "ch3.xyz frame 0: 7 valence electrons"),  # names the file and frame
        ([str(water), "--charge", "1"], "7 valence electrons (charge 1)"),
        ([str(water), "--matrices"], "--matrices needs --json"),
        ([str(tmp_path / "missing.xyz")], "no such file"),
        ([str(water), "--model", str(tmp_path / "nowhere")], "ML-EHM model folder"),
    ]
    for args, text in cases:  # in process (fast)
        assert main(["ehm", *args]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("phai: error:") and text in lines[0], (args, lines)
    for args, text in cases[:1] + cases[4:5]:  # and as a user runs it
        proc = _run(args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("phai: error:") and text in lines[0], (args, lines)


def test_non_finite_matrices_are_an_error():
    z = np.array([8, 1, 1])
    r = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    with pytest.raises(NonFiniteMatrixError, match="structure 0: hamiltonian has a non-finite entry"):
        run_batched([(z, r, 0)], kernel=plain_kernel(K=float("nan")))
