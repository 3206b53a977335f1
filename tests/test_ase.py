"""The ASE calculator recomputes on every change and never reuses a stale result."""

import numpy as np
import pytest
from conftest import pick

import phai
from phai.ase import PhaiCalculator
from phai.errors import InputError


@pytest.fixture(scope="module")
def calc_pot():
    return phai.load("ani-1x")


def test_energy_forces_match_api(frames, calc_pot):
    atoms = pick(frames, "glycine").copy()
    atoms.calc = PhaiCalculator(calc_pot)
    ref = calc_pot(atoms)
    assert atoms.get_potential_energy() == pytest.approx(ref.energy, abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), ref.forces, atol=1e-9)
    assert atoms.calc.results["energy_std"] == pytest.approx(ref.energy_std)


def test_recomputes_after_moving_an_atom(frames, calc_pot):
    atoms = pick(frames, "ethanol").copy()
    atoms.calc = PhaiCalculator(calc_pot)
    e0 = atoms.get_potential_energy()
    atoms.positions[0, 0] += 0.05
    e1 = atoms.get_potential_energy()
    assert e1 != e0
    assert e1 == pytest.approx(calc_pot.energy(atoms), abs=1e-9)


def test_one_calculator_for_molecules_of_different_sizes(frames, calc_pot):
    calc = PhaiCalculator(calc_pot)
    for name in ("water", "caffeine", "methane", "tryptophan"):
        atoms = pick(frames, name).copy()
        atoms.calc = calc
        fresh = PhaiCalculator(calc_pot)
        assert atoms.get_potential_energy() == pytest.approx(fresh.get_potential_energy(atoms), abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), calc_pot(atoms).forces, atol=1e-9)


def test_changing_numbers_recomputes(frames, calc_pot):
    atoms = pick(frames, "methane").copy()
    atoms.calc = PhaiCalculator(calc_pot)
    e0 = atoms.get_potential_energy()
    atoms.numbers[0] = 7  # C -> N
    assert atoms.get_potential_energy() == pytest.approx(calc_pot.energy(atoms), abs=1e-9)
    assert atoms.get_potential_energy() != e0


def test_charge_change_is_seen(frames, calc_pot):
    atoms = pick(frames, "water").copy()
    atoms.calc = PhaiCalculator(calc_pot)
    atoms.get_potential_energy()
    atoms.info["charge"] = 1
    with pytest.raises(InputError, match="neutral"):
        atoms.get_potential_energy()


def test_calculator_by_name_and_ase_optimizer(frames):
    from ase.optimize import BFGS

    atoms = pick(frames, "formamide", "distorted").copy()
    atoms.calc = PhaiCalculator(model="ani-1x", precision="float64")
    e0 = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < 0.05
