r"""Slater-type minimal-basis orbitals and their analytic two-centre overlap matrix.

A normalised real Slater-type orbital (STO) on atom ``A`` is

.. math::

   \chi_{n l m}(\mathbf r) = \frac{(2\zeta)^{n + 1/2}}{\sqrt{(2n)!}}\, r_A^{n-1} e^{-\zeta r_A}
       \, Y_{l m}(\hat{\mathbf r}_A),

with real spherical harmonics ``Y_00 = 1/sqrt(4 pi)`` and ``(p_x, p_y, p_z) = sqrt(3/(4 pi))
(x, y, z)/r``: the cartesian sign convention of YAeHMOP and RDKit (a ``p_x`` orbital is positive
towards ``+x``). Only ``l = 0`` and ``l = 1`` shells are handled (s and p), with principal
quantum numbers ``1 <= n <= MAX_N``.

**Method.** For two atoms a distance ``R`` apart (bohr) we work in the diatomic frame (``A`` at
the origin, ``B`` on the ``+z`` axis) and in prolate spheroidal coordinates
``xi = (r_A + r_B)/R``, ``eta = (r_A - r_B)/R``; every factor of the integrand is a polynomial
in ``(xi, eta)``:

``r_A = a (xi + eta)``, ``r_B = a (xi - eta)``, ``z_A = a (1 + xi eta)``, ``z_B = a (xi eta - 1)``,
``rho^2 = a^2 (xi^2 - 1)(1 - eta^2)`` and ``dV = a^3 (xi^2 - eta^2) dxi deta dphi`` with
``a = R/2``, while ``exp(-zeta_A r_A - zeta_B r_B) = exp(-p xi - q eta)`` with
``p = a (zeta_A + zeta_B)``, ``q = a (zeta_A - zeta_B)``. Hence every sigma (m = 0) and pi
(m = 1) overlap is an exact finite sum (Mulliken, Rieke, Orloff and Orloff, *J. Chem. Phys.*
17, 1248 (1949))

.. math::

   S = N_A N_B\, c\, a^{n_A + n_B + 1} \sum_{k,j} C_{kj}\, A_k(p)\, B_j(q),\qquad
   A_k(p) = \int_1^\infty \xi^k e^{-p\xi} d\xi,\quad B_j(q) = \int_{-1}^{1} \eta^j e^{-q\eta} d\eta,

with integer polynomial coefficients ``C`` that depend only on ``(n_A, l_A, n_B, l_B)`` and
sigma/pi (built once with NumPy, :func:`overlap_polynomials`). ``A_k`` uses its closed form
(a sum of positive terms, stable for every ``p > 0``); ``B_j`` uses its closed form for
``|q| >= 2`` and its Taylor series (32 terms, exact to rounding) below, because the closed form
cancels catastrophically as ``q -> 0`` (equal exponents give ``q = 0`` exactly).

**Molecular frame.** With the unit vector ``u`` from the atom of orbital ``mu`` to the atom of
orbital ``nu`` and the cartesian direction ``e_mu`` of a p orbital,

* ``<s|s> = S_sigma``,  ``<s|p_nu> = (u . e_nu) S_sigma``,  ``<p_mu|s> = (u . e_mu) S_sigma``,
* ``<p_mu|p_nu> = (u . e_mu)(u . e_nu) S_sigma + (e_mu . e_nu - (u . e_mu)(u . e_nu)) S_pi``,

where the diatomic ``p_z`` on either atom points along ``+u``. This is the rotation YAeHMOP
performs with its angle matrices, written without angles, so it has no special case for bonds
along ``z`` and its derivative is smooth.

**Units.** Positions enter in Å and are converted to bohr with
:data:`YAEHMOP_ANGSTROM_TO_BOHR` ``= 1.889644746`` (YAeHMOP's ``AUI``, i.e. a bohr of
0.52920 Å) by default, because RDKit parity to 1e-6 needs YAeHMOP's constant: the CODATA
value differs by 4e-5 relative, which moves overlaps by up to ~1e-5. Exponents ``zeta`` are in
bohr^-1.

**Padding and coincident atoms.** Masked (padded) orbitals get an identity row and column
(``S_mumu = 1``, zero elsewhere); pairs of orbitals on the same atom get ``delta_mu_nu`` (an s
and a p, or two p of one shell, are orthogonal on one centre). Such pairs, and two *different*
atoms at exactly the same place (YAeHMOP also sets those overlaps to zero), are evaluated at a
dummy distance behind a double ``where``, so values and gradients stay finite.

**Cost.** :func:`overlap_matrix` evaluates the radial integrals once per *atom pair* and
shell combination (s-s, s-p, p-s, p-p: :func:`shell_overlaps`, one batched call), builds
``[A, A, 4, 4]`` blocks from them and the direction cosines, and gathers the ``[O, O]``
matrix from the blocks. Each atom therefore holds at most one s and one p shell (one
exponent each: the mean over the shell's orbitals; a p shell has all three orbitals).

Shapes: ``A`` atoms, ``O`` orbitals. Everything is a pure function of arrays; ``vmap`` for
batches.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MAX_N: int = 3
"""Largest principal quantum number handled (H to Ar)."""

YAEHMOP_ANGSTROM_TO_BOHR: float = 1.889644746
"""bohr per Å as YAeHMOP converts distances (``AUI`` in ``tightbind/bind.h``)."""

_DEG = 2 * MAX_N  # highest power of xi or eta in any integrand polynomial
_Q_SWITCH = 2.0  # |q| below which B_j(q) is summed as a Taylor series
_N_SERIES = 32  # Taylor terms (even): 2**32 / 32! ~ 2e-26
_COINCIDENT = 1e-6  # Å; YAeHMOP's threshold for "same place, overlap zero"


class STOBasis(NamedTuple):
    """Which atom and which orbital each basis function is (structure only, no parameters).

    A pytree of integer/bool arrays; a batch stacks every field along a leading ``B`` axis.

    Attributes:
      atom: ``[O] int32`` index of the atom the orbital sits on (any valid index if padded).
      n: ``[O] int32`` principal quantum number, ``1..MAX_N`` (1 if padded).
      l: ``[O] int32`` angular momentum, 0 (s) or 1 (p).
      axis: ``[O] int32`` cartesian direction of a p orbital (0 x, 1 y, 2 z); 0 for s.
      mask: ``[O] bool``, False for padding.
    """

    atom: jax.Array
    n: jax.Array
    l: jax.Array
    axis: jax.Array
    mask: jax.Array


def _poly_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Product of two polynomials in (xi, eta) stored as ``P[i, j]`` = coeff of xi^i eta^j."""
    out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1))
    for i, j in zip(*np.nonzero(a)):
        out[i:i + b.shape[0], j:j + b.shape[1]] += a[i, j] * b
    return out


