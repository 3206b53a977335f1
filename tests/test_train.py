"""Training: losses, self energies, exact resume after SIGKILL, frozen layers, trained
folders loaded by phai.load and the CLI, Δ potentials, and the sharded step.

The fixture data set: molecules of tests/data/chno_molecules.extxyz, three randomly
displaced conformers each, labelled by the pretrained ANI-1x ensemble (a test fixture
only; real labels come from phai.labels). Networks are tiny (16-8 hidden units, 2 members)
so that each compilation takes seconds; the persistent compilation cache makes the runs
that share a shape reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ase
import ase.io
import jax
import numpy as np
import pytest
from train_runs import SRC, check_killed_run_resumes, kill_step

import phai
from phai.train import (
    DeltaPotential,
    TrainConfig,
    Trainer,
    TrainingSet,
    fit_self_energies,
)
from phai.train.sae import element_counts
from phai.units import EV_TO_KCALMOL

TINY = {"members": 2, "hidden": {s: [16, 8] for s in "HCNO"}, "epochs": 3, "batch_size": 8, "seed": 3, "lr": 1e-2,
        "progress": False, "plot": False, "checkpoint_every": 2, "use_forces": False}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, frames):
    """An extxyz file of labelled conformers (``ref_energy`` eV, ``ref_forces`` eV/Å)."""
    rng = np.random.default_rng(0)
    mols = [f for f in frames if f.info["kind"] == "mmff" and 3 <= len(f) <= 14][:14]
    out = []
    for a in mols:
        for _ in range(3):
            b = ase.Atoms(a.numbers, a.positions + rng.normal(0, 0.04, a.positions.shape))
            b.info["name"] = a.info["name"]
            out.append(b)
    res = phai.load("ani-1x").evaluate(out)
    for b, r in zip(out, res):
        b.info["ref_energy"] = r.energy
        b.arrays["ref_forces"] = r.forces
    path = tmp_path_factory.mktemp("train") / "labels.extxyz"
    ase.io.write(path, out)
    return path


def training_set(path) -> TrainingSet:
    from phai.commands.train import load_data

    return load_data(str(path), "ref_energy", "ref_forces")


@pytest.fixture(scope="module")
def full_run(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    trainer = Trainer(TrainConfig(**TINY), training_set(data_file), out_dir=out)
    res = trainer.fit()
    return trainer, res, out


def test_self_energies_recover_known_values():
    rng = np.random.default_rng(1)
    sae = np.array([-0.6, -38.08, -54.7, -75.19])
    numbers = [rng.choice([1, 6, 7, 8], size=rng.integers(3, 20), p=[0.5, 0.3, 0.1, 0.1]) for _ in range(200)]
    counts = element_counts(numbers, "HCNO")
    e = counts @ sae + rng.normal(0, 1e-6, len(numbers))
    np.testing.assert_allclose(fit_self_energies(numbers, e, "HCNO"), sae, atol=1e-6)
    # an element absent from the data gets 0, the others are still determined
    no_n = [z[z != 7] for z in numbers]
    fit = fit_self_energies(no_n, element_counts(no_n, "HCNO") @ sae, "HCNO")
    np.testing.assert_allclose(fit, [sae[0], sae[1], 0.0, sae[3]], atol=1e-8)
    with pytest.raises(phai.InputError, match="S"):
        fit_self_energies([np.array([16, 1])], [0.0], "HCNO")


def test_loss_decreases_and_logs(full_run):
    _trainer, res, out = full_run
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], losses
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert (out / "metrics.csv").read_text().startswith("epoch,")


def test_trained_folder_loads_with_phai_load_and_cli(full_run, data_file, capsys, tmp_path):
    trainer, res, out = full_run
    pot = phai.load(str(out))
    assert pot.members == 2
    for s, layers in res.best_params.items():  # the folder holds each member's best weights
        for l, layer in enumerate(layers):
            assert np.array_equal(np.asarray(pot.params[s][l]["W"]), layer["W"])
    np.testing.assert_array_equal(pot.sae, trainer.sae)
    frames = ase.io.read(data_file, index=":5")
    loaded = pot.evaluate(frames)
    from phai.cli import main

    five = tmp_path / "five.xyz"
    ase.io.write(five, frames)
    assert main(["energy", str(five), "--model", str(out), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["energy"] for r in rows] == pytest.approx([r.energy for r in loaded], abs=1e-6)


def test_evaluate_compiles_once_per_set_and_agrees_with_the_loaded_model(full_run):
    trainer, res, out = full_run
    ts = trainer.train_set  # batches of different compositions (and a short last one)
    before = trainer._eval._cache_size()
    first = trainer.evaluate(ts, params=res.best_params)
    assert trainer._eval._cache_size() - before <= 1  # one padded shape for the whole set
    assert trainer.evaluate(ts, params=res.best_params) == first
    assert trainer._eval._cache_size() - before <= 1  # and the same shape again: no recompilation
    # the ensemble energy errors are those of the saved folder (the best weights), evaluated by phai.load
    pred = np.array([r.energy for r in phai.load(str(out)).evaluate(list(zip(ts.numbers, ts.positions)),
                                                                    forces=False)])
    err = (pred - np.asarray(ts.energies)) * EV_TO_KCALMOL
    assert first["energy_rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-3)
    assert first["energy_mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-3)


def test_checkpoint_round_trips_bit_for_bit(full_run, tmp_path):
    trainer, _, _out = full_run
    saved = trainer._arrays()
    folder = trainer.save_checkpoint(tmp_path / "ck")
    fresh = Trainer(TrainConfig(**TINY), trainer.train_set, trainer.valid_set)
    fresh.restore(folder)
    restored = fresh._arrays()
    assert set(saved) == set(restored)
    for k in saved:
        assert saved[k].dtype == restored[k].dtype and np.array_equal(saved[k], restored[k]), k
    assert fresh.state["epoch"] == trainer.state["epoch"] and fresh.state["history"] == trainer.state["history"]



def test_run_killed_mid_epoch_resumes_to_the_same_weights(data_file, tmp_path):
    n_batches = -(-int(0.9 * 14 + 0.5) * 3 // TINY["batch_size"])
    facts = check_killed_run_resumes(tmp_path, kill_at=kill_step(n_batches, TINY["checkpoint_every"]),
                                     n_batches=n_batches, tiny=TINY, data=data_file, energy_key="ref_energy",
                                     forces_key="ref_forces")
    assert [h["epoch"] for h in facts["history"]] == [1, 2, 3] and facts["set"] == "TrainingSet"
    assert facts["tqdm"] == []  # progress=False: tqdm is not even imported


def test_frozen_layers_stay_exactly_unchanged(data_file):
    ts = training_set(data_file)
    cfg = TrainConfig(init="ani-1x", members=2, freeze_layers=(0, 2), epochs=1, batch_size=16, progress=False,
                      plot=False, use_forces=False, lr=1e-3)
    trainer = Trainer(cfg, ts)
    start = jax.tree_util.tree_map(np.array, jax.device_get(trainer.params))
    res = trainer.fit()
    for s, layers in res.params.items():
        for l, layer in enumerate(layers):
            for k in ("W", "b"):
                same = np.array_equal(layer[k], start[s][l][k])
                assert same == (l in (0, 2)), (s, l, k)
    pretrained = phai.load("ani-1x")
    np.testing.assert_array_equal(res.params["C"][0]["W"], np.asarray(pretrained.params["C"][0]["W"])[:2])
    # the self energies were refitted to the new data
    assert not np.allclose(trainer.sae, pretrained.sae)
    with pytest.raises(phai.InputError, match="layer 7"):
        Trainer(TrainConfig(init="ani-1x", members=2, freeze_layers=(7,), progress=False), ts)


def test_delta_potential_is_base_plus_delta(full_run, frames):
    _trainer, _, out = full_run
    base, delta = phai.load("ani-1x"), phai.load(str(out))
    both = DeltaPotential(base, delta)
    mol = frames[10]
    (r,), (rb,), (rd,) = both.evaluate([mol]), base.evaluate([mol]), delta.evaluate([mol])
    assert r.energy == pytest.approx(rb.energy + rd.energy, abs=1e-9)
    np.testing.assert_allclose(r.forces, rb.forces + rd.forces, atol=1e-9)
    assert both(mol).energy == pytest.approx(r.energy, abs=1e-9)


SHARDED = """
import sys
sys.path.insert(0, {src!r})
import phai
phai.enable_compilation_cache()
import jax, numpy as np
assert jax.device_count() == 2, jax.devices()
from phai.commands.train import load_data
from phai.train import TrainConfig, Trainer
cfg = TrainConfig(**{{**{tiny!r}, "num_devices": 2}})
t = Trainer(cfg, load_data({data!r}, "ref_energy", "ref_forces"))
t.warm_up()
sharded, nm = t.batch(t.train_set, t.epoch_order(0)[0])
assert len(sharded["R"].sharding.device_set) == 2
one = jax.devices()[0]
single = jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a), one), sharded)
params, opt = jax.device_get(t.params), jax.device_get(t.opt_state)
from phai.train.trainer import make_train_step
plain = make_train_step(t.spec, t.tx, force_weight=0.1, use_forces=False, l2={{}})  # no mesh, one device
p1, _, a1 = plain(jax.device_put(params, one), jax.device_put(opt, one), single, nm)
p2, _, a2 = t._step(t._replicate(params), t._replicate(opt), sharded, nm)
assert len(p2["C"][0]["W"].sharding.device_set) == 2  # weights replicated on both devices
# the same sums split over two devices: float32 rounding only
np.testing.assert_allclose(np.asarray(a1["esq"]), np.asarray(a2["esq"]), rtol=1e-5)
for x, y in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
print("ok")
"""


def test_sharded_step_equals_single_device(data_file):
    code = SHARDED.format(src=SRC, tiny=TINY, data=str(data_file))
    env = {**os.environ, "PYTHONPATH": SRC, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


MULTIHOST = """
import sys
sys.path.insert(0, {src!r})
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address={address!r}, num_processes=2, process_id={pid})
import numpy as np
import phai
phai.enable_compilation_cache()
from phai.commands.train import load_data
from phai.train import TrainConfig, Trainer
assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 2, 1)
cfg = TrainConfig(**{{**{tiny!r}, "epochs": 1, "num_devices": jax.device_count()}})
res = Trainer(cfg, load_data({data!r}, "ref_energy", "ref_forces"), out_dir={out!r}).fit()
np.savez({result!r}, *[np.asarray(x) for x in jax.tree_util.tree_leaves((res.params, res.best_params))])
"""


# ~35-48 s (two processes' start-up, gloo, compilation): run always, so CI checks the multi-host recipe
def test_two_processes_train_like_one_through_jax_distributed(data_file, tmp_path):
    """The multi-host recipe of phai.train.trainer, run for real: two processes on this machine
    (one CPU device each, gloo collectives) train one data-parallel ensemble for an epoch; they
    end with the same weights, those of a one-device run up to float32 rounding, and only
    process 0 writes."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST.format(
        src=SRC, address=address, pid=pid, tiny=TINY, data=str(data_file), out=str(tmp_path / f"out{pid}"),
        result=str(tmp_path / f"p{pid}.npz"))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": SRC, "XLA_FLAGS": ""}) for pid in (0, 1)]
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, err[-3000:]
    p0, p1 = np.load(tmp_path / "p0.npz"), np.load(tmp_path / "p1.npz")
    for k in p0.files:
        assert np.array_equal(p0[k], p1[k]), k  # replicated weights: the same on both hosts
    res = Trainer(TrainConfig(**{**TINY, "epochs": 1}), training_set(data_file)).fit()  # one process, one device
    one = jax.tree_util.tree_leaves((res.params, res.best_params))
    assert len(one) == len(p0.files)
    for k, x in zip(p0.files, one):
        np.testing.assert_allclose(p0[k], x, rtol=1e-4, atol=1e-5)  # the gradient sum split over two hosts
    assert (tmp_path / "out0" / "checkpoint" / "config.json").is_file()
    assert not (tmp_path / "out1").exists() or not any((tmp_path / "out1").iterdir())


def test_cli_trains_from_a_config_and_refuses_bad_input(data_file, tmp_path, capsys):
    from phai.cli import main

    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"data": {"path": str(data_file), "energy_key": "ref_energy"},
                               "train": {**TINY, "epochs": 1}}))
    out = tmp_path / "cli"
    assert main(["train", str(cfg), "--out", str(out), "--epochs", "1"]) == 0
    assert (out / "checkpoint" / "config.json").is_file()
    assert phai.load(str(out)).members == 2
    capsys.readouterr()
    assert main(["train", "--data", str(data_file), "--out", str(tmp_path / "x")]) == 2
    assert "energy field" in capsys.readouterr().err
    assert main(["train", "--data", str(data_file), "--energy-key", "ref_energy", "--freeze-layers", "a,b",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--freeze-layers" in capsys.readouterr().err
