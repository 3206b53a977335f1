"""Extended Hückel and STO overlaps: parity with RDKit's rdEHTTools (YAeHMOP), exactness,
invariances, padding, errors.

Oracle: ``rdkit.Chem.rdEHTTools.RunMol`` (RDKit 2026.09, YAeHMOP 3.x). Tolerances (float64):

* ``S``: 1e-7. phai's overlaps are exact to ~1e-15 (checked against mpmath quadrature below);
  YAeHMOP's ``abfns`` stops its B-function series at a relative term of 1e-7, which leaves
  errors of ~1e-8 in RDKit's ``S`` whenever the two exponents differ (H-C, s-p of S and Cl).
  Equal exponents (C-C, F-F) agree to 1e-15.
* ``H``: 1e-6 eV (the same ~1e-8 overlap error times |alpha| up to 40 eV).
* eigenvalues: 1e-6 eV below 30 eV, and 1e-6 eV + 3e-8 relative above. The same error,
  amplified by the conditioning of ``S``, moves RDKit's orbital energies by up to ~8e-7 eV
  here, and by ~1.2e-6 eV (2e-8 relative) for a 61 eV antibonding level of squeezed NH4+.
  The solver itself reproduces RDKit's energies from RDKit's own matrices to 1e-10 eV.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdEHTTools

from phai.errors import InputError, UnsupportedElementError
from phai.physics import (
    HOFFMANN,
    NonFiniteMatrixError,
    OddElectronCountError,
    check_finite,
    extended_huckel,
    generalized_eigh,
    huckel_batch,
    huckel_orbitals,
    huckel_orbitals_batch,
    huckel_system,
    overlap_matrix,
    sto,
    wolfsberg_helmholz,
)

SEED = 0xF00D

HCNO = {
    "methane": "C",
    "water": "O",
    "ethylene": "C=C",
    "butadiene": "C=CC=C",
    "2-aza-1,3-butadiene": "C=CN=C",  # CH2=CH-N=CH2, the same molecule as C=NC=C
    "benzene": "c1ccccc1",
    "pyridine": "c1ccncc1",
    "formamide": "NC=O",
    "acetonitrile": "CC#N",
    "glycine": "NCC(=O)O",
    "ammonium": "[NH4+]",
    "acetate": "CC(=O)[O-]",
}
OTHER = {
    "fluoroform": "FC(F)F",
    "methanethiol": "CS",
    "chloromethane": "CCl",
    "methylphosphine": "CP",
    "dimethyl sulfone": "CS(=O)(=O)C",
    "phosphoric acid": "OP(=O)(O)O",
    "acetyl chloride": "CC(=O)Cl",
}


def _sym(upper):
    m = np.triu(np.asarray(upper))
    return m + np.triu(m, 1).T


def _embed(smiles: str, distort: float = 0.0):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=SEED) == 0
    if distort:
        pos = mol.GetConformer().GetPositions()
        pos = pos + np.random.default_rng(SEED).normal(scale=distort, size=pos.shape)
        conf = mol.GetConformer()
        for i, p in enumerate(pos):
            conf.SetAtomPosition(i, p.tolist())
    return mol


def _rdkit(mol):
    ok, res = rdEHTTools.RunMol(mol, keepOverlapAndHamiltonianMatrices=True)
    assert ok
    return {"S": _sym(res.GetOverlapMatrix()), "H": _sym(res.GetHamiltonian()),
            "E": np.asarray(res.GetOrbitalEnergies()), "n_orb": res.numOrbitals,
            "n_el": round(res.numElectrons)}


def _inputs(mol):
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return z, mol.GetConformer().GetPositions(), Chem.GetFormalCharge(mol)


def _compare(smiles, distort):
    mol = _embed(smiles, distort)
    ref = _rdkit(mol)
    z, r, q = _inputs(mol)
    out = extended_huckel(z, r, charge=q)
    assert out.overlap.shape == (ref["n_orb"], ref["n_orb"])
    np.testing.assert_allclose(out.overlap, ref["S"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(out.hamiltonian, ref["H"], rtol=0, atol=1e-6)
    # rtol: RDKit's ~1e-8 relative overlap error also scales the highest antibonding levels
    # (61 eV in squeezed ammonium, off by 1.2e-6 eV); every level below 30 eV meets 1e-6 eV.
    np.testing.assert_allclose(out.energies, ref["E"], rtol=3e-8, atol=1e-6)
    low = ref["E"] < 30.0
    np.testing.assert_allclose(out.energies[low], ref["E"][low], rtol=0, atol=1e-6)
    assert int(out.homo_index) == ref["n_el"] // 2 - 1
    return out, ref


@pytest.mark.parametrize("distort", [0.0, 0.12], ids=["etkdg", "distorted"])
@pytest.mark.parametrize("name", list(HCNO))
def test_rdkit_parity_hcno(name, distort):
    _compare(HCNO[name], distort)


@pytest.mark.parametrize("name", list(OTHER))
def test_rdkit_parity_f_p_s_cl(name):
    # Same tolerances: S and Cl have different s and p exponents, so their one-centre
    # differences show YAeHMOP's truncated series most; still below 1e-6 eV here.
    _compare(OTHER[name], 0.0)


def test_rdkit_eigenvalues_from_rdkit_matrices(x64):
    """The solver alone: RDKit's S and H in, RDKit's energies out (isolates matrix errors)."""
    ref = _rdkit(_embed("NCC(=O)O", 0.12))
    w, C = generalized_eigh(jnp.asarray(ref["H"]), jnp.asarray(ref["S"]))
    np.testing.assert_allclose(np.asarray(w), ref["E"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(C.T @ ref["S"] @ C), np.eye(len(w)), atol=1e-10)


def test_unweighted_wolfsberg_helmholz(x64):
    """Plain formula H_uv = K/2 (a_u + a_v) S_uv on RDKit's own S (ML-EHM eq 5)."""
    mol = _embed("c1ccncc1")
    ref = _rdkit(mol)
    system = huckel_system(_inputs(mol)[0])
    H = np.asarray(wolfsberg_helmholz(jnp.asarray(system.alpha), jnp.asarray(ref["S"]), 1.75,
                                      weighted=False))
    a = system.alpha
    expect = 0.875 * (a[:, None] + a[None, :]) * ref["S"]
    np.fill_diagonal(expect, a)
    np.testing.assert_allclose(H, expect, rtol=0, atol=1e-13)
    # and the weighted one reproduces RDKit's H from RDKit's S to rounding
    Hw = np.asarray(wolfsberg_helmholz(jnp.asarray(a), jnp.asarray(ref["S"])))
    np.testing.assert_allclose(Hw, ref["H"], rtol=0, atol=1e-12)


