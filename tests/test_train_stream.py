"""Streamed training from an ANI HDF5 file, and Δ-learning folders.

Data: the committed CHNO set (tests/data/chno_labels/chno_labels.h5: 24 molecules, 8 or 10
conformations each, wB97X/6-31G(d) energies and forces, CCSD(T)/cc-pVDZ energies, Hartree).
Networks are tiny (16-8 hidden units, 2 members) as in tests/test_train.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase
import ase.io
import h5py
import jax
import numpy as np
import pytest

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


class Interrupt(Exception):
    pass


def test_streamed_run_interrupted_mid_epoch_resumes_to_the_same_weights(runs, tmp_path):
    full = runs[3]
    n_batches = len(Trainer(TrainConfig(**TINY), StreamedTrainingSet(H5, WB, WBF)).epoch_order(0))

    def stop(info):  # stands for SIGKILL one step after the mid-epoch checkpoint of epoch 2
        if info["step"] > n_batches and info["step"] % TINY["checkpoint_every"] == 1:
            raise Interrupt

    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        Trainer(TrainConfig(**TINY), StreamedTrainingSet(H5, WB, WBF), out_dir=out).fit(stop)
    ck = json.loads((out / "checkpoint" / "config.json").read_text())["training"]
    assert ck["epoch"] == 1 and 0 < ck["batch"] < n_batches
    resumed = Trainer(TrainConfig(**TINY), StreamedTrainingSet(H5, WB, WBF), out_dir=out)
    assert resumed.state["step"] == ck["step"]
    res = resumed.fit()
    assert _history(res) == _history(full)
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(res), _leaves(full)))


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    """Six molecules of the committed set (an exact copy of their groups)."""
    path = tmp_path_factory.mktemp("delta") / "six.h5"
    with h5py.File(H5) as src, h5py.File(path, "w") as dst:
        for name in ("ammonia", "ethanol", "formamide", "methane", "propene", "water"):
            src.copy(src[name], dst, name)
    return path


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
    xyz = tmp_path / "ethanol.xyz"
    ase.io.write(xyz, frames)
    frames = ase.io.read(xyz, ":")  # what the command reads (the file rounds the coordinates)
    capsys.readouterr()
    assert main(["energy", str(xyz), "--model", str(out), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
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
