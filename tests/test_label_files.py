"""phai.labels' file helpers: atomic_output, save/load_conformers, sample_molecules."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from phai.labels import (
    Conformer,
    MoleculeSpec,
    atomic_output,
    load_conformers,
    sample_conformers,
    sample_molecules,
    save_conformers,
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_output_replaces_whole_file_with_ordinary_mode(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_output(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.suffix == ".tmp"
        assert path.read_bytes() == b"old"  # untouched until the block ends
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_output_keeps_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer crashed"), atomic_output(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_conformers_file_round_trip_and_format(tmp_path):
    confs = [Conformer("water", np.array([8, 1, 1]), np.array([[0.0, 0, 0.1], [0.76, 0, -0.47], [-0.75, 0.05, -0.5]]),
                       -1, 2, {"sample": 0, "split": "test"}),
             Conformer("methyl", np.array([6, 1, 1, 1]), np.arange(12.0).reshape(4, 3) / 7, 0, 2, {"sample": 3})]
    path = save_conformers(tmp_path / "sub" / "conformers.json", confs)
    # the recipes' format: one json.dump of a list of plain objects
    assert path.read_text() == json.dumps([
        {"name": c.name, "numbers": c.numbers.tolist(), "positions": c.positions.tolist(), "charge": c.charge,
         "multiplicity": c.multiplicity, "info": c.info} for c in confs])
    back = load_conformers(path)
    assert [c.name for c in back] == ["water", "methyl"]
    for a, b in zip(confs, back):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.positions, b.positions)  # exact: JSON keeps float64 by repr
        assert (a.charge, a.multiplicity, a.info) == (b.charge, b.multiplicity, b.info)


def test_sample_molecules_tags_splits_and_equals_sample_conformers():
    lines = []
    got = sample_molecules([MoleculeSpec("water", "O", 2, "test"), MoleculeSpec("methyl", "[CH3]", 1, multiplicity=2)],
                           600.0, seed=3, num_embed=1, log=lines.append)
    assert [(c.name, c.info["split"], c.multiplicity) for c in got] == [
        ("water", "test", 1), ("water", "test", 1), ("methyl", "train", 2)]
    want = sample_conformers("O", 2, 600.0, name="water", seed=3, num_embed=1)
    for a, b in zip(got[:2], want):
        np.testing.assert_array_equal(a.positions, b.positions)
    assert len(lines) == 2 and lines[1].startswith("methyl") and "mult 2" in lines[1]
