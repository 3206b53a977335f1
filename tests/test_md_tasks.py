"""Simulation tasks (phai.md): optimization, vibrations against ASE, relaxed torsion scans,
the MD driver (energy conservation, logs, divergence, bad options).

Oracles: ASE's finite-difference ``Vibrations`` on the same potential (through
``PhaiCalculator``); the potential's own forces for stationarity; the ethane torsion's
threefold symmetry.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule

import phai
from phai.errors import InputError
from phai.md.optimize import max_force, optimize
from phai.md.run import (
    LOG_COLUMNS,
    MDSettings,
    TrajectoryDiverged,
    maxwell_boltzmann_momenta,
    run_md,
)
from phai.md.scan import check_dihedral, relaxed_scan, scan_angles
from phai.md.vibrations import harmonic_analysis, rigid_body_basis, vibrations

MOLECULES = Path(phai.__file__).parent / "data" / "molecules"


@pytest.fixture(scope="module")
def pot64():
    return phai.load("ani-1x", precision="float64")


@pytest.fixture(scope="module")
def pot32():
    return phai.load("ani-1x")


@pytest.fixture(scope="module")
def ethanol():
    return ase.io.read(MOLECULES / "ethanol.xyz")


@pytest.fixture(scope="module")
def ethanol_min(ethanol, pot64):
    """Ethanol relaxed tightly (float64), for the vibrational analysis."""
    res = optimize(ethanol, pot64, fmax=1e-4, steps=2000)
    assert res.converged
    return res.atoms


# ----------------------------------------------------------------------------- optimization


def test_optimize_reaches_a_stationary_point(ethanol, pot64):
    res = optimize(ethanol, pot64, fmax=1e-3, steps=500)
    assert res.converged and 0 < res.steps < 500
    assert res.energy < res.initial_energy - 1e-3  # the bundled MMFF geometry is not an ANI minimum
    again = pot64(res.atoms)  # independent evaluation of the returned structure
    assert max_force(again.forces) < 1e-3
    assert again.energy == pytest.approx(res.energy, abs=1e-9)
    assert res.energies[0] == pytest.approx(res.initial_energy) and res.energies[-1] == pytest.approx(res.energy)
    assert np.array_equal(ethanol.positions, ase.io.read(MOLECULES / "ethanol.xyz").positions)  # input untouched


def test_optimize_reports_non_convergence_and_bad_options(ethanol, pot64):
    res = optimize(ethanol, pot64, fmax=1e-6, steps=3)
    assert not res.converged and res.steps == 3 and res.fmax > 1e-6
    for kw in ({"fmax": 0.0}, {"fmax": float("nan")}, {"steps": -1}):
        with pytest.raises(InputError):
            optimize(ethanol, pot64, **kw)


# ----------------------------------------------------------------------------- vibrations


def test_frequencies_agree_with_ase_finite_differences(ethanol_min, pot64, tmp_path):
    """Autodiff-Hessian frequencies against ASE's ``Vibrations`` (central differences).

    Step: ANI's CELU activations have a second derivative that jumps where a hidden unit's
    input crosses zero, so the Hessian is only piecewise smooth; finite differences average
    over these kinks. With ASE's default step (0.01 Å) the O-H stretch comes out 6-13 cm^-1
    off (measured); with 1e-5 Å the finite-difference Hessian agrees with autodiff to ~1e-6
    eV/Å² (float64 force noise ~1e-12 eV/Å / 1e-5 Å = 1e-7): frequencies agree to 3e-5 cm^-1
    (measured); the tolerance, 5e-3 cm^-1, leaves room for other geometries.
    ASE does not project out translations and rotations: its six lowest modes (|f| < 20
    cm^-1 here) are dropped before comparing.
    """
    from ase.vibrations import Vibrations

    from phai.ase import PhaiCalculator

    ours = vibrations(ethanol_min, pot64)
    n = len(ethanol_min)
    assert len(ours.frequencies) == 3 * n - 6 and not ours.linear and ours.num_imaginary == 0
    atoms = ethanol_min.copy()
    atoms.calc = PhaiCalculator(pot64)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        vib = Vibrations(atoms, delta=1e-5, nfree=2, name="vib")
        vib.run()
        ase_freqs = np.sort(vib.get_frequencies().real)
        ase_energies = np.sort(vib.get_energies().real)
        h_fd = vib.get_vibrations().get_hessian_2d()
    finally:
        os.chdir(cwd)
    assert np.all(np.abs(ase_freqs[:6]) < 20.0)
    np.testing.assert_allclose(ours.frequencies, ase_freqs[6:], rtol=0, atol=5e-3)  # measured 3e-5 cm^-1
    # zero-point energy: ours (3A-6 modes) against ASE's energies of the same modes (measured 7e-9 eV)
    assert ours.zpe == pytest.approx(0.5 * np.sum(ase_energies[6:]), abs=1e-6)
    assert ours.zpe == pytest.approx(vib.get_zero_point_energy(), abs=2e-3)  # ASE adds the rigid modes (< 20 cm^-1)
    # the analysis itself (projection, mass weighting, units) on ASE's own Hessian
    on_fd = harmonic_analysis(h_fd, ethanol_min.positions, ethanol_min.get_masses())
    np.testing.assert_allclose(on_fd.frequencies, ase_freqs[6:], rtol=0, atol=0.05)
    np.testing.assert_allclose(ours.hessian, h_fd, rtol=0, atol=1e-4)


def test_harmonic_analysis_linear_and_imaginary():
    pos = np.array([[0.0, 0.0, -1.16], [0.0, 0.0, 0.0], [0.0, 0.0, 1.16]])
    basis, linear = rigid_body_basis(pos, np.array([16.0, 12.0, 16.0]))
    assert linear and basis.shape == (9, 5)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-12)
    # a diatomic spring along x with negative curvature: one imaginary mode, reported negative
    k = -10.0
    h = np.zeros((6, 6))
    h[0, 0] = h[3, 3] = k
    h[0, 3] = h[3, 0] = -k
    res = harmonic_analysis(h, np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.array([1.0, 1.0]))
    assert res.linear and len(res.frequencies) == 1
    from ase import units

    mu = 0.5
    expected = -units._hbar * 1e10 * np.sqrt(-k / mu / (units._e * units._amu)) / units.invcm
    assert res.frequencies[0] == pytest.approx(expected, rel=1e-12) and res.num_imaginary == 1
    assert res.zpe == 0.0
    with pytest.raises(InputError):
        harmonic_analysis(np.zeros((5, 5)), np.zeros((2, 3)), np.ones(2))


# ----------------------------------------------------------------------------- torsion scans


def test_relaxed_ethane_scan_is_threefold(pot64):
    ethane = molecule("C2H6")  # C0, C1; H2-H4 on C0, H5-H7 on C1
    res = relaxed_scan(ethane, (2, 0, 1, 5), scan_angles(0, 360, 60), pot64, fmax=0.01)
    assert res.converged.all() and np.all(np.isfinite(res.energies))
    dev = (res.achieved - res.angles + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(dev, 0.0, atol=1e-3)  # the constraint holds while the rest relaxes
    for s in res.structures:  # and the constrained structures are really relaxed otherwise
        assert len(s) == 8
    rel = res.relative_kcal_mol  # angles 0, 60, ..., 300: eclipsed at 0/120/240, staggered at 60/180/300
    np.testing.assert_allclose(rel[[0, 2, 4]], rel[0], atol=0.05)
    np.testing.assert_allclose(rel[[1, 3, 5]], 0.0, atol=0.05)
    assert 2.0 < rel[0] < 4.5  # ANI-1x ~3.2 kcal/mol; experiment 2.9
    assert res.table().splitlines()[0] == "angle_deg,energy_eV,relative_kcal_mol"


def test_scan_angles_and_bad_dihedrals():
    np.testing.assert_allclose(scan_angles(0, 360, 15), np.arange(0, 360, 15))
    np.testing.assert_allclose(scan_angles(0, 180, 60), [0, 60, 120, 180])
    np.testing.assert_allclose(scan_angles(180, -180, -90), [180, 90, 0, -90])
    for bad in ((0, 360, 0), (0, 360, -15), (0, float("inf"), 15)):
        with pytest.raises(InputError):
            scan_angles(*bad)
    ethane = molecule("C2H6")
    for bad in ((2, 0, 1), (2, 0, 1, 8), (2, 0, 0, 5), (-1, 0, 1, 5)):
        with pytest.raises(InputError):
            check_dihedral(ethane, bad)
    benzene = molecule("C6H6")
    with pytest.raises(InputError, match="ring"):
        relaxed_scan(benzene, (5, 0, 1, 2), [0.0], "ani-1x")


# ----------------------------------------------------------------------------- molecular dynamics


def _read_log(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def test_nve_float64_conserves_energy_and_logs(ethanol_min, pot64, tmp_path):
    traj, log = tmp_path / "t.extxyz", tmp_path / "t.csv"
    res = run_md(ethanol_min, pot64, trajectory=traj, log=log, ensemble="nve", temperature=300, dt=0.5,
                 steps=400, log_every=50, seed=3)
    header, rows = _read_log(log)
    assert tuple(header) == LOG_COLUMNS
    assert rows.shape == (9, 5) and np.all(np.isfinite(rows))
    np.testing.assert_allclose(rows[:, 0], np.arange(0, 201, 25))
    np.testing.assert_allclose(rows[:, 3], rows[:, 1] + rows[:, 2], atol=1e-7)
    frames = ase.io.read(traj, index=":")
    assert len(frames) == 9 and frames[-1].info["step"] == 400
    np.testing.assert_allclose(frames[-1].positions, res.atoms.positions, atol=1e-6)
    # 0.2 ps of velocity Verlet at 0.5 fs in float64: the total energy fluctuates by ~0.25 meV/atom
    # (measured; Verlet's O(dt^2) oscillation with fast C-H/O-H stretches) and does not drift; the
    # temperature sits near half the initial one (equipartition from a minimum)
    dev = np.max(np.abs(res.total - res.total[0])) / len(ethanol_min)
    assert dev < 1e-3
    assert abs(res.drift_per_atom) < 5e-4
    assert 50 < np.mean(res.temperature[1:]) < 300


def test_maxwell_boltzmann_momenta_are_seeded_and_momentum_free(ethanol):
    m = ethanol.get_masses()
    p = maxwell_boltzmann_momenta(m, 300.0, seed=7)
    np.testing.assert_allclose(p.sum(axis=0), 0.0, atol=1e-12)
    np.testing.assert_array_equal(p, maxwell_boltzmann_momenta(m, 300.0, seed=7))
    assert not np.array_equal(p, maxwell_boltzmann_momenta(m, 300.0, seed=8))
    big = maxwell_boltzmann_momenta(np.full(3000, 12.0), 300.0, seed=0)  # equipartition, 9000 dof
    from ase import units

    t = np.sum(big ** 2 / 12.0) / ((3 * 3000 - 3) * units.kB)
    assert t == pytest.approx(300.0, rel=0.05)


@pytest.mark.parametrize("thermostat", ["langevin", "nose-hoover"])
def test_nvt_runs_and_is_reproducible(ethanol, pot32, thermostat, tmp_path):
    kw = {"ensemble": "nvt", "thermostat": thermostat, "temperature": 300, "dt": 0.5, "steps": 60,
          "log_every": 20, "seed": 1}
    a = run_md(ethanol, pot32, log=tmp_path / "a.csv", **kw)
    b = run_md(ethanol, pot32, **kw)
    assert len(a.steps) == 4 and np.all(np.isfinite(a.total))
    np.testing.assert_array_equal(a.potential, b.potential)  # same seed, same trajectory
    assert tuple(_read_log(tmp_path / "a.csv")[0]) == LOG_COLUMNS


def test_divergence_is_caught_and_files_are_kept(ethanol, pot32, tmp_path):
    traj, log = tmp_path / "bad.extxyz", tmp_path / "bad.csv"
    with pytest.warns(UserWarning, match="above 2.0 fs"), pytest.raises(TrajectoryDiverged) as err:
        run_md(ethanol, pot32, trajectory=traj, log=log, ensemble="nve", temperature=600, dt=5.0, steps=400,
               log_every=5, seed=0)
    exc = err.value
    assert f"step {exc.step}" in str(exc) and 0 < exc.step <= 400
    kept = len(exc.result.steps)
    assert kept >= 1 and exc.result.steps[-1] < exc.step
    _, rows = _read_log(log)
    assert len(rows) == kept and np.all(np.isfinite(rows))
    assert len(ase.io.read(traj, index=":")) == kept


@pytest.mark.parametrize("options,match", [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": 1e6}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"ensemble": "nvt", "temperature": 0.0}, "above 0 K"),
    ({"dt": 0.0}, "time step"),
    ({"dt": -0.5}, "time step"),
    ({"dt": 6.0}, "above 5.0 fs"),
    ({"steps": 0}, "steps"),
    ({"log_every": 0}, "log_every"),
    ({"ensemble": "npt"}, "ensemble"),
    ({"friction": 0.0}, "friction"),
    ({"thermostat": "nose-hoover", "tau": 0.1}, "tau"),
])
def test_bad_md_options(options, match):
    with pytest.raises(InputError, match=match):
        MDSettings(**options).check()


def test_md_rejects_mixed_periodicity(ethanol, pot32):
    atoms = ethanol.copy()
    atoms.cell = [20.0, 20.0, 20.0]
    atoms.pbc = [True, True, False]
    with pytest.raises(InputError, match="mixed periodicity"):
        run_md(atoms, pot32, steps=10, log_every=5)


def _water_grid(n: int, spacing: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    water, atoms = molecule("H2O"), None
    for idx in np.ndindex(n, n, n):
        m = water.copy()
        m.rotate(rng.uniform(0, 360), rng.normal(size=3))
        m.translate(np.array(idx) * spacing + 0.5 * spacing)
        atoms = m if atoms is None else atoms + m
    atoms.cell = [n * spacing] * 3
    atoms.pbc = True
    return atoms


def test_periodic_md_uses_the_cell(pot32, tmp_path):
    """A periodic water box (27 molecules, 10.5 Å cell) through the neighbor-list energy:
    positions stay wrapped in the cell, the log is finite and NVE holds the total energy."""
    box = _water_grid(3, 3.5)
    box.positions += [0.0, 0.0, 6.0]  # atoms outside the cell are wrapped, not rejected
    res = run_md(box, pot32, trajectory=tmp_path / "w.extxyz", ensemble="nve", temperature=300, dt=0.5,
                 steps=20, log_every=10, seed=0)
    assert np.all(np.isfinite(res.total))
    # float32 total energies of ~-18,700 eV carry ~2 meV rounding; allow 1 meV/atom over 10 fs
    assert np.max(np.abs(res.total - res.total[0])) / len(box) < 1e-3
    frac = ase.io.read(tmp_path / "w.extxyz", index=-1).get_scaled_positions(wrap=False)
    assert np.all((frac > -1e-6) & (frac < 1 + 1e-6))
    small = _water_grid(2, 3.5)  # 7 Å: below twice the 5.2 Å cutoff
    with pytest.raises(InputError):
        run_md(small, pot32, steps=10, log_every=5)
