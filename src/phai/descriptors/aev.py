r"""ANI atomic environment vectors (Justin Smith symmetry functions), as TorchANI computes them.

For atom ``i`` with neighbors ``j`` (within ``Rcr``) and unordered neighbor pairs
``j < k`` (both within ``Rca``):

.. math::

   G^R_{i,(Z,s)} &= \sum_{j: Z_j = Z} 0.25\, e^{-\eta_R (R_{ij} - R_s)^2} f_C(R_{ij}; R_{cr}) \\
   G^A_{i,(Z Z',a,z)} &= \sum_{j<k: \{Z_j, Z_k\} = \{Z, Z'\}}
        2 \left(\frac{1 + \cos(\theta'_{ijk} - \theta_z)}{2}\right)^{\zeta}
        e^{-\eta_A ((R_{ij} + R_{ik})/2 - R_a)^2} f_C(R_{ij}; R_{ca}) f_C(R_{ik}; R_{ca})

with :math:`\theta' = \arccos(0.95 \cos\theta_{ijk})`. Two deliberate differences from the
ANI-1 paper, taken from NeuroChem through TorchANI (``torchani/aev.py`` @ 2.2.4) because
parity needs them: the factor 0.25 on radial terms and the 0.95 inside the arccos. We use
``cos(theta' - theta_z) = 0.95 c cos(theta_z) + sqrt(1 - 0.95^2 c^2) sin(theta_z)``, which is
the same function without an arccos (so its gradient is finite everywhere).

Layout of the vector (``[A, F]``, ``F = S n_R + S (S + 1) / 2 n_A n_z``): radial blocks per
neighbor species, then angular blocks per unordered species pair in upper-triangle order
``(0,0), (0,1), ..., (1,1), ...``; inside an angular block the index is ``a n_z + z``
(angle shift fastest).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..geometry import pair_vectors

# Large systems: the terms of more than CHUNK_ABOVE pairs (or triples) are summed in
# chunks of CHUNK_SIZE inside ``lax.scan``, each chunk under ``jax.checkpoint``, so that
# the backward pass recomputes a chunk's terms instead of keeping every intermediate of
# every triple: memory then grows with the atoms (the [N, F] sums) rather than with the
# ~190 triples per atom of liquid water. Read at trace time; smaller lists take the
# direct path unchanged. ``aev(..., chunk_size=)`` overrides both per call.
CHUNK_SIZE = 1 << 17
CHUNK_ABOVE = 1 << 20


@dataclasses.dataclass(frozen=True)
class AEVParams:
    """Constants of an ANI AEV (a NeuroChem ``.params`` file). Distances in Å.

    Attributes:
      Rcr, Rca: radial and angular cutoffs.
      EtaR: radial Gaussian widths (Å^-2), usually one value.
      ShfR: radial shifts ``R_s``.
      EtaA: angular Gaussian widths, usually one value.
      Zeta: angular exponents, usually one value.
      ShfA: angular radial shifts ``R_a``.
      ShfZ: angle shifts ``theta_z`` (radians).
      species: chemical symbols in model order (``("H", "C", "N", "O")`` for ANI-1x).
    """

    Rcr: float
    Rca: float
    EtaR: tuple[float, ...]
    ShfR: tuple[float, ...]
    EtaA: tuple[float, ...]
    Zeta: tuple[float, ...]
    ShfA: tuple[float, ...]
    ShfZ: tuple[float, ...]
    species: tuple[str, ...]

    def __post_init__(self):
        if not 0 < self.Rca <= self.Rcr:
            raise ValueError(f"need 0 < Rca <= Rcr, got Rca={self.Rca}, Rcr={self.Rcr}")

    @property
    def num_species(self) -> int:
        return len(self.species)

    @property
    def radial_sublength(self) -> int:
        return len(self.EtaR) * len(self.ShfR)

    @property
    def angular_sublength(self) -> int:
        return len(self.EtaA) * len(self.Zeta) * len(self.ShfA) * len(self.ShfZ)

    @property
    def num_species_pairs(self) -> int:
        return self.num_species * (self.num_species + 1) // 2

    @property
    def length(self) -> int:
        """AEV length ``F`` (384 for ANI-1x)."""
        return self.num_species * self.radial_sublength + self.num_species_pairs * self.angular_sublength

    def species_pair_table(self) -> np.ndarray:
        """``[S, S]`` int32: the angular block of an unordered species pair (upper-triangle order)."""
        s = self.num_species
        table = np.zeros((s, s), dtype=np.int32)
        for k, (a, b) in enumerate(zip(*np.triu_indices(s))):
            table[a, b] = table[b, a] = k
        return table

    @classmethod
    def from_neurochem(cls, text: str) -> AEVParams:
        """Parse the text of a NeuroChem ``.params`` file (``Rcr = ...``, ``ShfR = [..]``...).

        The cutoffs stay exact; the arrays are rounded to float32, as TorchANI does."""
        vals: dict = {}
        for line in text.splitlines():
            if "=" not in line:
                continue
            name, value = (x.strip() for x in line.split("=", 1))
            if name in ("Rcr", "Rca"):
                vals[name] = float(value)
            elif name in ("EtaR", "ShfR", "Zeta", "ShfZ", "EtaA", "ShfA"):
                # Rounded to float32, as NeuroChem and TorchANI hold them (torch.tensor of
                # the parsed floats): a float64 model then matches TorchANI's .double().
                vals[name] = tuple(float(np.float32(float(x))) for x in value.strip("[]").split(","))
            elif name == "Atyp":
                vals["species"] = tuple(x.strip() for x in value.strip("[]").split(","))
        missing = {f.name for f in dataclasses.fields(cls)} - set(vals)
        if missing:
            raise ValueError(f"NeuroChem .params text lacks {sorted(missing)}")
        return cls(**vals)


def _power(x, zeta: float):
    """``x ** zeta`` by repeated squaring when ``zeta`` is a small integer (ANI: 32)."""
    if float(zeta).is_integer() and 0 < zeta <= 64:
        return x ** int(zeta)
    return x ** zeta


def _cutoff_pair(d, cutoff: float):
    """Cosine cutoff and its derivative, zero beyond ``cutoff`` (pairs at ``cutoff`` kept)."""
    inside = (d <= cutoff).astype(d.dtype)
    arg = d * (jnp.pi / cutoff)
    return (0.5 * jnp.cos(arg) + 0.5) * inside, (-0.5 * jnp.pi / cutoff) * jnp.sin(arg) * inside


# The two elementwise kernels below carry hand-written JVP rules, written with einsum:
# XLA:CPU compiles the reverse pass JAX derives from broadcast products (reductions over
# small trailing axes) 5-20x slower than the forward pass, while the transpose of an
# einsum is a batched matmul that it runs well. The rules are themselves differentiable,
# so Hessians (forward over reverse) work.


def _radial_with_derivative(d, params: AEVParams):
    """``(t, dt/dd)`` for flat distances ``d [M]``, both ``[M, n_R]``."""
    dt = d.dtype
    eta = jnp.repeat(jnp.asarray(params.EtaR, dt), len(params.ShfR))[None, :]
    shf = jnp.tile(jnp.asarray(params.ShfR, dt), len(params.EtaR))[None, :]
    x = d[:, None]
    fc, dfc = _cutoff_pair(x, params.Rcr)
    g = 0.25 * jnp.exp(-eta * (x - shf) ** 2)
    return g * fc, g * (dfc - 2.0 * eta * (x - shf) * fc)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def radial_terms(d, params: AEVParams):
    """Radial terms ``0.25 exp(-eta_R (d - R_s)^2) f_C(d; Rcr)``.

    Args:
      d: distances ``[M]`` (Å).

    Returns:
      ``[M, n_R]`` with ``n_R = len(EtaR) len(ShfR)`` (shift fastest).
    """
    return _radial_with_derivative(d, params)[0]


@radial_terms.defjvp
def _radial_terms_jvp(params, primals, tangents):
    (d,), (d_dot,) = primals, tangents
    t, dt_dd = _radial_with_derivative(d, params)
    return t, jnp.einsum("mr,m->mr", dt_dd, d_dot)


def _angular_with_derivatives(cos, d_j, d_k, params: AEVParams):
    """Factors and derivatives for flat pair arrays ``[M]``: angle ``[M, n_zeta n_z]``,
    radial ``[M, n_eta n_a]``, (d angle / d cos, / d d_j, / d d_k), d radial / d d_j."""
    dt = d_j.dtype
    c = (0.95 * cos)[:, None]
    s = jnp.sqrt(1.0 - c * c)  # |c| <= 0.95: never at the kink of sqrt
    shfz = jnp.asarray(params.ShfZ, dt)[None, :]
    cz, sz = jnp.cos(shfz), jnp.sin(shfz)
    base = 0.5 * (1.0 + c * cz + s * sz)  # [M, n_z]
    dbase = 0.5 * 0.95 * (cz - (c / s) * sz)  # d base / d cos
    fj, dfj = _cutoff_pair(d_j, params.Rca)
    fk, dfk = _cutoff_pair(d_k, params.Rca)
    fj, dfj, fk, dfk = (x[:, None] for x in (fj, dfj, fk, dfk))
    pz = jnp.concatenate([_power(base, z) for z in params.Zeta], axis=1)
    dpz = jnp.concatenate([(z * _power(base, z - 1) if z != 1 else jnp.ones_like(base)) * dbase
                           for z in params.Zeta], axis=1)
    angle = 2.0 * fj * fk * pz
    d_angle = (2.0 * fj * fk * dpz, 2.0 * dfj * fk * pz, 2.0 * fj * dfk * pz)  # d/d(cos, d_j, d_k)
    mean_d = (0.5 * (d_j + d_k))[:, None]
    eta = jnp.repeat(jnp.asarray(params.EtaA, dt), len(params.ShfA))[None, :]
    shfa = jnp.tile(jnp.asarray(params.ShfA, dt), len(params.EtaA))[None, :]
    radial = jnp.exp(-eta * (mean_d - shfa) ** 2)  # [M, n_eta n_a]
    d_radial = -eta * (mean_d - shfa) * radial  # d/d d_j = d/d d_k
    return angle, radial, d_angle, d_radial


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def angular_factors(cos, d_j, d_k, params: AEVParams):
    """The two factors of the angular terms of neighbor pairs.

    An angular term is ``2 f_C(R_ij) f_C(R_ik) ((1 + cos(theta' - theta_z)) / 2)^zeta``
    times ``exp(-eta_A ((R_ij + R_ik) / 2 - R_a)^2)``, with
    ``cos(theta' - theta_z) = 0.95 c cos(theta_z) + sqrt(1 - 0.95^2 c^2) sin(theta_z)``.

    Args:
      cos: ``cos(theta_ijk)`` of each pair, ``[M]``.
      d_j, d_k: the two distances ``[M]`` (Å), strictly positive.

    Returns:
      ``(angle [M, n_zeta n_z], radial [M, n_eta n_a])``.
    """
    angle, radial, _, _ = _angular_with_derivatives(cos, d_j, d_k, params)
    return angle, radial


@angular_factors.defjvp
def _angular_factors_jvp(params, primals, tangents):
    cos, d_j, d_k = primals
    c_dot, dj_dot, dk_dot = tangents
    angle, radial, (da_c, da_j, da_k), dr = _angular_with_derivatives(cos, d_j, d_k, params)
    angle_dot = (jnp.einsum("mz,m->mz", da_c, c_dot) + jnp.einsum("mz,m->mz", da_j, dj_dot)
                 + jnp.einsum("mz,m->mz", da_k, dk_dot))
    return (angle, radial), (angle_dot, jnp.einsum("ma,m->ma", dr, dj_dot + dk_dot))


def _cosines(dR_j, dR_k, d_j, d_k):
    return jnp.einsum("mx,mx->m", dR_j, dR_k) / jnp.maximum(d_j * d_k, 1e-10)


def _angular_products(angle, radial, params: AEVParams):
    """``[M, n_A]`` terms in TorchANI's order (eta, zeta, a, z) from the two factors."""
    ne, nz, na, nzt = len(params.EtaA), len(params.Zeta), len(params.ShfA), len(params.ShfZ)
    r = radial.reshape(-1, ne, na)
    a = angle.reshape(-1, nz, nzt)
    return jnp.einsum("mea,mtz->metaz", r, a).reshape(-1, params.angular_sublength)


def angular_terms(dR_j, dR_k, d_j, d_k, params: AEVParams):
    """Angular terms for neighbor pairs, ``[M, n_A]`` in TorchANI's order (angle fastest).

    Args:
      dR_j, dR_k: vectors from the centre atom to neighbors j and k, ``[M, 3]`` (Å).
      d_j, d_k: their lengths ``[M]`` (Å), strictly positive.
    """
    angle, radial = angular_factors(_cosines(dR_j, dR_k, d_j, d_k), d_j, d_k, params)
    return _angular_products(angle, radial, params)


def _segment_sum_over(terms_fn, lists, num_segments: int, chunk_size, sentinel: int):
    """``segment_sum(*terms_fn(lists), num_segments)``, optionally over chunks of the lists.

    Args:
      terms_fn: ``lists [L, M] int32 -> (terms [M', W], rows [M'] int32)``, elementwise in
        the list entries (``M'`` a fixed multiple of ``M``); entries holding the sentinel
        must give rows ``num_segments - 1`` (the dropped row).
      lists: ``[L, M]`` int32 index lists, sentinel in padding entries.
      num_segments: rows of the result (the last one collects padding).
      chunk_size: ``None`` for one pass; else the lists are padded with their sentinel
        to a multiple of ``chunk_size`` and summed chunk by chunk in ``lax.scan``, each
        chunk's terms under ``jax.checkpoint`` (recomputed in the backward pass).
      sentinel: the padding index (the atom count ``N``).

    Returns:
      ``[num_segments, W]`` sums. Chunked and direct results differ only by the order of
      floating-point additions.
    """
    m = lists.shape[1]
    if chunk_size is None or m <= chunk_size:
        terms, rows = terms_fn(lists)
        return jax.ops.segment_sum(terms, rows, num_segments=num_segments)
    chunks = -(-m // chunk_size)
    pad = jnp.full((lists.shape[0], chunks * chunk_size - m), sentinel, lists.dtype)
    xs = jnp.concatenate([lists, pad], axis=1).reshape(lists.shape[0], chunks, chunk_size).transpose(1, 0, 2)
    chunk_fn = jax.checkpoint(terms_fn, prevent_cse=False)
    shape = jax.eval_shape(terms_fn, xs[0])[0]

    def body(acc, x):
        terms, rows = chunk_fn(x)
        return acc.at[rows].add(terms, mode="promise_in_bounds"), None

    acc, _ = jax.lax.scan(body, jnp.zeros((num_segments, shape.shape[1]), shape.dtype), xs)
    return acc


def _chunking(size: int, chunk_size):
    """The chunk size for a list of ``size`` entries (``None``: one pass)."""
    if chunk_size is not None:
        return int(chunk_size) if chunk_size > 0 else None
    return CHUNK_SIZE if size > CHUNK_ABOVE else None


def aev(R, species, pairs, triples, params: AEVParams, displacement_fn=None, chunk_size=None):
    """ANI AEVs of a flat padded atom set.

    Args:
      R: positions ``[N, 3]`` (Å).
      species: ``[N]`` int32 model species index (0..S-1). Padding slots may hold any
        value in range: they appear in no pair or triple, and their own rows are
        discarded by the caller's mask.
      pairs: ``[2, P]`` int32 unordered pairs ``i < j`` within ``Rcr``, padding ``N``.
      triples: ``[3, T]`` int32 ``(centre, j, k)`` with ``j, k`` within ``Rca`` of the
        centre, each unordered neighbor pair once, padding ``N``.
      params: :class:`AEVParams`.
      displacement_fn: jax-md displacement (free space if ``None``).
      chunk_size: ``None`` (default): lists longer than ``CHUNK_ABOVE`` are summed in
        chunks of ``CHUNK_SIZE`` (module constants, bounded memory for large systems);
        a positive int: chunks of that size for any list longer than it; ``0``: never.

    Returns:
      ``[N, F]`` AEVs in the dtype of ``R``.

    See :mod:`phai.geometry` for building ``pairs`` and ``triples`` (on the host, or from a
    dense neighbor list inside jit). Terms are summed into their species blocks with
    ``segment_sum`` over the row index ``atom * blocks + block``; padding entries go to
    one extra row that is dropped. Each radial term is computed once and added to both
    atoms of its pair, as in TorchANI. Chunked sums (large lists) run in ``lax.scan`` with
    each chunk rematerialised in the backward pass: the result is the same up to the
    order of floating-point additions.
    """
    n = R.shape[0]
    S = params.num_species
    safe_species = jnp.clip(species, 0, S - 1)
    at = lambda idx: safe_species[jnp.minimum(idx, n - 1)]

    # radial: [P, n_R], added to row i*S + s_j and to row j*S + s_i
    def radial_rows(pl):
        i, j = pl[0], pl[1]
        _, d, mask = pair_vectors(R, i, j, displacement_fn)
        rad = radial_terms(d, params)
        rows = jnp.concatenate([jnp.where(mask, i * S + at(j), n * S), jnp.where(mask, j * S + at(i), n * S)])
        return jnp.concatenate([rad, rad]), rows

    radial = _segment_sum_over(radial_rows, pairs, n * S + 1, _chunking(pairs.shape[1], chunk_size), n)[:-1]
    radial = radial.reshape(n, S * params.radial_sublength)

    # angular: [T, n_A] into row centre*C + pair block of (s_j, s_k)
    table = jnp.asarray(params.species_pair_table())
    C = params.num_species_pairs

    def angular_rows(tl):
        c, tj, tk = tl[0], tl[1], tl[2]
        dRj, dj, maskt = pair_vectors(R, c, tj, displacement_fn)
        dRk, dk, _ = pair_vectors(R, c, tk, displacement_fn)
        angle, rad_a = angular_factors(_cosines(dRj, dRk, dj, dk), dj, dk, params)
        terms = _angular_products(angle, rad_a, params)
        return terms, jnp.where(maskt, c * C + table[at(tj), at(tk)], n * C)

    angular = _segment_sum_over(angular_rows, triples, n * C + 1, _chunking(triples.shape[1], chunk_size), n)[:-1]
    angular = angular.reshape(n, C * params.angular_sublength)
    return jnp.concatenate([radial, angular], axis=-1)


__all__: Sequence[str] = ("AEVParams", "aev", "angular_factors", "angular_terms", "radial_terms")
