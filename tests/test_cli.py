"""The `phai` command: JSON Lines contract, tables, one-line errors with non-zero exit."""

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

import phai
from phai.cli import main

DATA = Path(__file__).parent / "data"


def run(args):
    """Run the console entry point in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "phai.cli", *args], capture_output=True, text=True, check=False)


def test_energy_json_lines_in_input_order(tmp_path, frames):
    a = tmp_path / "a.extxyz"
    b = tmp_path / "b.xyz"
    ase.io.write(a, frames[:3])
    ase.io.write(b, frames[8], format="xyz")
    proc = run(["energy", str(a), str(b), "--json"])
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(d["file"], d["frame"]) for d in lines] == [(str(a), 0), (str(a), 1), (str(a), 2), (str(b), 0)]
    pot = phai.load("ani-1x")
    refs = pot.evaluate(frames[:3] + [frames[8]])  # the same padded batch the command runs
    for d, frame, ref in zip(lines, frames[:3] + [frames[8]], refs):
        assert set(d) >= {"energy", "forces", "energy_std"}
        assert d["energy"] == pytest.approx(ref.energy, abs=1e-9)
        np.testing.assert_allclose(np.array(d["forces"]), ref.forces, atol=1e-9)
        assert np.array(d["forces"]).shape == (len(frame), 3)
        assert d["energy_std"] == pytest.approx(ref.energy_std, abs=1e-9)


def test_energy_float64_and_ani1ccx(capsys, frames, tmp_path):
    f = tmp_path / "m.xyz"
    ase.io.write(f, frames[8], format="xyz")
    assert main(["energy", str(f), "--model", "ani-1ccx", "--precision", "float64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    import jax

    with jax.enable_x64(True):
        ref = phai.load("ani-1ccx", precision="float64")(frames[8])
    assert out["energy"] == pytest.approx(ref.energy, abs=1e-9)


def test_table_output(capsys):
    assert main(["energy", str(DATA / "chno_molecules.extxyz")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "energy / eV" in out[0]
    assert len(out) == 1 + 44


@pytest.mark.parametrize("content,match", [
    ("2\n\nFe 0 0 0\nH 0 0 1.5\n", "does not support element.*Fe"),
    ("2\n\nC 0 0 0\nH 0 0 0\n", "on top of each other"),
    ("2\n\nC 0 0 nan\nH 0 0 1\n", "non-finite"),
    ("0\n\n", "empty"),
    ("this is not a structure file\n", "cannot read"),
])
def test_bad_input_one_line_error(tmp_path, content, match):
    f = tmp_path / "bad.xyz"
    f.write_text(content)
    proc = run(["energy", str(f)])
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("phai: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(match, err[0]), err[0]


def test_missing_file_and_unknown_model(tmp_path):
    proc = run(["energy", str(tmp_path / "nope.xyz")])
    assert proc.returncode == 2 and "no such file" in proc.stderr
    f = tmp_path / "w.xyz"
    f.write_text("3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    proc = run(["energy", str(f), "--model", "nonsense"])
    assert proc.returncode == 2 and "unknown model" in proc.stderr and proc.stderr.count("\n") == 1


def test_demo_runs(capsys):
    assert main(["demo", "--molecule", "ethanol"]) == 0
    out = capsys.readouterr().out
    assert "energy" in out and "ensemble std" in out


def test_md_command_defaults_match_the_driver():
    """phai.commands.md repeats phai.md.run's defaults so that `phai --help` need not import jax-md."""
    from phai.commands import md as md_command
    from phai.md import run as md_run

    assert md_command.DEFAULT_FRICTION == md_run.DEFAULT_FRICTION
    assert md_command.DEFAULT_TAU == md_run.DEFAULT_TAU
    assert md_command.DEFAULT_MAX_ENERGY_JUMP == md_run.DEFAULT_MAX_ENERGY_JUMP


def test_main_leaves_jax_precision_as_it_found_it(tmp_path):
    import jax

    from phai.cli import main

    before = jax.config.jax_enable_x64
    f = tmp_path / "w.xyz"
    f.write_text("3\n\nO 0 0 0.1173\nH 0 0.7572 -0.4692\nH 0 -0.7572 -0.4692\n")
    assert main(["energy", str(f), "--precision", "float64", "--json"]) == 0
    assert jax.config.jax_enable_x64 == before
    # called inside a float64 context (as tests with the x64 fixture do), it must not turn
    # float64 on globally once the context ends (it did: later float32 tests got float64)
    with jax.enable_x64(True):
        assert main(["energy", str(f), "--precision", "float64", "--json"]) == 0
        assert main(["energy", str(f), "--json"]) == 0
    assert jax.config.jax_enable_x64 == before