def _poly_pow(a: np.ndarray, k: int) -> np.ndarray:
    out = np.ones((1, 1))
    for _ in range(k):
        out = _poly_mul(out, a)
    return out


# The building blocks as polynomials in (xi, eta), without their factors of a = R/2.
_R_A = np.array([[0.0, 1.0], [1.0, 0.0]])  # xi + eta
_R_B = np.array([[0.0, -1.0], [1.0, 0.0]])  # xi - eta
_Z_A = np.array([[1.0, 0.0], [0.0, 1.0]])  # 1 + xi eta
_Z_B = np.array([[-1.0, 0.0], [0.0, 1.0]])  # xi eta - 1
_RHO2 = _poly_mul(np.array([[-1.0], [0.0], [1.0]]), np.array([[1.0, 0.0, -1.0]]))  # (xi^2-1)(1-eta^2)
_JACOBIAN = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # xi^2 - eta^2


def _padded(p: np.ndarray) -> np.ndarray:
    out = np.zeros((_DEG + 1, _DEG + 1))
    out[:p.shape[0], :p.shape[1]] = p
    return out


@functools.cache
def overlap_polynomials() -> tuple[np.ndarray, np.ndarray]:
    r"""Coefficient tables of every sigma and pi diatomic overlap integrand (NumPy, float64).

    Returns:
      ``(coeff [T, 2, D+1, D+1], const [T, 2])`` with ``T = (2 MAX_N)^2`` shell-pair types
      indexed by :func:`shell_pair_type`, ``D = 2 MAX_N``, the second axis sigma (0) and pi (1).
      ``coeff[t, k, i, j]`` multiplies ``A_i(p) B_j(q)``, and ``const`` holds the angular
      factor (``2 pi c_A c_B`` for sigma, ``pi c_1^2`` for pi). Entries of impossible types
      (``l >= n``, or pi with an s orbital) are zero.
    """
    ls = 2
    n_types = (MAX_N * ls) ** 2
    coeff = np.zeros((n_types, 2, _DEG + 1, _DEG + 1))
    const = np.zeros((n_types, 2))
    c = (1.0 / math.sqrt(4 * math.pi), math.sqrt(3.0 / (4 * math.pi)))
    for na in range(1, MAX_N + 1):
        for la in range(min(na, ls)):
            for nb in range(1, MAX_N + 1):
                for lb in range(min(nb, ls)):
                    t = shell_pair_type(na, la, nb, lb)
                    sig = _poly_mul(_poly_pow(_R_A, na - 1 - la), _poly_pow(_Z_A, la))
                    sig = _poly_mul(sig, _poly_pow(_R_B, nb - 1 - lb))
                    sig = _poly_mul(sig, _poly_pow(_Z_B, lb))
                    coeff[t, 0] = _padded(_poly_mul(sig, _JACOBIAN))
                    const[t, 0] = 2 * math.pi * c[la] * c[lb]
                    if la == 1 and lb == 1:
                        pi = _poly_mul(_poly_pow(_R_A, na - 2), _poly_pow(_R_B, nb - 2))
                        pi = _poly_mul(_poly_mul(pi, _RHO2), _JACOBIAN)
                        coeff[t, 1] = _padded(pi)
                        const[t, 1] = math.pi * c[1] ** 2
    return coeff, const


