"""Generalized eigensolver HC = SCE: forward accuracy, batching, and derivatives checked by
central finite differences in float64, at exact and near degeneracies (methane's t2 set,
benzene's e1g pair) and away from them.

Finite-difference tolerances: central differences with step h have truncation error
~h^2 f''' and rounding error ~eps |f| / h; with h = 1e-5 Å (or eV) both stay below ~1e-8
for these smooth functions, so 1e-7 relative (plus 1e-9 absolute) is a real check.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from phai.physics import generalized_eigh, huckel_orbitals, huckel_system
from phai.physics.eigen import default_broadening


def _sym(a):
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _random_pair(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    b = rng.normal(size=(n, n))
    return a + a.T, b @ b.T / n + np.eye(n)


def _fd(f, x, dx, h=1e-5):
    return (float(f(x + h * dx)) - float(f(x - h * dx))) / (2 * h)


def _close(fd, an, rtol=1e-7, atol=1e-9):
    assert abs(fd - an) <= atol + rtol * max(abs(fd), abs(an)), (fd, an)


def _rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _methane(rotate=True):
    d = 1.09 / np.sqrt(3.0)
    r = np.array([[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) * d
    if rotate:  # degenerate orbitals then mix all axes
        r = r @ _rotation(7).T + np.array([0.3, -0.2, 0.1])
    return [6, 1, 1, 1, 1], r


def _benzene():
    ang = np.arange(6) * np.pi / 3
    ring = np.stack([np.cos(ang), np.sin(ang), np.zeros(6)], axis=1)
    r = np.concatenate([1.39 * ring, (1.39 + 1.09) * ring]) @ _rotation(11).T
    return [6] * 6 + [1] * 6, r


def _system(z):
    return jax.tree.map(jnp.asarray, huckel_system(z))


# ----------------------------------------------------------------------------- forward


def test_forward_matches_scipy_and_is_s_orthonormal(x64):
    H, S = _random_pair(9, 0)
    w, C = generalized_eigh(jnp.asarray(H), jnp.asarray(S))
    np.testing.assert_allclose(np.asarray(w), scipy.linalg.eigh(H, S, eigvals_only=True), atol=1e-12)
    C = np.asarray(C)
    np.testing.assert_allclose(C.T @ S @ C, np.eye(9), atol=1e-12)
    np.testing.assert_allclose(C.T @ H @ C, np.diag(np.asarray(w)), atol=1e-11)


def test_batched_and_jitted(x64):
    pairs = [_random_pair(6, s) for s in range(6)]
    H = jnp.asarray(np.stack([p[0] for p in pairs]).reshape(2, 3, 6, 6))
    S = jnp.asarray(np.stack([p[1] for p in pairs]).reshape(2, 3, 6, 6))
    w, C = jax.jit(generalized_eigh)(H, S)
    assert w.shape == (2, 3, 6) and C.shape == (2, 3, 6, 6)
    for k, (h, s) in enumerate(pairs):
        np.testing.assert_allclose(np.asarray(w).reshape(6, 6)[k],
                                   scipy.linalg.eigh(h, s, eigvals_only=True), atol=1e-12)

    def loss(H, S):
        w, C = generalized_eigh(H, S)
        return jnp.sum(w[..., :3]) + jnp.sum(C ** 4)

    g_batch = jax.jit(jax.grad(loss, (0, 1)))(H, S)
    g_one = jax.grad(loss, (0, 1))(H[1, 2], S[1, 2])
    np.testing.assert_allclose(np.asarray(g_batch[0][1, 2]), np.asarray(g_one[0]), atol=1e-12)
    np.testing.assert_allclose(np.asarray(g_batch[1][1, 2]), np.asarray(g_one[1]), atol=1e-12)


def test_float32():
    H, S = _random_pair(7, 3)
    w, _ = generalized_eigh(jnp.asarray(H, jnp.float32), jnp.asarray(S, jnp.float32))
    assert w.dtype == jnp.float32 and default_broadening(jnp.float32) == 1e-4
    np.testing.assert_allclose(np.asarray(w), scipy.linalg.eigh(H, S, eigvals_only=True), atol=1e-4)


def test_shape_errors():
    with pytest.raises(ValueError, match="square"):
        generalized_eigh(jnp.ones((3, 4)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="broadening"):
        generalized_eigh(jnp.eye(3), jnp.eye(3), broadening=0.0)


# ---------------------------------------------------------- derivatives, random matrices


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_random_matrix_gradients(mode, x64):
    """Eigenvalues and sign-invariant eigenvector functions, both modes, vs central FD."""
    from jax.test_util import check_grads

    H, S = _random_pair(6, 5)
    A = jnp.asarray(_random_pair(6, 6)[0])

    def f(H, S):
        w, C = generalized_eigh(_sym(H), _sym(S))
        return jnp.sum(w * jnp.arange(6.0)) + jnp.sum(jnp.einsum("ak,ab,bk->k", C, A, C) ** 2)

    check_grads(f, (jnp.asarray(H), jnp.asarray(S)), order=1, modes=(mode,), eps=1e-5,
                atol=1e-7, rtol=1e-7)


def test_exact_degeneracy_is_finite_and_projector_correct(x64):
    """H = diag(1, 1, 1, 2, 3) in an S-metric: the gradient of the degenerate sum is the
    S-projector, and even a single member or an eigenvector function gives no NaN/inf."""
    rng = np.random.default_rng(0)
    _, S = _random_pair(5, 1)
    L = np.linalg.cholesky(S)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    H = L @ Q @ np.diag([1.0, 1.0, 1.0, 2.0, 3.0]) @ Q.T @ L.T  # generalized eigenvalues 1,1,1,2,3
    H, S = jnp.asarray(H), jnp.asarray(S)
    gH, gS = jax.grad(lambda H, S: jnp.sum(generalized_eigh(H, S)[0][:3]), (0, 1))(H, S)
    Cd = np.linalg.solve(L.T, Q[:, :3])  # an S-orthonormal basis of the degenerate set
    np.testing.assert_allclose(np.asarray(gH), Cd @ Cd.T, atol=1e-10)
    np.testing.assert_allclose(np.asarray(gS), -Cd @ Cd.T, atol=1e-10)
    for fn in (lambda w, C: w[1], lambda w, C: jnp.sum(C[:, 0] ** 3)):
        g = jax.grad(lambda H, S, fn=fn: fn(*generalized_eigh(H, S)), (0, 1))(H, S)
        assert all(np.all(np.isfinite(np.asarray(x))) for x in g)


# ---------------------------------------------------- derivatives through extended Hückel


def _check_all_directions(z, r, losses, seed=0, h=1e-5, rtol=1e-7):
    """Each ``losses[name](result) -> scalar``: its gradient w.r.t. positions, alpha, zeta and
    K against central finite differences along a random direction (one compile for all).

    ``h`` and ``rtol`` may be dicts keyed like ``losses`` for a per-loss step and tolerance.
    """
    system = _system(z)
    names = list(losses)

    def f(r, alpha, zeta, K):
        out = huckel_orbitals(r, system, K=K, alpha=alpha, zeta=zeta)
        return jnp.stack([losses[n](out) for n in names])

    f = jax.jit(f)
    args = (jnp.asarray(r), system.alpha, system.zeta, jnp.asarray(1.75))
    jac = jax.jit(jax.jacrev(f, argnums=(0, 1, 2, 3)))(*args)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jac)
    rng = np.random.default_rng(seed)
    for k, (x, g) in enumerate(zip(args, jac)):
        dx = jnp.asarray(rng.normal(size=np.shape(x)))
        analytic = np.asarray(jnp.sum(g * dx[None], axis=tuple(range(1, g.ndim))))
        for i, name in enumerate(names):
            step = h[name] if isinstance(h, dict) else h
            tol = rtol[name] if isinstance(rtol, dict) else rtol
            a_plus, a_minus = list(args), list(args)
            a_plus[k], a_minus[k] = x + step * dx, x - step * dx
            fd = (float(f(*a_plus)[i]) - float(f(*a_minus)[i])) / (2 * step)
            _close(fd, float(analytic[i]), rtol=tol)


def _carbon_population(out):
    """Mulliken population of atom 0's four orbitals: needs the eigenvectors (density matrix
    C_occ C_occ^T), invariant under rotations within a fully occupied degenerate set."""
    occ = (jnp.arange(out.energies.shape[0]) <= out.homo_index).astype(out.energies.dtype)
    P = 2.0 * (out.coefficients * occ[None, :]) @ out.coefficients.T
    return jnp.sum(jnp.diagonal(P @ out.overlap)[:4])


def test_methane_exact_t2_degeneracy(x64):
    """Sum of the t2 energies, sum of the whole sorted spectrum, and an eigenvector function
    (carbon's Mulliken population) at methane's exact Td geometry."""
    z, r = _methane()
    w = huckel_orbitals(jnp.asarray(r), _system(z)).energies
    assert float(jnp.max(w[1:4]) - jnp.min(w[1:4])) < 1e-12  # the t2 set is exactly degenerate
    _check_all_directions(z, r, {
        "t2 sum": lambda o: jnp.sum(o.energies[1:4]),
        "spectrum sum": lambda o: jnp.sum(o.energies),
        "C population": _carbon_population,
    })


def test_benzene_exact_e1g_degeneracy(x64):
    z, r = _benzene()
    out = huckel_orbitals(jnp.asarray(r), _system(z))
    homo = int(out.homo_index)
    assert homo == 14
    assert abs(float(out.energies[homo] - out.energies[homo - 1])) < 1e-12  # e1g pair
    _check_all_directions(z, r, {
        "e1g sum": lambda o: o.energies[o.homo_index] + o.energies[o.homo_index - 1],
        "spectrum sum": lambda o: jnp.sum(o.energies),
    }, seed=1)


def test_homo_of_nondegenerate_molecule(x64):
    # formamide: no symmetry-degenerate levels
    z = [7, 6, 8, 1, 1, 1]
    r = np.array([[-1.13, -0.21, 0.02], [0.12, 0.36, -0.01], [1.19, -0.26, 0.01],
                  [-1.95, 0.37, 0.05], [-1.22, -1.21, -0.03], [0.08, 1.45, -0.04]])
    out = huckel_orbitals(jnp.asarray(r), _system(z))
    assert np.diff(np.asarray(out.energies)).min() > 1e-2
    _check_all_directions(z, r, {"homo": lambda o: o.energies[o.homo_index],
                                 "lumo": lambda o: o.energies[o.homo_index + 1]}, seed=2)


def test_near_degeneracy(x64):
    """Methane distorted by ~1e-4 Å: t2 splits by ~1e-4 eV (>> broadening 1e-8 eV). The sum,
    a single level and an eigenvector coefficient all match finite differences; the single
    level and the coefficient use h = 1e-8 Å (<< the split; the coefficient's derivative is
    ~1/split, so its FD truncation error is larger: rtol 1e-4)."""
    z, r = _methane()
    r = r + 1e-4 * np.random.default_rng(4).normal(size=r.shape)
    w = np.asarray(huckel_orbitals(jnp.asarray(r), _system(z)).energies)
    assert 1e-6 < w[3] - w[1] < 1e-2
    _check_all_directions(z, r, {
        "t2 sum": lambda o: jnp.sum(o.energies[1:4]),
        "middle level": lambda o: o.energies[2],
        "coefficient": lambda o: jnp.sum(o.coefficients[:4, 2] ** 2),
        "C population": _carbon_population,
    }, h={"t2 sum": 1e-5, "middle level": 1e-8, "coefficient": 1e-8, "C population": 1e-5},
        rtol={"t2 sum": 1e-7, "middle level": 1e-5, "coefficient": 1e-4, "C population": 1e-7})
