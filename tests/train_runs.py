"""Training runs in fresh processes, killed with SIGKILL and resumed: the helper behind the
kill-and-resume tests of tests/test_train.py (in memory) and tests/test_train_stream.py
(streamed from an ANI HDF5 file).

Each run is a new Python process, so that the uninterrupted, the killed and the resumed
runs all compute under the same process state (a pytest process that has already run other
tests may round float32 differently: threads, loaded libraries). The persistent compilation
cache lets the three share their compiled programs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

SRC = str(Path(__file__).resolve().parents[1] / "src")

RUN = """
import json, os, signal, sys
sys.path.insert(0, {src!r})
import jax, numpy as np
import phai
phai.enable_compilation_cache()
from phai.commands.train import load_data
from phai.train import TrainConfig, Trainer
cfg = TrainConfig(**{tiny!r})
def stop(info):
    if info["step"] == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
ts = load_data({data!r}, {energy_key!r}, {forces_key!r}, stream={stream!r})
res = Trainer(cfg, ts, out_dir={out!r}).fit(stop)
leaves = jax.tree_util.tree_leaves((res.params, res.best_params, res.sae))
np.savez({result!r}, *[np.asarray(x) for x in leaves])
hist = [{{k: v for k, v in h.items() if k != "seconds"}} for h in res.history]  # wall time differs
facts = {{"set": type(ts).__name__, "tqdm": sorted(m for m in sys.modules if m.startswith("tqdm"))}}
open({result!r} + ".json", "w").write(json.dumps({{"history": hist, **facts}}))
"""


def start_training(out, result, *, tiny: dict, data, energy_key: str, forces_key: str | None = None,
                   stream: bool = False, kill_at: int = -1) -> subprocess.Popen:
    """Start ``Trainer(TrainConfig(**tiny), load_data(data, ...), out_dir=out).fit()`` in a new
    process (SIGKILLed by itself after step ``kill_at``, if given); on success it writes the
    final and best weights and the self energies to ``result`` (npz) and the history (without
    wall times), the training set's class and the tqdm modules loaded to ``result.json``."""
    code = RUN.format(src=SRC, tiny=tiny, kill_at=kill_at, data=str(data), energy_key=energy_key,
                      forces_key=forces_key, stream=stream, out=str(out), result=str(result))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC})


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate()
    return proc.returncode, err[-3000:]


def check_killed_run_resumes(tmp_path: Path, *, kill_at: int, n_batches: int, **run) -> dict:
    """Run training three times, each in a fresh process: uninterrupted; SIGKILLed after step
    ``kill_at`` (in epoch 2, after a mid-epoch checkpoint, ``n_batches`` steps per epoch); and
    the same command again, which resumes from the checkpoint. Asserts that the resumed run
    ends with bit-identical final and best weights, self energies and history. ``run``: the
    keywords of :func:`start_training`. Returns the uninterrupted run's ``result.json``."""
    full = start_training(tmp_path / "full", tmp_path / "full.npz", **run)
    out = tmp_path / "killed"
    killed = start_training(out, tmp_path / "never.npz", kill_at=kill_at, **run)  # both at once (2 cores)
    code, err = _finish(full)
    assert code == 0, err
    code, err = _finish(killed)
    assert code == -signal.SIGKILL, err
    assert not (tmp_path / "never.npz").exists()
    ck = json.loads((out / "checkpoint" / "config.json").read_text())["training"]
    assert ck["epoch"] == 1 and 0 < ck["batch"] < n_batches, ck  # killed mid-epoch, checkpoint mid-epoch
    assert ck["step"] < kill_at  # the last checkpoint is older than the kill: the resumed run redoes steps
    code, err = _finish(start_training(out, tmp_path / "resumed.npz", **run))  # the same command: it resumes
    assert code == 0, err
    facts = json.loads((tmp_path / "full.npz.json").read_text())
    assert json.loads((tmp_path / "resumed.npz.json").read_text()) == facts
    full_w, resumed_w = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert len(full_w.files) == len(resumed_w.files) > 0
    for k in full_w.files:
        assert np.array_equal(full_w[k], resumed_w[k]), k
    return facts


def kill_step(n_batches: int, checkpoint_every: int) -> int:
    """The first step after a mid-epoch checkpoint in epoch 2 (steps ``n_batches + 1 ...
    2 n_batches``): a kill there loses one step since the checkpoint."""
    step = (n_batches // checkpoint_every + 1) * checkpoint_every + 1
    assert step < 2 * n_batches, (n_batches, checkpoint_every)  # a checkpoint and a kill inside epoch 2
    return step