def test_parameters_are_rdkits(x64):
    """Diagonal of RDKit's H and its electron count give Hoffmann's alpha per element."""
    mol = _embed("OP(=O)(O)CS(=O)(=O)C(F)(Cl)c1ccncc1")
    ref = _rdkit(mol)
    z, _, q = _inputs(mol)
    system = huckel_system(z, charge=q)
    np.testing.assert_array_equal(system.alpha, np.diag(ref["H"]))
    assert int(system.n_electrons) == ref["n_el"]


def _mp_overlap(na, la, nb, lb, za, zb, r, kind):
    import mpmath as mp

    mp.mp.dps = 20
    a = mp.mpf(r) / 2
    za, zb = mp.mpf(za), mp.mpf(zb)
    norm = ((2 * za) ** (na + 0.5) / mp.sqrt(mp.factorial(2 * na))
            * (2 * zb) ** (nb + 0.5) / mp.sqrt(mp.factorial(2 * nb)))
    c = [1 / mp.sqrt(4 * mp.pi), mp.sqrt(3 / (4 * mp.pi))]

    def f(x, e):
        ra, rb = a * (x + e), a * (x - e)
        ex = mp.exp(-za * ra - zb * rb) * a ** 3 * (x * x - e * e)
        if kind == "sigma":
            fa = ra ** (na - 1 - la) * (a * (1 + x * e)) ** la
            fb = rb ** (nb - 1 - lb) * (a * (x * e - 1)) ** lb
            return fa * fb * ex * 2 * mp.pi * c[la] * c[lb]
        rho2 = a * a * (x * x - 1) * (1 - e * e)
        return ra ** (na - 2) * rb ** (nb - 2) * rho2 * ex * mp.pi * c[1] ** 2

    return float(norm * mp.quad(f, [1, 4, mp.inf], [-1, 1]))


