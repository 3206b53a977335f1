"""Bad input gives a clear error naming the problem, never a silent NaN or a wrong species."""

import numpy as np
import pytest

import phai
from phai.errors import InputError, UnsupportedElementError
from phai.structures import atomic_numbers, bucket


@pytest.fixture(scope="module")
def pot():
    return phai.load("ani-1x")


WATER = (np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]))


@pytest.mark.parametrize("z,name", [(42, "Mo"), (16, "S"), (17, "Cl"), (26, "Fe")])
def test_unsupported_element_is_named(pot, z, name):
    numbers = np.array([6, z, 1])
    positions = np.array([[0.0, 0, 0], [1.5, 0, 0], [-1.0, 0, 0]])
    with pytest.raises(UnsupportedElementError, match=rf"\b{name}\b.*atom 1.*H, C, N, O"):
        pot(numbers, positions)


def test_symbols_and_numbers_agree(pot):
    z, r = WATER
    assert pot.energy(["O", "H", "H"], r) == pot.energy(z, r)
    with pytest.raises(InputError, match="one string"):
        pot("OHH", r)
    with pytest.raises(InputError, match="not a chemical symbol"):
        pot(["O", "Hx", "H"], r)
    with pytest.raises(InputError, match="not an atomic number"):
        pot([8, 0, 1], r)  # 0 is no element (and never a padding value in phai)
    with pytest.raises(InputError, match="not an atomic number"):
        pot([8, -1, 1], r)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coordinates(pot, bad):
    z, r = WATER
    r = r.copy()
    r[2, 1] = bad
    with pytest.raises(InputError, match=r"atom 2 \(H\).*non-finite coordinate y"):
        pot(z, r)


def test_wrong_shapes_and_empty(pot):
    z, r = WATER
    with pytest.raises(InputError, match=r"shape \(atoms, 3\).*\(3, 2\)"):
        pot(z, r[:, :2])
    with pytest.raises(InputError, match="3 atomic numbers but 2 positions"):
        pot(z, r[:2])
    with pytest.raises(InputError, match="empty"):
        pot([], np.zeros((0, 3)))


def test_overlapping_atoms(pot):
    z, r = WATER
    r = r.copy()
    r[2] = r[0] + 1e-9
    with pytest.raises(InputError, match=r"atoms 0 \(O\) and 2 \(H\).*on top of each other"):
        pot(z, r)


def test_charge_is_refused_by_a_charge_blind_model(pot):
    z, r = WATER
    with pytest.raises(InputError, match="neutral"):
        pot(z, r, charge=1)


def test_batch_error_names_the_structure(pot):
    z, r = WATER
    with pytest.raises(InputError, match="structure 1:"):
        pot.evaluate([(z, r), ([8, 1, 16], r), (z, r)])


def test_bad_precision_and_model_name():
    with pytest.raises(InputError, match="precision"):
        phai.load("ani-1x", precision="float16")
    with pytest.raises(phai.ModelFileError, match="unknown model 'ani-9x'.*ani-1x"):
        phai.load("ani-9x")


def test_atomic_numbers_helper():
    np.testing.assert_array_equal(atomic_numbers(["c", "H", "cl"]), [6, 1, 17])
    assert atomic_numbers(np.array([6.0, 1.0])).dtype == np.int64


def test_bucket_ladder():
    assert [bucket(n) for n in (1, 8, 9, 12, 13, 17, 25, 33, 49, 1000)] == [8, 8, 12, 12, 16, 24, 32, 48, 64, 1024]
    sizes = {bucket(n) for n in range(1, 2049)}
    assert len(sizes) <= 2 * np.log2(2048)
