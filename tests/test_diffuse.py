"""The kinetic energy of the most diffuse orbital of a basis' diffuse s functions
(:mod:`phai.physics.diffuse`), the term a Δ model on 6-31+G(d) labels fits for unbound anions.

Oracles: PySCF's own basis library (the exponent table) and its one-electron integrals (the
overlap and kinetic-energy matrices of the same functions, solved by SciPy), the closed form
of one Gaussian alone, and central finite differences.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.linalg

from phai.errors import InputError
from phai.physics.diffuse import (
    BOHR_PER_ANGSTROM,
    DIFFUSE_S_631PLUS,
    HARTREE_EV,
    diffuse_exponents,
    diffuse_orbital_energy,
)
from phai.train import aimnet_me as me

DATA = Path(__file__).parent / "data" / "charge_labels" / "charge_labels.h5"


@pytest.fixture(scope="module")
def molecules():
    cs = me.read_charge_h5(DATA)
    names = ("water", "ammonia", "methane", "acetone", "urea", "pyrazole")
    out = []
    for name in names:
        k = int(np.flatnonzero((cs.molecule == name) & (cs.charge == 0))[0])
        out.append((name, np.asarray(cs.numbers[k]), np.asarray(cs.positions[k], np.float64)))
    return out


def test_exponents_are_the_diffuse_shells_of_pyscf_631plusgd():
    gto = pytest.importorskip("pyscf.gto")
    for z in range(1, 21):
        sym = gto.param.ELEMENTS[z]
        plus, plain = gto.basis.load("6-31+g*", sym), gto.basis.load("6-31g*", sym)

        def s_exponents(basis):
            return {round(p[0], 8) for shell in basis if shell[0] == 0 for p in shell[1:]}

        extra = sorted(s_exponents(plus) - s_exponents(plain))
        assert extra == ([DIFFUSE_S_631PLUS[z]] if z in DIFFUSE_S_631PLUS else []), sym
    assert 1 not in DIFFUSE_S_631PLUS         # 6-31+G(d) has no diffuse functions on hydrogen


def test_one_function_is_three_halves_alpha_and_padding_is_inert(x64):
    r = np.array([[0.3, -0.2, 1.0]])
    for a in (0.0438, 0.0845):
        assert abs(float(diffuse_orbital_energy(r, np.array([a]))) - 1.5 * a * HARTREE_EV) < 1e-12
    # atoms without a function (H, padding) change nothing, wherever they are
    r3 = np.array([[0.3, -0.2, 1.0], [0.3, -0.2, 1.0], [5.0, 1.0, 0.0]])
    assert abs(float(diffuse_orbital_energy(r3, np.array([0.0845, 0.0, 0.0]))) - 1.5 * 0.0845 * HARTREE_EV) < 1e-12
    assert float(diffuse_orbital_energy(r3, np.zeros(3))) == 0.0
    with pytest.raises(InputError, match=r"\[N, 3\] and alpha \[N\]"):
        diffuse_orbital_energy(r3, np.zeros(2))


def test_matches_pyscf_integrals_and_lies_below_every_single_function(molecules, x64):
    gto = pytest.importorskip("pyscf.gto")
    for name, z, r in molecules:
        a = diffuse_exponents(z)
        on = a > 0
        mol = gto.Mole()
        mol.atom = [(gto.param.ELEMENTS[int(zi)], tuple(x)) for zi, x in zip(z[on], r[on])]
        mol.basis = {gto.param.ELEMENTS[int(zi)]: [[0, [DIFFUSE_S_631PLUS[int(zi)], 1.0]]] for zi in z[on]}
        mol.unit = "Angstrom"
        mol.spin = int(np.sum(z[on])) % 2
        mol.build(verbose=0)
        w = scipy.linalg.eigh(mol.intor("int1e_kin"), mol.intor("int1e_ovlp"), eigvals_only=True)[0] * HARTREE_EV
        got = float(diffuse_orbital_energy(r, a))
        assert abs(got - w) < 1e-9 * max(1.0, abs(w)), name
        # the functions combine into a more diffuse orbital than any one of them alone
        assert got < 1.5 * a[on].min() * HARTREE_EV - 1e-3 or on.sum() == 1, name
    # more heavy atoms, more diffuse: water's one O function sits far above acetone's four
    e = {name: float(diffuse_orbital_energy(r, diffuse_exponents(z))) for name, z, r in molecules}
    assert e["water"] > e["ammonia"] > e["methane"] > e["acetone"]


def test_gradient_matches_finite_differences_and_is_invariant(molecules, x64):
    _, z, r = molecules[4]         # urea: C, N, N, O
    a = diffuse_exponents(z)
    g = np.asarray(jax.grad(diffuse_orbital_energy)(r, a))
    assert np.abs(g).max() > 1e-3
    h = 1e-5
    for atom, axis in [(0, 0), (1, 1), (3, 2), (len(z) - 1, 0)]:
        rp, rm = r.copy(), r.copy()
        rp[atom, axis] += h
        rm[atom, axis] -= h
        fd = (float(diffuse_orbital_energy(rp, a)) - float(diffuse_orbital_energy(rm, a))) / (2 * h)
        assert abs(fd - g[atom, axis]) < 1e-7
    # hydrogens carry no function: no force on them
    np.testing.assert_array_equal(g[z == 1], 0.0)
    # a rotated, shifted and permuted copy has the same energy
    rot = scipy.linalg.expm(np.array([[0, -0.4, 0.2], [0.4, 0, -0.7], [-0.2, 0.7, 0]]))
    perm = np.random.default_rng(0).permutation(len(z))
    e0 = float(diffuse_orbital_energy(r, a))
    assert abs(float(diffuse_orbital_energy((r @ rot.T + 3.0)[perm], a[perm])) - e0) < 1e-10
    # float32 with an honest tolerance
    e32 = float(jax.jit(diffuse_orbital_energy)(np.float32(r), np.float32(a)))
    assert abs(e32 - e0) < 1e-4 * abs(e0)
    assert BOHR_PER_ANGSTROM == pytest.approx(1.8897261, rel=1e-7)


def test_other_diffuse_bases_come_from_pyscf_and_plain_ones_are_refused():
    from phai.physics.diffuse import diffuse_s_table

    pytest.importorskip("pyscf")
    for name in ("6-31+G(d)", "6-31+g*", "6-31+G(d,p)"):
        assert diffuse_s_table(name) == DIFFUSE_S_631PLUS
    # the same rule through PySCF (the s functions 6-31++G(d) has and 6-31G(d) lacks): the heavy
    # atoms' functions of 6-31+G(d), and the one '++' adds on hydrogen (0.036)
    pp = diffuse_s_table("6-31++G(d)")
    assert pp[1] == pytest.approx(0.036)
    assert {z: a for z, a in pp.items() if z != 1} == pytest.approx(DIFFUSE_S_631PLUS)
    # Kendall, Dunning and Harrison (1992): the diffuse s exponents of aug-cc-pVDZ
    aug = diffuse_s_table("aug-cc-pVDZ")
    assert [aug[z] for z in (1, 6, 7, 8)] == pytest.approx([0.02974, 0.04690, 0.06124, 0.07896])
    assert 1 not in diffuse_s_table("ma-def2-SVP")      # minimal augmentation: heavy atoms only
    for plain in ("cc-pVDZ", "6-31G(d)", "def2-SVP", "sto-3g"):
        with pytest.raises(InputError, match="no diffuse functions"):
            diffuse_s_table(plain)
    with pytest.raises(InputError, match="knows no diffuse s functions"):
        diffuse_s_table("aug-no-such-basis")