@pytest.mark.parametrize("case", [
    (1, 0, 2, 0, 1.3, 1.625, 2.06, "sigma"),
    (2, 1, 1, 0, 1.95, 1.3, 1.9, "sigma"),
    (1, 0, 3, 1, 1.3, 1.733, 2.5, "sigma"),
    (2, 1, 2, 1, 1.625, 2.275, 2.3, "sigma"),
    (2, 1, 3, 1, 1.625, 1.827, 3.4, "pi"),
    (3, 1, 3, 1, 1.733, 1.733, 3.8, "pi"),
    (3, 0, 2, 1, 2.122, 1.95, 5.1, "sigma"),
])
def test_sto_overlap_exact(case, x64):
    """Diatomic overlaps against mpmath quadrature in prolate spheroidal coordinates."""
    na, la, nb, lb, za, zb, r, kind = case
    sig, pi = sto.diatomic_overlaps(*(jnp.asarray(v) for v in (r, na, la, nb, lb, za, zb)))
    got = float(sig if kind == "sigma" else pi)
    assert abs(got - _mp_overlap(na, la, nb, lb, za, zb, r, kind)) < 1e-13


def test_sto_aux_b_branches(x64):
    """B_j(q) on both sides of the series/closed-form switch, and dB_j/dq = -B_(j+1)."""
    import mpmath as mp

    mp.mp.dps = 25
    for q in (0.0, 1e-9, -0.7, 1.999, 2.001, -6.0, 11.0):
        got = np.asarray(sto.aux_b(jnp.asarray(q)))
        ref = [float(mp.quad(lambda e, j=j, q=q: e ** j * mp.exp(-q * e), [-1, 1]))
               for j in range(got.shape[-1])]
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)
        d = np.asarray(jax.jacfwd(sto.aux_b)(jnp.asarray(q)))
        h = 1e-5
        fd = (np.asarray(sto.aux_b(jnp.asarray(q + h))) - np.asarray(sto.aux_b(jnp.asarray(q - h)))) / (2 * h)
        np.testing.assert_allclose(d, fd, rtol=1e-7, atol=1e-8)


def _random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_rotation_translation_permutation_invariance(x64):
    mol = _embed("NCC(=O)O", 0.1)
    z, r, _ = _inputs(mol)
    e0 = extended_huckel(z, r).energies
    rot = r @ _random_rotation(3).T + np.array([1.5, -20.0, 7.0])
    np.testing.assert_allclose(extended_huckel(z, rot).energies, e0, rtol=0, atol=1e-10)
    reflected = r * np.array([1.0, -1.0, 1.0])
    np.testing.assert_allclose(extended_huckel(z, reflected).energies, e0, rtol=0, atol=1e-10)
    perm = np.random.default_rng(1).permutation(len(z))
    np.testing.assert_allclose(extended_huckel(z[perm], r[perm]).energies, e0, rtol=0, atol=1e-10)


def test_padded_batch_equals_one_by_one(x64):
    smiles = ["C=CN=C", "O", "c1ccncc1", "CS(=O)(=O)C"]
    mols = [_inputs(_embed(s, 0.05)) for s in smiles]
    singles = [extended_huckel(z, r) for z, r, _ in mols]
    pos, system = huckel_batch([m[0] for m in mols], [m[1] for m in mols],
                               n_atoms=max(len(m[0]) for m in mols) + 3,
                               n_orbitals=max(len(s.energies) for s in singles) + 7)
    # garbage on padded atoms: a leak would change the answer
    rng = np.random.default_rng(0)
    for b, (z, _, _) in enumerate(mols):
        pos[b, len(z):] = rng.normal(scale=0.3, size=pos[b, len(z):].shape)
    batched = jax.jit(huckel_orbitals_batch)(jnp.asarray(pos), jax.tree.map(jnp.asarray, system))
    for b, single in enumerate(singles):
        n = len(single.energies)
        np.testing.assert_allclose(np.asarray(batched.energies[b, :n]), single.energies, atol=1e-10)
        np.testing.assert_array_equal(np.asarray(batched.energies[b, n:]), 1000.0)
        np.testing.assert_allclose(np.asarray(batched.overlap[b, :n, :n]), single.overlap, atol=1e-13)
        np.testing.assert_allclose(np.asarray(batched.hamiltonian[b, :n, :n]), single.hamiltonian,
                                   atol=1e-12)
        assert int(batched.homo_index[b]) == int(single.homo_index)

    # gradients through the padded batch: finite, zero on padded atoms
    def loss(p):
        out = huckel_orbitals_batch(p, jax.tree.map(jnp.asarray, system))
        occ = jnp.arange(out.energies.shape[1])[None, :] <= out.homo_index[:, None]
        return jnp.sum(jnp.where(occ, out.energies, 0.0))

    g = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(pos)))
    assert np.all(np.isfinite(g))
    for b, (z, _, _) in enumerate(mols):
        assert np.all(g[b, len(z):] == 0.0)


