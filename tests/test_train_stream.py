"""Streamed training from an ANI HDF5 file (bit-identical to in memory; killed and resumed),
and Δ-learning folders.

Data: the committed CHNO set (tests/data/chno_labels/chno_labels.h5: 24 molecules, 8 or 10
conformations each, wB97X/6-31G(d) energies and forces, CCSD(T)/cc-pVDZ energies, Hartree).
Networks are tiny (16-8 hidden units, 2 members) as in tests/test_train.py.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import ase
import ase.io
import h5py
import jax
import numpy as np
import pytest
from train_runs import check_killed_run_resumes, kill_step

import phai
from phai.commands.train import load_data
from phai.train import (
    DeltaPotential,
    StreamedTrainingSet,
    TrainConfig,
    Trainer,
    fit_self_energies,
)
from phai.units import EV_TO_HARTREE, HARTREE_TO_EV

H5 = Path(__file__).parent / "data" / "chno_labels" / "chno_labels.h5"
TINY = {"members": 2, "hidden": {s: [16, 8] for s in "HCNO"}, "epochs": 2, "batch_size": 6, "seed": 3, "lr": 1e-2,
        "progress": False, "plot": False, "checkpoint_every": 5, "use_forces": True}
WB, WBF, CC = "wb97x_dz.energy", "wb97x_dz.forces", "ccsd(t)_dz.energy"


def _leaves(res):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves((res.params, res.best_params, res.sae))]


def _history(res):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in res.history]  # wall time differs


class _CountedReads:
    """Every read of a ``coordinates`` or ``forces`` HDF5 dataset, as (field, rows returned):
    h5py's own ``Dataset.__getitem__`` is wrapped while inside ``with``, so no read escapes."""

    def __init__(self):
        self.reads = []

    def __enter__(self):
        self._original = original = h5py.Dataset.__getitem__

        def counted(ds, sel):
            out = original(ds, sel)
            field = ds.name.rsplit("/", 1)[-1]
            if field == "coordinates" or field.endswith("forces"):
                self.reads.append((field, 1 if np.ndim(out) < 3 else np.shape(out)[0]))
            return out

        h5py.Dataset.__getitem__ = counted
        return self

    def __exit__(self, *exc):
        h5py.Dataset.__getitem__ = self._original


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run in memory and streamed (the streamed one with its file reads counted)."""
    memory = load_data(str(H5), WB, WBF)
    ref = Trainer(TrainConfig(**TINY), memory).fit()
    with _CountedReads() as counted:
        stream = StreamedTrainingSet(H5, WB, WBF, chunk=TINY["batch_size"])
        res = Trainer(TrainConfig(**TINY), stream, out_dir=tmp_path_factory.mktemp("stream") / "run").fit()
    return memory, ref, stream, res, counted.reads



def _energy_cli(frames, model, tmp_path, capsys):
    """Write ``frames`` to XYZ, run ``phai energy --model MODEL --json`` on the file; returns the
    frames as read back (the file rounds the coordinates) and the JSON rows."""
    from phai.cli import main

    xyz = tmp_path / "frames.xyz"
    ase.io.write(xyz, frames)
    frames = ase.io.read(xyz, ":")
    capsys.readouterr()
    assert main(["energy", str(xyz), "--model", str(model), "--json"]) == 0
    return frames, [json.loads(x) for x in capsys.readouterr().out.splitlines()]

def test_streamed_training_is_bit_identical_and_reads_one_batch_at_a_time(runs):
    memory, ref, stream, res, reads = runs
    assert len(stream) == len(memory) == 214
    np.testing.assert_array_equal(stream.energies, memory.energies)
    assert list(stream.groups) == list(memory.groups)
    assert _history(res) == _history(ref) and len(res.history) == TINY["epochs"]
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(res), _leaves(ref)))

    # memory: coordinates and forces come from the file, at most one batch (or chunk) per read,
    # while every group holds more conformations than that
    with h5py.File(H5) as f:
        assert min(f[g]["coordinates"].shape[0] for g in f) > TINY["batch_size"]
    assert {field for field, _ in reads} == {"coordinates", WBF}
    assert sum(n for field, n in reads if field == "coordinates") > TINY["epochs"] * 214  # re-read, not kept
    assert max(n for _, n in reads) <= TINY["batch_size"]
    floats = [v for v in vars(stream).values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    assert all(v.ndim == 1 and v.size <= len(stream) for v in floats)  # energies, scales: no coordinates/forces
    with pytest.raises(TypeError, match="stay in the file"):
        list(stream.positions)


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    """Six molecules of the committed set (an exact copy of their groups)."""
    path = tmp_path_factory.mktemp("delta") / "six.h5"
    with h5py.File(H5) as src, h5py.File(path, "w") as dst:
        for name in ("ammonia", "ethanol", "formamide", "methane", "propene", "water"):
            src.copy(src[name], dst, name)
    return path


def test_streamed_run_killed_mid_epoch_resumes_to_the_same_weights(small_h5, tmp_path):
    """``--stream yes``: a run SIGKILLed one step after a mid-epoch checkpoint, started again,
    ends bit-identical to an uninterrupted run (each in a fresh process)."""
    n_batches = len(Trainer(TrainConfig(**TINY), StreamedTrainingSet(small_h5, WB, WBF)).epoch_order(0))
    facts = check_killed_run_resumes(tmp_path, kill_at=kill_step(n_batches, TINY["checkpoint_every"]),
                                     n_batches=n_batches, tiny=TINY, data=small_h5, energy_key=WB, forces_key=WBF,
                                     stream=True)
    assert facts["set"] == "StreamedTrainingSet" and len(facts["history"]) == TINY["epochs"]


def _frames(path, group):
    conf = phai.data.read_ani_h5(path, None, groups=[group])
    return [ase.Atoms(g.numbers, r) for g in conf for r in g.positions]


def test_delta_from_reads_the_lower_level_like_the_main_field(small_h5, tmp_path):
    with h5py.File(small_h5) as f:
        want = np.concatenate([(f[g][CC][()] - f[g][WB][()]) * HARTREE_TO_EV for g in f])
    ts = load_data(str(small_h5), CC, WBF, WB)
    np.testing.assert_allclose(ts.energies, want, rtol=0, atol=1e-9)
    assert ts.forces is None  # no lower-level forces: energies only
    streamed = StreamedTrainingSet(small_h5, CC, WBF, delta_from=WB)
    np.testing.assert_array_equal(streamed.energies, ts.energies)
    # a file that stores eV (units attribute) gives the same differences: no double conversion
    conf = phai.data.read_ani_h5(small_h5, CC, None, hartree_properties=(WB,))
    ev = phai.data.write_ani_h5(tmp_path / "ev.h5", conf, CC, None, hartree=False, properties=(WB,),
                                hartree_properties=(WB,))
    with h5py.File(ev) as f:
        assert f["water"][CC].attrs["units"] == "eV" and f["water"][WB].attrs["units"] == "eV"
    np.testing.assert_allclose(load_data(str(ev), CC, None, WB).energies, want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(StreamedTrainingSet(ev, CC, delta_from=WB).energies, want, rtol=0, atol=1e-9)
    # the self energies are fitted to the differences (the networks' targets), not to either level
    trainer = Trainer(TrainConfig(**{**TINY, "use_forces": False}), streamed)
    tr = trainer.train_set
    np.testing.assert_array_equal(trainer.sae, fit_self_energies(tr.numbers, tr.energies, "HCNO") * EV_TO_HARTREE)
    assert np.abs(trainer.sae).max() < 0.5  # Hartree per atom: a correlation-energy difference, not a total


def test_delta_from_folder_predicts_a_difference(small_h5, tmp_path, capsys):
    from phai.cli import main

    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"train": {**TINY, "epochs": 1, "use_forces": False}}))
    out = tmp_path / "lvl"
    assert main(["train", str(cfg), "--data", str(small_h5), "--energy-key", CC, "--delta-from", WB,
                 "--out", str(out), "--stream", "yes"]) == 0
    record = json.loads((out / "config.json").read_text())["delta"]
    assert record == {"base": {"kind": "level", "level": WB}, "target": CC}
    pot = phai.load(str(out))
    assert not isinstance(pot, DeltaPotential) and "DIFFERENCE" in pot.predicts
    xyz = tmp_path / "water.xyz"
    ase.io.write(xyz, _frames(small_h5, "water")[:1])
    capsys.readouterr()
    assert main(["energy", str(xyz), "--model", str(out), "--json"]) == 0
    io = capsys.readouterr()
    assert "DIFFERENCE" in io.err and f"E[{CC}] - E[{WB}]" in io.err
    assert json.loads(io.out)["energy"] == pytest.approx(pot.evaluate([ase.io.read(xyz)])[0].energy, abs=1e-9)


def test_base_model_delta_folder_loads_as_base_plus_delta(small_h5, tmp_path, capsys):
    from phai.cli import main

    base64 = phai.load("ani-1x", precision="float64")
    ts = load_data(str(small_h5), CC, base=base64)
    mem = load_data(str(small_h5), CC)
    # the targets are label - base, the base evaluated directly, one molecule at a time
    for c in (0, 17, len(ts) - 1):
        e_base = base64(mem.numbers[c], mem.positions[c], forces=False).energy
        assert ts.energies[c] == pytest.approx(mem.energies[c] - e_base, abs=1e-7)
    np.testing.assert_array_equal(StreamedTrainingSet(small_h5, CC, base=base64).energies, ts.energies)
    # the self energies are fitted to those differences, the networks' targets
    trainer = Trainer(TrainConfig(**{**TINY, "use_forces": False}), ts)
    np.testing.assert_array_equal(
        trainer.sae, fit_self_energies(trainer.train_set.numbers, trainer.train_set.energies, "HCNO") * EV_TO_HARTREE)

    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"train": {**TINY, "epochs": 1, "use_forces": False}}))
    out = tmp_path / "on_ani"
    assert main(["train", str(cfg), "--data", str(small_h5), "--energy-key", CC, "--base", "ani-1x",
                 "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["delta"] == {"base": {"kind": "model", "model": "ani-1x"},
                                                                       "target": CC}
    pot = phai.load(str(out))
    assert isinstance(pot, DeltaPotential)
    base, delta = phai.load("ani-1x"), pot.delta
    frames = _frames(small_h5, "ethanol")[:2]
    frames, rows = _energy_cli(frames, out, tmp_path, capsys)
    for row, rb, rd in zip(rows, base.evaluate(frames), delta.evaluate(frames)):
        assert row["energy"] == pytest.approx(rb.energy + rd.energy, abs=1e-9)
        np.testing.assert_allclose(row["forces"], rb.forces + rd.forces, atol=1e-9)
        assert row["energy_std"] == pytest.approx(np.hypot(rb.energy_std, rd.energy_std), abs=1e-9)


def test_streamed_set_names_the_group_and_field_of_a_bad_file(small_h5, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copy(small_h5, bad)
    with h5py.File(bad, "r+") as f:
        del f["ethanol"][WBF]
        f["ethanol"][WBF] = np.zeros((3, 9, 3))
    with pytest.raises(phai.InputError, match=r"group 'ethanol', field 'wb97x_dz.forces'.*shape"):
        StreamedTrainingSet(bad, WB, WBF)
    with h5py.File(bad, "r+") as f:
        f["water"]["coordinates"][2, 1, 0] = np.nan
    with pytest.raises(phai.InputError, match=r"group 'water', field 'coordinates'.*conformation 2"):
        StreamedTrainingSet(bad, WB)
    with pytest.raises(phai.InputError, match=r"group 'ammonia', field 'nope'.*missing"):
        StreamedTrainingSet(small_h5, WB, delta_from="nope")
    with pytest.raises(phai.InputError, match="only ANI HDF5"):
        load_data(__file__, WB, stream=True)
    # a NaN label drops that conformation, as read_ani_h5 does
    with h5py.File(bad, "r+") as f:
        f["water"]["coordinates"][2, 1, 0] = 0.0
        f["methane"][WB][4] = np.nan
    with pytest.warns(UserWarning, match="dropped 1 of"):
        ts = StreamedTrainingSet(bad, WB)
    assert len(ts) == 53 and list(ts.groups).count("methane") == 9


@pytest.fixture(scope="module")
def base_dir(small_h5, tmp_path_factory):
    """A model folder: a tiny ensemble trained (1 epoch) on the wB97X energies of ``small_h5``."""
    out = tmp_path_factory.mktemp("base") / "wb97x"
    Trainer(TrainConfig(**{**TINY, "epochs": 1, "use_forces": False}), load_data(str(small_h5), WB), out_dir=out).fit()
    return out


@pytest.fixture(scope="module")
def delta_dir(small_h5, base_dir, tmp_path_factory):
    """``phai train --base BASE_DIR``: a Δ ensemble on top of a trained model folder."""
    from phai.cli import main

    tmp = tmp_path_factory.mktemp("delta_on_dir")
    cfg = tmp / "run.json"
    cfg.write_text(json.dumps({"train": {**TINY, "epochs": 1, "use_forces": False, "seed": 5}}))
    out = tmp / "cc_on_wb"
    assert main(["train", str(cfg), "--data", str(small_h5), "--energy-key", CC, "--base", str(base_dir),
                 "--out", str(out)]) == 0
    return out


def test_delta_on_a_model_folder_loads_and_evaluates_as_base_plus_delta(small_h5, base_dir, delta_dir, tmp_path,
                                                                         capsys):
    from phai.potential import load_ani

    record = json.loads((delta_dir / "config.json").read_text())["delta"]
    assert record == {"base": {"kind": "model", "model": str(base_dir), "path": str(base_dir.resolve())},
                      "target": CC}
    pot = phai.load(str(delta_dir))
    assert isinstance(pot, DeltaPotential) and str(base_dir) in pot.name
    # base and Δ evaluated separately: the base folder and the Δ ensemble alone (its own weights)
    base, delta = phai.load(str(base_dir)), load_ani(str(delta_dir))
    assert not isinstance(base, DeltaPotential)
    frames = _frames(small_h5, "formamide")[:2] + _frames(small_h5, "propene")[:1]
    frames, rows = _energy_cli(frames, delta_dir, tmp_path, capsys)
    assert len(rows) == 3
    for row, r, rb, rd in zip(rows, pot.evaluate(frames), base.evaluate(frames), delta.evaluate(frames)):
        for e in (row["energy"], r.energy):
            assert e == pytest.approx(rb.energy + rd.energy, abs=1e-9)
        for f in (row["forces"], r.forces):
            np.testing.assert_allclose(f, rb.forces + rd.forces, atol=1e-9)
        assert abs(rd.energy) > 1e-3  # the Δ term is not negligible: the sums test something
    # the base folder gone: a clear error naming it
    moved = tmp_path / "moved"
    shutil.copytree(delta_dir, moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["delta"]["base"] = {"kind": "model", "model": str(tmp_path / "gone"), "path": str(tmp_path / "gone")}
    (moved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(phai.InputError, match="base model .*gone.* cannot be loaded"):
        phai.load(str(moved))


def test_delta_potential_in_ase_and_md(small_h5, base_dir, delta_dir, tmp_path):
    """base + Δ (float64) as an ASE calculator (forces = the parts' sums = -dE/dx by finite
    differences) and in ``phai md``: the jax-md energy function gives the same energies, and
    the forces the integrator used (recovered from the velocity-Verlet trajectory) are the
    base forces plus the Δ forces."""
    from phai.ase import PhaiCalculator
    from phai.cli import main
    from phai.md import FS
    from phai.potential import load_ani

    pot = phai.load(str(delta_dir), precision="float64")
    base, delta = phai.load(str(base_dir), precision="float64"), load_ani(str(delta_dir), "float64")
    atoms = _frames(small_h5, "water")[3]
    atoms.calc = PhaiCalculator(pot)
    f = atoms.get_forces()
    rb, rd = base(atoms.numbers, atoms.positions), delta(atoms.numbers, atoms.positions)
    assert atoms.get_potential_energy() == pytest.approx(rb.energy + rd.energy, abs=1e-10)
    np.testing.assert_allclose(f, rb.forces + rd.forces, rtol=0, atol=1e-10)
    assert np.abs(rd.forces).max() > 1e-2  # the Δ forces matter at the tolerances below
    h, fd = 1e-4, np.zeros_like(f)
    for a in range(len(atoms)):
        for k in range(3):
            e = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.calc = atoms.calc
                moved.positions[a, k] += sign * h
                e.append(moved.get_potential_energy())
            fd[a, k] = -(e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(fd, f, rtol=0, atol=1e-6)

    xyz, traj, log = tmp_path / "water.xyz", tmp_path / "md.extxyz", tmp_path / "md.csv"
    ase.io.write(xyz, _frames(small_h5, "water")[3])
    dt = 1.0
    assert main(["md", str(xyz), "--model", str(delta_dir), "--precision", "float64", "--ensemble", "nve",
                 "--dt", str(dt), "--steps", "3", "--log-every", "1", "--temperature", "300", "--traj", str(traj),
                 "--log", str(log), "--no-progress"]) == 0
    frames = ase.io.read(traj, ":")
    assert [fr.info["step"] for fr in frames] == [0, 1, 2, 3]
    for fr in frames:  # the jax-md energy function is base + Δ
        assert fr.info["potential_eV"] == pytest.approx(pot(fr.numbers, fr.positions).energy, abs=1e-6)
    # velocity Verlet: x1 = x0 + dt p0 / m + dt^2 F0 / (2 m), so F0 = 2 m (x1 - x0 - dt p0 / m) / dt^2
    # (the file keeps 8 decimals of Å: ~2e-5 eV/Å for oxygen at dt = 1 fs)
    tau = dt * FS
    for fr, nxt in itertools.pairwise(frames):
        m = fr.get_masses()[:, None]
        used = 2 * m * (nxt.positions - fr.positions - tau * fr.get_momenta() / m) / tau ** 2
        rb, rd = base(fr.numbers, fr.positions), delta(fr.numbers, fr.positions)
        # looser than float64: the trajectory stores positions to ~1e-8 Å, and 2 m / tau^2 magnifies
        # that rounding to ~1e-4 eV/Å
        np.testing.assert_allclose(used, rb.forces + rd.forces, rtol=0, atol=2e-4)
        assert np.abs(used - rb.forces).max() > 5e-3  # not the base forces alone
