"""The simulation commands end to end: ``phai optimize``, ``vib``, ``scan``, ``md`` and the
simulation part of ``phai demo`` (files written, exact CSV columns, one-line errors with
exit status 2, divergence caught with the files kept)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule

import phai
from phai.cli import main

ETHANOL = str(Path(phai.__file__).parent / "data" / "molecules" / "ethanol.xyz")
LOG_COLUMNS = ["time_fs", "potential_eV", "kinetic_eV", "total_eV", "temperature_K"]


def _csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("phai: error: ") and match in err[0], err


def test_optimize_then_vib(tmp_path, capsys):
    out = tmp_path / "eth-opt.extxyz"
    assert main(["optimize", ETHANOL, "--fmax", "0.001", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "converged        yes" in text
    atoms = ase.io.read(out)
    assert atoms.info["converged"] and atoms.info["fmax_eV_per_A"] < 1e-3
    pot = phai.load("ani-1x", precision="float64")
    assert np.max(np.linalg.norm(pot(atoms).forces, axis=1)) < 1e-3
    assert pot(atoms).energy < pot(ase.io.read(ETHANOL)).energy
    assert main(["vib", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["frequencies_cm1"]) == 3 * len(atoms) - 6 and res["num_imaginary"] == 0
    assert 3500 < max(res["frequencies_cm1"]) < 4100  # O-H stretch
    assert 2.0 < res["zpe_eV"] < 2.5
    assert main(["vib", str(out)]) == 0
    assert "zero-point energy" in capsys.readouterr().out


def test_optimize_not_converged_exits_1(tmp_path, capsys):
    assert main(["optimize", ETHANOL, "--steps", "2", "--fmax", "1e-6", "--out", str(tmp_path / "o.extxyz")]) == 1
    assert "converged        no" in capsys.readouterr().out
    assert (tmp_path / "o.extxyz").is_file()


def test_scan_writes_table_and_plot(tmp_path, capsys):
    path = tmp_path / "ethane.xyz"
    ase.io.write(path, molecule("C2H6"))
    table, plot = tmp_path / "scan.csv", tmp_path / "scan.png"
    assert main(["scan", str(path), "--dihedral", "2", "0", "1", "5", "--step", "120", "--out", str(table),
                 "--plot", str(plot), "--no-progress"]) == 0
    header, rows = _csv(table)
    assert header == ["angle_deg", "energy_eV", "relative_kcal_mol"]
    np.testing.assert_allclose(rows[:, 0], [0, 120, 240])
    np.testing.assert_allclose(rows[:, 2], 0.0, atol=0.05)  # three eclipsed points: the same energy
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_md_writes_trajectory_and_log(tmp_path, capsys):
    traj, log = tmp_path / "md.extxyz", tmp_path / "md.csv"
    argv = ["md", ETHANOL, "--ensemble", "nvt", "--temperature", "300", "--dt", "0.5", "--steps", "40",
            "--log-every", "10", "--traj", str(traj), "--log", str(log), "--seed", "2", "--no-progress"]
    assert main(argv) == 0
    assert "temperature" in capsys.readouterr().out
    header, rows = _csv(log)
    assert header == LOG_COLUMNS
    assert rows.shape == (5, 5) and np.all(np.isfinite(rows))
    np.testing.assert_allclose(rows[:, 0], [0, 5, 10, 15, 20])
    frames = ase.io.read(traj, index=":")
    assert len(frames) == 5
    assert [f.info["step"] for f in frames] == [0, 10, 20, 30, 40]
    assert np.all(np.isfinite(frames[-1].get_momenta()))


@pytest.mark.parametrize("extra,match", [
    (["--steps", "0"], "steps"),
    (["--dt", "0"], "time step"),
    (["--dt", "10"], "above 5.0 fs"),
    (["--temperature", "-5"], "temperature"),
    (["--temperature", "1e7"], "temperature"),
    (["--log-every", "-1"], "log_every"),
])
def test_md_bad_options(extra, match, tmp_path, capsys):
    _one_line_error(capsys, ["md", ETHANOL, "--traj", str(tmp_path / "t.extxyz"), "--log", str(tmp_path / "t.csv"),
                             "--no-progress", *extra], match)
    assert not (tmp_path / "t.csv").exists()  # nothing written for bad options


def test_other_bad_input(tmp_path, capsys):
    _one_line_error(capsys, ["md", str(tmp_path / "missing.xyz")], "no such file")
    _one_line_error(capsys, ["scan", ETHANOL, "--dihedral", "0", "1", "2", "99", "--no-progress"], "0-based")
    _one_line_error(capsys, ["optimize", ETHANOL, "--fmax", "-1"], "fmax")
    _one_line_error(capsys, ["optimize", ETHANOL, "--frame", "3"], "frame")
    _one_line_error(capsys, ["scan", ETHANOL, "--dihedral", "0", "1", "2", "3", "--step", "0", "--no-progress"],
                    "step")


def test_md_divergence_keeps_files(tmp_path, capsys):
    traj, log = tmp_path / "bad.extxyz", tmp_path / "bad.csv"
    argv = ["md", ETHANOL, "--ensemble", "nve", "--temperature", "600", "--dt", "5", "--steps", "400",
            "--log-every", "5", "--traj", str(traj), "--log", str(log), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("phai: warning: time step 5")  # dt above 2 fs warns first
    assert len(err) == 2 and err[1].startswith("phai: error: ") and "step" in err[1]
    header, rows = _csv(log)
    assert header == LOG_COLUMNS and len(rows) >= 1 and np.all(np.isfinite(rows))
    assert len(ase.io.read(traj, index=":")) == len(rows)


def test_demo_simulation_part(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--molecule", "ethanol", "--md-steps", "40", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ensemble std" in text and "NVT (Langevin)" in text and "NVE continuation" in text
    for name in ("optimized.extxyz", "trajectory.extxyz", "md.csv", "nve.csv", "energy.png", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimization_converged"] and summary["optimized_max_force_eV_per_A"] < 0.01
    assert summary["optimized_energy_eV"] < summary["initial_energy_eV"]
    assert np.isfinite(summary["nve_drift_meV_per_atom"])
    assert _csv(out / "md.csv")[0] == LOG_COLUMNS