def test_overlap_finite_gradients_coincident_and_padded(x64):
    """Two atoms on one spot and padded slots: S stays finite, and so does its gradient."""
    system = huckel_system([6, 1, 1, 8, 1, 1], n_orbitals=16)
    r = jnp.asarray([[0.0, 0, 0], [0.0, 0, 0], [0.6, 0.6, 0.6], [2.5, 0, 0], [2.5, 0, 0],
                     [3.0, 0.8, 0]])
    basis = jax.tree.map(jnp.asarray, system.basis)

    def f(r, zeta):
        S = overlap_matrix(r, basis, zeta)
        return jnp.sum(S * S), S

    (val, S), g = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
        r, jnp.asarray(system.zeta))
    assert np.isfinite(float(val)) and all(np.all(np.isfinite(np.asarray(x))) for x in g)
    S = np.asarray(S)
    np.testing.assert_array_equal(S[12:, :], np.eye(16)[12:, :])  # padded rows are identity
    assert np.all(S[0:4, 4] == 0.0)  # C and the H on top of it: overlap zero, as in YAeHMOP


def test_overlap_gradient_matches_finite_differences(x64):
    z, r, _ = _inputs(_embed("CC(=O)Cl", 0.1))
    system = jax.tree.map(jnp.asarray, huckel_system(z))
    weights = jnp.asarray(np.random.default_rng(2).normal(size=(len(system.alpha),) * 2))

    def f(r, zeta):
        return jnp.sum(weights * overlap_matrix(r, system.basis, zeta))

    f = jax.jit(f)
    r = jnp.asarray(r)
    gr, gz = jax.jit(jax.grad(f, argnums=(0, 1)))(r, system.zeta)
    rng = np.random.default_rng(3)
    dr, dz = rng.normal(size=r.shape), rng.normal(size=system.zeta.shape)
    h = 1e-5
    fd_r = (f(r + h * dr, system.zeta) - f(r - h * dr, system.zeta)) / (2 * h)
    fd_z = (f(r, system.zeta + h * dz) - f(r, system.zeta - h * dz)) / (2 * h)
    assert abs(float(fd_r) - float(jnp.sum(gr * dr))) < 1e-7 * max(1.0, abs(float(fd_r)))
    assert abs(float(fd_z) - float(jnp.sum(gz * dz))) < 1e-7 * max(1.0, abs(float(fd_z)))


def test_float32_runs_and_is_close(x64):
    z, r, _ = _inputs(_embed("c1ccncc1"))
    ref = extended_huckel(z, r).energies
    system = huckel_system(z)
    with jax.enable_x64(False):
        out = jax.jit(huckel_orbitals)(jnp.asarray(r, jnp.float32),
                              jax.tree.map(lambda x: jnp.asarray(x) if x.dtype.kind != "f"
                                           else jnp.asarray(x, jnp.float32), system))
        assert out.energies.dtype == jnp.float32
        # float32: S carries ~1e-7 relative rounding, amplified by cond(S) in the eigenvalues
        np.testing.assert_allclose(np.asarray(out.energies), ref, atol=2e-3)


def test_unsupported_element():
    with pytest.raises(UnsupportedElementError, match="Si"):
        extended_huckel(["C", "Si", "H"], np.eye(3) * 1.5)
    with pytest.raises(UnsupportedElementError, match="Fe"):
        huckel_system([26, 6])


def test_odd_electron_count():
    with pytest.raises(OddElectronCountError, match="7 valence electrons"):
        extended_huckel([6, 1, 1, 1], np.array([[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1]]))
    with pytest.raises(OddElectronCountError):
        huckel_system([6, 1, 1, 1, 1], charge=1)  # CH4+
    huckel_system([6, 1, 1, 1], charge=1)  # CH3+ is fine
    with pytest.raises(OddElectronCountError):
        huckel_system([1], charge=1)  # no electrons at all


def test_bad_structures():
    with pytest.raises(InputError, match="non-finite"):
        extended_huckel([8, 1, 1], [[0, 0, 0], [0.96, 0, np.nan], [0, 0.96, 0]])
    with pytest.raises(InputError, match="apart"):
        extended_huckel([8, 1, 1], [[0, 0, 0], [0, 0, 0], [0, 0.96, 0]])
    with pytest.raises(InputError, match="n_orbitals"):
        huckel_system([8, 1, 1], n_orbitals=4)
    with pytest.raises(InputError, match="molecule 1"):
        huckel_batch([[8, 1, 1], [6, 1, 1, 1]], [np.eye(3), np.eye(4, 3)])


