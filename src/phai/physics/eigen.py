r"""Differentiable generalized symmetric eigensolver ``H C = S C diag(w)``.

**Forward.** Cholesky reduction: ``S = L L^T``, ``H' = L^{-1} H L^{-T}`` (symmetrised),
``H' V = V diag(w)`` by ``eigh``, ``C = L^{-T} V``. Eigenvalues come out ascending and the
eigenvectors (columns of ``C``) are ``S``-orthonormal: ``C^T S C = 1``, ``C^T H C = diag(w)``.
Only symmetric ``H`` and symmetric positive-definite ``S`` are meaningful; if ``S`` is not
positive definite the Cholesky factor, and hence every output, is NaN (check on the host,
e.g. with :func:`check_finite`).

**Derivative** (a ``jax.custom_jvp``; reverse mode is its transpose). With
``dH~ = C^T dH C`` and ``dS~ = C^T dS C`` (tangents symmetrised first, i.e. inputs are
treated as symmetric matrices and their gradients come out symmetric):

.. math::

   dw_k = dH~_{kk} - w_k\, dS~_{kk}, \qquad dC = C X, \qquad
   X_{ij} = F_{ij}\,\bigl(dH~_{ij} - \tfrac12 (w_i + w_j)\, dS~_{ij}\bigr) - \tfrac12 dS~_{ij},

with the Lorentzian-broadened inverse gap
``F_ij = (w_j - w_i) / ((w_j - w_i)^2 + eps^2)`` instead of ``1/(w_j - w_i)``. With the exact
``F`` this equals the textbook ``X_ij = (dH~_ij - w_j dS~_ij)/(w_j - w_i)``, ``X_ii = -dS~_ii/2``;
written this way the symmetric part ``-dS~/2`` (what keeps ``C^T S C = 1``) never divides by a
gap, and only the antisymmetric part (rotations among eigenvectors) is broadened.

* Eigenvalue terms are exact and never divide: the gradient of any loss of the eigenvalues is
  ``dL/dH = sum_k wbar_k c_k c_k^T`` and ``dL/dS = -sum_k wbar_k w_k c_k c_k^T``. Inside a
  degenerate set this sum is the projector onto the set whenever the ``wbar_k`` are equal,
  so the gradient of any symmetric function of a degenerate set (the sum of methane's t2
  energies, the sum of the whole sorted spectrum) is well defined, basis independent and
  correct. A single member of a degenerate set is not differentiable; the value returned is
  finite (that of the basis ``eigh`` happened to pick).
* Eigenvector rotation terms are exact up to a relative error ``(eps/gap)^2`` for
  ``gap >> eps``, bounded by ``1/(2 eps)`` for any gap, and zero within an exactly degenerate
  pair (where the eigenvectors are not unique, so any rotation is as good). Hence losses of
  the eigenvectors that are invariant under rotations within each degenerate set (a density
  matrix ``C_occ C_occ^T`` with the whole set occupied, Mulliken charges) get correct
  gradients at exact degeneracies too. Default ``eps`` (units of ``w``, eV in phai): ``1e-8``
  in float64 and ``1e-4`` in float32, larger than the rounding noise of degenerate
  eigenvalues in each precision.

Shapes: ``O`` orbitals; leading batch axes ``[..., O, O]`` are vmapped.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from ..errors import InputError


class NonFiniteMatrixError(InputError):
    """A Hamiltonian, overlap matrix or eigen-decomposition holds NaN or inf."""


def default_broadening(dtype) -> float:
    """The Lorentzian width ``eps`` used when none is given: 1e-8 (float64), 1e-4 otherwise."""
    return 1e-8 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def _sym(a):
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _solve(H, S):
    """Cholesky-reduced ``eigh`` of one ``[O, O]`` pair (no custom derivative)."""
    L = jnp.linalg.cholesky(S)
    Y = solve_triangular(L, H, lower=True)  # L^-1 H
    Hp = solve_triangular(L, Y.T, lower=True)  # L^-1 (L^-1 H)^T = L^-1 H L^-T (H symmetric)
    w, V = jnp.linalg.eigh(_sym(Hp))
    C = solve_triangular(L.T, V, lower=False)  # L^-T V
    return w, C


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _geigh(H, S, eps):
    return _solve(H, S)


@_geigh.defjvp
def _geigh_jvp(eps, primals, tangents):
    H, S = primals
    dH, dS = tangents
    w, C = _geigh(H, S, eps)
    dHt = C.T @ _sym(dH) @ C
    dSt = C.T @ _sym(dS) @ C
    dw = jnp.diagonal(dHt) - w * jnp.diagonal(dSt)
    gap = w[None, :] - w[:, None]  # [i, j] = w_j - w_i; zero on the diagonal
    F = gap / (gap * gap + eps * eps)  # antisymmetric, broadened 1/(w_j - w_i)
    mean = 0.5 * (w[:, None] + w[None, :])
    X = F * (dHt - mean * dSt) - 0.5 * dSt  # rotation (broadened) + S-orthonormality (exact)
    return (w, C), (dw, C @ X)


def generalized_eigh(H, S, *, broadening: float | None = None):
    """Solve ``H C = S C diag(w)`` for symmetric ``H`` and symmetric positive-definite ``S``.

    Args:
      H: ``[..., O, O]`` symmetric (e.g. a Hückel Hamiltonian, eV).
      S: ``[..., O, O]`` symmetric positive definite (e.g. an overlap matrix).
      broadening: Lorentzian width ``eps`` of the inverse eigenvalue gaps in the derivative
        (units of ``H``); ``None`` picks :func:`default_broadening` for the dtype.

    Returns:
      ``(w [..., O] ascending, C [..., O, O])`` with eigenvectors in the columns of ``C``,
      ``C^T S C = 1``. Differentiable (forward and reverse) with the degeneracy-safe rule of
      the module docstring; jit- and vmap-compatible.
    """
    dtype = jnp.result_type(H, S)
    H = jnp.asarray(H, dtype)
    S = jnp.asarray(S, dtype)
    if H.shape != S.shape or H.ndim < 2 or H.shape[-1] != H.shape[-2]:
        raise InputError(f"H and S must be square matrices of one shape [..., O, O], "
                         f"got {H.shape} and {S.shape}")
    eps = float(default_broadening(dtype) if broadening is None else broadening)
    if not eps > 0:
        raise InputError(f"broadening must be > 0, got {broadening}")
    def fn(h, s):
        return _geigh(h, s, eps)

    for _ in range(H.ndim - 2):
        fn = jax.vmap(fn)
    return fn(H, S)


def check_finite(**arrays) -> None:
    """Raise :class:`NonFiniteMatrixError` naming the first array with a NaN or inf entry.

    A host-side check (call it outside ``jit``), e.g. ``check_finite(hamiltonian=H,
    overlap=S, orbital_energies=w)``. NaN orbital energies with finite matrices mean that
    the overlap matrix is not positive definite (atoms on top of each other).
    """
    for name, a in arrays.items():
        a = np.asarray(a)
        bad = ~np.isfinite(a)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            hint = ""
            if name in ("orbital_energies", "energies", "coefficients"):
                hint = (": the overlap matrix is probably not positive definite "
                        "(two atoms almost on top of each other?)")
            raise NonFiniteMatrixError(
                f"{name} has a non-finite entry {a[where]} at index {where}{hint}")