def shell_pair_type(na, la, nb, lb):
    """Row of :func:`overlap_polynomials` for shells ``(na, la)`` on A and ``(nb, lb)`` on B.

    Works on Python ints and on integer arrays alike.
    """
    return (((na - 1) * 2 + la) * (MAX_N * 2)) + (nb - 1) * 2 + lb


def _aux_a_raw(p, kmax: int):
    """``A_0..A_kmax`` by the upward recurrence ``A_k = (e^-p + k A_{k-1}) / p``.

    Every term is positive, so the recurrence is stable for all ``p > 0``.
    """
    inv = 1.0 / p
    ep = jnp.exp(-p)
    out = [ep * inv]
    for k in range(1, kmax + 1):
        out.append((ep + k * out[-1]) * inv)
    return jnp.stack(out, axis=-1)


@jax.custom_jvp
def aux_a(p):
    r"""``A_k(p) = int_1^inf xi^k exp(-p xi) dxi`` for ``k = 0..2 MAX_N``.

    Args:
      p: any shape, must be ``> 0`` (dimensionless).

    Returns:
      ``[..., 2 MAX_N + 1]``: ``A_k = k! e^{-p} / p^{k+1} sum_{i<=k} p^i / i!``. The derivative
      is the exact identity ``dA_k/dp = -A_{k+1}`` (a custom JVP: small graphs, fast compiles).
    """
    return _aux_a_raw(p, _DEG)


@aux_a.defjvp
def _aux_a_jvp(primals, tangents):
    (p,), (dp,) = primals, tangents
    a = _aux_a_raw(p, _DEG + 1)
    return a[..., :-1], -a[..., 1:] * dp[..., None]