def test_non_finite_matrices_are_reported():
    H = np.zeros((3, 3))
    H[1, 2] = np.inf
    with pytest.raises(NonFiniteMatrixError, match="hamiltonian"):
        check_finite(hamiltonian=H, overlap=np.eye(3))
    with pytest.raises(NonFiniteMatrixError, match="positive definite"):
        check_finite(orbital_energies=np.array([1.0, np.nan]))


def test_nonpositive_overlap_gives_nan_not_garbage(x64):
    """An indefinite S (not reachable from a valid structure) must surface as NaN energies."""
    S = jnp.asarray([[1.0, 1.2], [1.2, 1.0]])
    w, _ = generalized_eigh(jnp.diag(jnp.asarray([-10.0, -5.0])), S)
    with pytest.raises(NonFiniteMatrixError):
        check_finite(orbital_energies=w)


def test_hoffmann_table_is_read_only():
    with pytest.raises(TypeError):
        HOFFMANN[6] = None  # type: ignore[index]
    assert HOFFMANN[6].zeta_s == HOFFMANN[6].zeta_p == 1.625


def test_extended_huckel_compiles_once_per_bucket():
    from phai.physics import huckel

    extended_huckel([6, 8, 1, 1], [[0, 0, 0], [1.2, 0, 0], [-0.5, 0.9, 0], [-0.5, -0.9, 0]])
    before = huckel._huckel_jit._cache_size()
    # formaldehyde (10 orbitals) then methanol (14): both in the 16-orbital, 8-atom bucket
    extended_huckel([6, 8, 1, 1], [[0, 0, 0], [1.21, 0, 0], [-0.5, 0.95, 0], [-0.5, -0.95, 0]])
    extended_huckel([6, 8, 1, 1, 1, 1], [[0, 0, 0], [1.43, 0, 0], [-0.4, 1.0, 0], [-0.4, -0.5, 0.9],
                                        [-0.4, -0.5, -0.9], [1.75, 0.9, 0]])
    assert huckel._huckel_jit._cache_size() == before


def test_per_pair_k_and_parameter_overrides(x64):
    """K as an [A, A] matrix, alpha/zeta overrides and batched K [B]: the ML-EHM inputs."""
    z, r, _ = _inputs(_embed("C=CN=C"))
    system = jax.tree.map(jnp.asarray, huckel_system(z))
    r = jnp.asarray(r)
    ref = huckel_orbitals(r, system)
    a = len(z)
    same = huckel_orbitals(r, system, K=jnp.full((a, a), 1.75), alpha=system.alpha, zeta=system.zeta)
    np.testing.assert_allclose(np.asarray(same.energies), np.asarray(ref.energies), atol=1e-12)
    K = np.full((a, a), 1.75)
    K[0, 1] = K[1, 0] = 2.0  # only the C1-C2 pair changes
    H = np.asarray(huckel_orbitals(r, system, K=jnp.asarray(K)).hamiltonian)
    H0 = np.asarray(ref.hamiltonian)
    changed = ~np.isclose(H, H0, rtol=0, atol=1e-14)
    atom = np.asarray(system.basis.atom)
    pairs = {tuple(sorted((int(atom[i]), int(atom[j])))) for i, j in zip(*np.nonzero(changed))}
    assert pairs == {(0, 1)}
    # batch: K per molecule and alpha per molecule
    pos, batch = huckel_batch([z, z], [np.asarray(r), np.asarray(r)])
    batch = jax.tree.map(jnp.asarray, batch)
    out = huckel_orbitals_batch(jnp.asarray(pos), batch, K=jnp.asarray([1.75, 1.6]),
                                alpha=batch.alpha + jnp.asarray([[0.0], [0.5]]))
    np.testing.assert_allclose(np.asarray(out.energies[0]), np.asarray(ref.energies), atol=1e-12)
    other = huckel_orbitals(r, system, K=1.6, alpha=system.alpha + 0.5)
    np.testing.assert_allclose(np.asarray(out.energies[1]), np.asarray(other.energies), atol=1e-12)
    with pytest.raises(InputError, match="K must be"):
        huckel_orbitals(r, system, K=jnp.ones(3))