@functools.cache
def _aux_b_tables(jmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constants of :func:`aux_b` up to ``j = jmax``.

    Returns ``(series [M/2, 2, J], plus [J, J], minus [J, J])`` with ``J = jmax + 1``:
    Taylor coefficients of ``(-q)^(2k)`` and ``(-q)^(2k+1)``, and the closed-form weights of
    ``e^q / q^(i+1)`` and ``e^-q / q^(i+1)`` (row ``i``, column ``j``).
    """
    m = np.arange(_N_SERIES)[:, None]
    j = np.arange(jmax + 1)[None, :]
    fact = np.array([math.factorial(k) for k in range(_N_SERIES)], dtype=np.float64)[:, None]
    series = np.where((m + j) % 2 == 0, 2.0 / (m + j + 1), 0.0) / fact
    i = np.arange(jmax + 1)[:, None]
    minus = np.array([[math.perm(jj, ii) for jj in range(jmax + 1)] for ii in range(jmax + 1)],
                     dtype=np.float64)  # j!/(j-i)!, zero for i > j
    plus = minus * np.where((j - i) % 2 == 0, 1.0, -1.0)
    return series.reshape(_N_SERIES // 2, 2, jmax + 1), plus, minus


def _aux_b_raw(q, jmax: int):
    """``B_0..B_jmax``: Taylor series for ``|q| < 2``, closed form otherwise."""
    series_c, plus_c, minus_c = (jnp.asarray(t, q.dtype) for t in _aux_b_tables(jmax))
    small = jnp.abs(q) < _Q_SWITCH
    # Taylor branch, at q clipped into the small region: Horner in q^2 over the even and the
    # odd powers of (-q) together, for every j at once.
    qs = jnp.where(small, q, jnp.zeros_like(q))[..., None, None]
    q2 = qs * qs
    series_c = series_c.reshape(series_c.shape[:1] + (1,) * q.ndim + series_c.shape[1:])
    acc = jnp.broadcast_to(series_c[-1], q.shape + series_c.shape[-2:])
    for k in range(series_c.shape[0] - 2, -1, -1):
        acc = acc * q2 + series_c[k]
    series = acc[..., 0, :] - qs[..., 0, :] * acc[..., 1, :]
    # Closed-form branch, at q pushed out of the small region.
    ql = jnp.where(small, jnp.full_like(q, _Q_SWITCH), q)
    inv = 1.0 / ql
    powers = [inv]
    for _ in range(jmax):
        powers.append(powers[-1] * inv)
    powers = jnp.stack(powers, axis=-1)  # [..., J]: q^-1 .. q^-J
    closed = jnp.exp(ql)[..., None] * (powers @ plus_c) - jnp.exp(-ql)[..., None] * (powers @ minus_c)
    return jnp.where(small[..., None], series, closed)


@jax.custom_jvp
def aux_b(q):
    r"""``B_j(q) = int_{-1}^{1} eta^j exp(-q eta) deta`` for ``j = 0..2 MAX_N``.

    Args:
      q: any shape, any real value (dimensionless).

    Returns:
      ``[..., 2 MAX_N + 1]``. Taylor series ``sum_m (-q)^m / m! * 2/(j+m+1)`` (``j+m`` even)
      for ``|q| < 2`` (32 terms), closed form
      ``sum_i j!/(j-i)! [(-1)^(j-i) e^q - e^-q] / q^(i+1)`` otherwise; each branch is
      evaluated at a safe argument. The derivative is the exact identity
      ``dB_j/dq = -B_{j+1}`` (a custom JVP), finite everywhere.
    """
    return _aux_b_raw(q, _DEG)


@aux_b.defjvp
def _aux_b_jvp(primals, tangents):
    (q,), (dq,) = primals, tangents
    b = _aux_b_raw(q, _DEG + 1)
    return b[..., :-1], -b[..., 1:] * dq[..., None]


def _norm_log(n, zeta):
    """log of the STO radial normalisation ``(2 zeta)^(n + 1/2) / sqrt((2n)!)``."""
    log_fact = jax.lax.lgamma(2.0 * n + 1.0)
    return (n + 0.5) * jnp.log(2.0 * zeta) - 0.5 * log_fact


SHELL_PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))
"""The ``(la, lb)`` combinations of an s/p basis: s-s, s-p, p-s, p-p."""


@functools.cache
def _shell_pair_tables(pairs: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Coefficient tables of several angular combinations ``(la, lb)``, for every ``(na, nb)``.

    Returns ``(used [U], table [C, U, MAX_N^2 * 2])``: ``used`` lists the flattened
    ``i (D+1) + j`` that any coefficient uses; column ``2 ((na-1) MAX_N + nb - 1) + k`` of
    combination ``c`` holds ``const * coeff`` of sigma (``k = 0``) or pi (``k = 1``, nonzero
    only when both are p); zero for impossible shells (``l >= n``).
    """
    coeff, const = overlap_polynomials()
    table = np.zeros((len(pairs), (_DEG + 1) ** 2, MAX_N * MAX_N, 2))
    for c, (la, lb) in enumerate(pairs):
        for na in range(la + 1, MAX_N + 1):
            for nb in range(lb + 1, MAX_N + 1):
                t = shell_pair_type(na, la, nb, lb)
                for k in range(2 if la == lb == 1 else 1):
                    table[c, :, (na - 1) * MAX_N + nb - 1, k] = const[t, k] * coeff[t, k].reshape(-1)
    table = table.reshape(len(pairs), (_DEG + 1) ** 2, -1)
    used = np.nonzero(np.any(table != 0, axis=(0, 2)))[0]
    return used, table[:, used]


def shell_overlaps(r, na, nb, zeta_a, zeta_b, pairs: tuple[tuple[int, int], ...] = SHELL_PAIRS):
    r"""Sigma and pi overlaps of shells ``(na, la)`` on A and ``(nb, lb)`` on B, several at once.

    The kernel of every overlap in phai. ``A_k(p)`` and ``B_j(q)`` are evaluated once per
    shell pair; the products ``A_i B_j`` that any coefficient uses go through one batched
    matrix product with the tables of all ``(na, nb)``, and the column of each pair's
    ``(na, nb)`` is picked: a few large operations, fast to run, compile and differentiate
    (a per-pair gather of coefficients was ~10x slower).

    Args:
      r: ``[...]`` distance in bohr, ``> 0``.
      na, nb: ``[C, ...]`` integer principal quantum numbers (``la < na``, ``lb < nb``;
        an impossible shell gives 0), one row per entry of ``pairs``.
      zeta_a, zeta_b: ``[C, ...]`` exponents in bohr^-1, ``> 0``.
      pairs: static ``C`` angular combinations ``(la, lb)`` (default s-s, s-p, p-s, p-p).

    Returns:
      ``(S_sigma [C, ...], S_pi [C, ...])``; ``S_pi`` is 0 unless both shells are p.
    """
    pairs = tuple((int(la), int(lb)) for la, lb in pairs)
    used, table = _shell_pair_tables(pairs)
    dtype = jnp.result_type(r, zeta_a, zeta_b)
    shape = jnp.broadcast_shapes((len(pairs),) + jnp.shape(r), jnp.shape(na), jnp.shape(nb),
                                 jnp.shape(zeta_a), jnp.shape(zeta_b))
    a = jnp.broadcast_to(0.5 * jnp.asarray(r, dtype), shape)
    p = a * (zeta_a + zeta_b)
    q = a * (zeta_a - zeta_b)
    A = aux_a(p)
    B = aux_b(q)
    prods = A[..., used // (_DEG + 1)] * B[..., used % (_DEG + 1)]  # [C, ..., U]
    prods = prods.reshape(len(pairs), -1, len(used))
    vals = jnp.einsum("cpu,cuk->cpk", prods, jnp.asarray(table, dtype))
    vals = vals.reshape(shape + (MAX_N * MAX_N, 2))
    row = jnp.broadcast_to((jnp.asarray(na) - 1) * MAX_N + jnp.asarray(nb) - 1, shape)
    poly = jnp.take_along_axis(vals, row[..., None, None], axis=-2)[..., 0, :]  # [C, ..., 2]
    nf_a, nf_b = jnp.asarray(na).astype(dtype), jnp.asarray(nb).astype(dtype)
    log_pref = (_norm_log(nf_a, zeta_a) + _norm_log(nf_b, zeta_b)
                + (nf_a + nf_b + 1.0) * jnp.log(a))
    s = jnp.exp(log_pref)[..., None] * poly
    return s[..., 0], s[..., 1]


def diatomic_overlaps(r, na, la, nb, lb, zeta_a, zeta_b):
    r"""Sigma and pi overlaps of two normalised STOs a distance ``r`` (bohr) apart.

    The diatomic frame has A at the origin and B on ``+z``; p_z on both atoms points along
    ``+z``. Broadcasts over any common shape ``[...]``. Evaluates :func:`shell_overlaps` for
    the four ``(la, lb)`` combinations and selects.

    Args:
      r: distance in bohr, ``> 0``.
      na, la, nb, lb: integer arrays, quantum numbers of the orbital on A and on B.
      zeta_a, zeta_b: exponents in bohr^-1, ``> 0``.

    Returns:
      ``(S_sigma [...], S_pi [...])``; ``S_pi`` is 0 unless both orbitals are p.
    """
    la, lb = jnp.asarray(la), jnp.asarray(lb)
    shape = jnp.broadcast_shapes(*(jnp.shape(x) for x in (r, na, la, nb, lb, zeta_a, zeta_b)))

    def rows(x, lift):  # [4, ...]; p rows get n >= 2 so the unselected branches stay finite
        x = jnp.broadcast_to(jnp.asarray(x), shape)
        return jnp.stack([jnp.maximum(x, 2) if lift(c) else x for c in SHELL_PAIRS])

    sig, pi = shell_overlaps(jnp.broadcast_to(r, shape), rows(na, lambda c: c[0] == 1),
                             rows(nb, lambda c: c[1] == 1), rows(zeta_a, lambda c: False),
                             rows(zeta_b, lambda c: False))
    combo = 2 * jnp.broadcast_to(la, shape) + jnp.broadcast_to(lb, shape)  # index into SHELL_PAIRS
    sig = jnp.take_along_axis(sig, combo[None], axis=0)[0]
    return sig, jnp.where(combo == 3, pi[3], jnp.zeros_like(pi[3]))


@functools.partial(jax.jit, static_argnames=("angstrom_to_bohr", "cutoff"))
def overlap_matrix(positions, basis: STOBasis, zeta, *,
                   angstrom_to_bohr: float = YAEHMOP_ANGSTROM_TO_BOHR,
                   cutoff: float | None = None):
    r"""Analytic overlap matrix ``S_mu_nu = <chi_mu | chi_nu>`` of one molecule.

    Args:
      positions: ``[A, 3]`` Å.
      basis: :class:`STOBasis` with ``O`` orbitals: per atom at most one s shell and one
        p shell (``p_x, p_y, p_z``), as :func:`phai.physics.huckel.huckel_system` builds.
      zeta: ``[O]`` Slater exponents, bohr^-1. A shell uses the mean of its orbitals' values
        (they should be equal; the mean keeps ``S`` rotationally invariant if they are
        not). Values of padded orbitals are ignored.
      angstrom_to_bohr: length conversion; YAeHMOP's by default (see the module docstring).
      cutoff: optional Å distance beyond which inter-atomic overlaps are set to zero, as
        YAeHMOP does at ``rho = 10`` Å for molecules. ``None`` (default) keeps every pair,
        so ``S`` is smooth; the overlaps YAeHMOP drops are below 1e-7.

    Returns:
      ``S [O, O]`` symmetric, dtype of ``positions``; identity rows/columns for padded
      orbitals, ``delta`` within an atom, zero between distinct coincident atoms. Finite
      values and gradients (w.r.t. ``positions`` and ``zeta``) everywhere. Jitted (one
      program per shape even when called eagerly; inlined inside an outer ``jit``).
    """
    dtype = jnp.result_type(positions, zeta)
    positions = jnp.asarray(positions, dtype)
    zeta = jnp.asarray(zeta, dtype)
    atom, n, l, axis, mask = basis
    n_atoms = positions.shape[0]
    is_s = mask & (l == 0)
    is_p = mask & (l == 1) & (n >= 2)

    def shell(sel, n_default):
        """Per atom: has the shell, its exponent (mean over its orbitals), its n."""
        count = jnp.zeros(n_atoms, dtype).at[atom].add(sel.astype(dtype))
        total = jnp.zeros(n_atoms, dtype).at[atom].add(jnp.where(sel, zeta, jnp.zeros_like(zeta)))
        has = count > 0
        z = jnp.where(has, total / jnp.where(has, count, jnp.ones_like(count)), jnp.ones_like(count))
        nn = jnp.zeros(n_atoms, n.dtype).at[atom].max(jnp.where(sel, n, 0))
        return has, z, jnp.where(has, nn, n_default)

    has_s, z_s, n_s = shell(is_s, 1)
    has_p, z_p, n_p = shell(is_p, 2)
    zs, ns = (z_s, z_p), (n_s, n_p)

    # atom pairs i < j (S is symmetric: block[j, i] = block[i, j]^T): geometry once, every
    # shell combination from one radial evaluation
    iu, ju = (jnp.asarray(x, jnp.int32) for x in np.triu_indices(n_atoms, 1))
    d = positions[ju] - positions[iu]  # [P, 3] from atom i to atom j, Å
    r2 = jnp.sum(d * d, axis=-1)
    occupied = has_s | has_p
    pair = occupied[iu] & occupied[ju] & (r2 > _COINCIDENT ** 2)
    if cutoff is not None:
        pair = pair & (r2 <= cutoff ** 2)
    r = jnp.sqrt(jnp.where(pair, r2, jnp.ones_like(r2)))  # Å
    u = jnp.where(pair[..., None], d / r[..., None], jnp.zeros_like(d))
    sigma, s_pi = shell_overlaps(
        r * angstrom_to_bohr,
        jnp.stack([ns[la][iu] for la, _ in SHELL_PAIRS]), jnp.stack([ns[lb][ju] for _, lb in SHELL_PAIRS]),
        jnp.stack([zs[la][iu] for la, _ in SHELL_PAIRS]), jnp.stack([zs[lb][ju] for _, lb in SHELL_PAIRS]))
    sig = dict(zip(SHELL_PAIRS, sigma))
    s_pi = s_pi[SHELL_PAIRS.index((1, 1))]
    # [P, 4, 4] blocks in the order s, p_x, p_y, p_z
    row_s = jnp.concatenate([sig[0, 0][..., None], u * sig[0, 1][..., None]], axis=-1)
    uu = u[..., :, None] * u[..., None, :]
    pp = (uu * (sig[1, 1] - s_pi)[..., None, None]
          + jnp.eye(3, dtype=dtype)[None] * s_pi[..., None, None])
    rows_p = jnp.concatenate([(u * sig[1, 0][..., None])[..., None], pp], axis=-1)
    upper = jnp.concatenate([row_s[..., None, :], rows_p], axis=-2)
    upper = jnp.where(pair[..., None, None], upper, jnp.zeros_like(upper))
    block = jnp.zeros((n_atoms, n_atoms, 4, 4), dtype)
    block = block.at[iu, ju].set(upper).at[ju, iu].set(jnp.swapaxes(upper, -1, -2))
    big = jnp.swapaxes(block, 1, 2).reshape(4 * n_atoms, 4 * n_atoms)
    slot = 4 * atom + jnp.where(l == 1, 1 + axis, 0)
    s = big[slot][:, slot]
    same = (atom[:, None] == atom[None, :]) | ~(mask[:, None] & mask[None, :])
    eye = jnp.eye(s.shape[0], dtype=dtype)
    return jnp.where(same, eye, s)
