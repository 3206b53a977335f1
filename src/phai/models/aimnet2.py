r"""AIMNet2 (2023 pretrained ensembles) in JAX: energies, forces and atomic charges.

Reproduces the TorchScript ensembles of :mod:`phai.pretrained.aimnet2` (``aimnet2-wb97m-d3``,
``aimnet2-b973c``; Anstine, Zubatyuk and Isayev, ChemRxiv 10.26434/chemrxiv-2023-296ch). One
member, for atoms ``i`` with neighbors ``j`` within ``r_c = 5`` Å (``G = 16`` shells, ``A = 16``
feature channels, ``H = 12`` vector combinations):

.. math::

   g^s_{ijg} &= e^{-\eta (r_{ij} - r_g)^2} f_C(r_{ij}), \qquad
   \mathbf g^v_{ijg} = g^s_{ijg}\, \hat{\mathbf r}_{ij} \\
   s_{iag} &= \sum_j g^s_{ijg} a_{jag}, \qquad
   \mathbf v_{iah} = \sum_j \sum_g \mathbf g^v_{ijg} a_{jag} \alpha_{agh} \\
   \mathrm{in}^a_i &= [a_i \,|\, s_i \,|\, \|\mathbf v_i\|^2] \ (704), \qquad
   \mathrm{in}^q_i = [q_i \,|\, \textstyle\sum_j g^s_{ijg} q_j \,|\,
                      \|\sum_j \sum_g \mathbf g^v_{ijg} q_j \beta_{gh}\|^2] \ (29)

Three passes: ``y = MLP_0(in^a)`` gives charges ``q`` (absolute), weights ``f`` and ``delta a``;
``y = MLP_1([in^a | in^q])`` gives a charge *update* ``q + y_0``, new ``f`` and ``delta a``; after
each of these the charges are equilibrated to the total charge ``Q`` (neural charge
equilibration, NQE):

.. math::  q_i \leftarrow q_i + f_i^2 \,\frac{Q - \sum_j q_j}{\sum_j f_j^2 + 10^{-6}}

and ``MLP_2([in^a | in^q])`` gives the 256 features of the energy head. The energy is

.. math::  E = \sum_i \bigl(\mathrm{MLP}_E(\mathrm{aim}_i) + E^0_{Z_i}\bigr) + E_\mathrm{coul}(q) + E_\mathrm{D3}

with the charges after pass 1 in the long-range Coulomb term
(:func:`phai.physics.coulomb.coulomb_energy`) and AIMNet2's D3(BJ) variant
(:func:`phai.physics.dispersion.d3bj_energy`), both over all pairs without cutoff. GELUs are
the exact (erf) form; ``MLP_1`` and ``MLP_2`` end with a GELU, ``MLP_0`` and ``MLP_E`` do not.
Forces are ``-dE/dR`` through everything, charges included. The ensemble returns the mean over
members and the standard deviation with ``ddof = 1``, as the TorchScript file.

Where phai differs from the file, deliberately: the local terms use a neighbor list within
``r_c`` instead of the dense ``N x N`` matrix (exact: pairs beyond ``r_c`` contribute 0), and
the AEV x feature contractions run as a scan over the neighbor slots with a hand-written,
scatter-free reverse pass (:func:`slot_contract`; the plain gather form stays available
with ``fast=False`` for derivatives beyond the first), the first pass's contraction (features
of the species alone) goes through per-species sums of the pair basis, and what does not
depend on the member (pair basis, its species sums, D3) is computed once per call; the
long-range terms are summed in row blocks (``O(block N)`` memory); the D3 weights are
factorised (see :mod:`phai.physics.dispersion`); the TorchScript module rounds coordinates
and charge to float32 even in double precision, phai does not. In float32, :class:`AIMNet2`
adds the (position-independent) atomic shifts on the host in float64, so its energies are
more accurate than the float32 TorchScript model, which adds shifts of up to -7e4 eV per atom
in float32.

Units: Å, eV, e. Shapes: ``N`` atom slots (padded), ``K`` neighbor slots, ``M`` members,
``S`` species of the model, ``F`` features. Padding slots have ``atom_mask`` False; neighbor
lists use the sentinel ``N``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, ModelFileError
from ..geometry import cosine_cutoff, dense_from_pairs, neighbor_pairs, neighbor_vectors
from ..physics.coulomb import coulomb_energy
from ..physics.diffuse import diffuse_orbital_energy
from ..physics.dispersion import D3BJParams, d3bj_energy
from ..structures import SYMBOLS, as_structure_list, bucket, validate_structure

PRETRAINED = ("aimnet2-wb97m-d3", "aimnet2-b973c")


# --------------------------------------------------------------------------------------------
# configuration and parameters
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AIMNet2Config:
    """Static hyperparameters of an AIMNet2 model (hashable; a static argument under jit).

    Attributes:
      elements: atomic numbers the model covers, in species-index order.
      nfeature: AFV channels ``A`` (16); nshifts: radial shells ``G`` (16); ncomb: vector
        combinations ``H`` (12).
      cutoff: local cutoff ``r_c`` (Å). eta: Gaussian width (Å^-2).
      final_gelu: per pass (3) whether the MLP ends with a GELU.
      nqe_eps: the 1e-6 in the NQE denominator.
      coulomb_switch_radius: ``r_s`` of the Coulomb switch (Å). half_ke: eV Å e^-2.

    The D3(BJ) constants, which differ between the two pretrained files, are not here but in
    the ``shared`` parameters (see :func:`params_from_arrays`), so both share a compilation.
    """

    elements: tuple[int, ...]
    nfeature: int = 16
    nshifts: int = 16
    ncomb: int = 12
    cutoff: float = 5.0
    eta: float = 14.512471199035645
    final_gelu: tuple[bool, ...] = (False, True, True)
    nqe_eps: float = 1e-6
    coulomb_switch_radius: float = 4.599999904632568
    half_ke: float = 7.1998226

    @classmethod
    def from_config(cls, config: dict) -> AIMNet2Config:
        """Build from the JSON config written by :func:`phai.pretrained.aimnet2.convert_aimnet2_torchscript`."""
        mlps = {m["name"]: m for m in config["mlps"]}
        return cls(
            elements=tuple(int(z) for z in config["elements"]),
            nfeature=int(config["nfeature"]), nshifts=int(config["nshifts"]), ncomb=int(config["ncomb"]),
            cutoff=float(config["aev"]["cutoff"]), eta=float(config["aev"]["eta"]),
            final_gelu=tuple(bool(mlps[f"mlp{k}"]["final_gelu"]) for k in range(3)),
            nqe_eps=float(config["nqe_eps"]),
            coulomb_switch_radius=float(config["coulomb"]["switch_radius"]),
            half_ke=float(config["coulomb"]["half_ke"]))


def params_from_arrays(arrays: dict, config: dict, dtype=np.float32) -> tuple[dict, dict]:
    """Split phai's stored arrays into ``(member_params, shared)`` pytrees indexed by species.

    ``member_params`` (leading axis ``M``): ``afv [M, S, A, G]``, ``shift [M, S]`` (eV),
    ``agh_a [M, A, G, H]``, ``agh_q [M, G, H]``, ``mlp`` = 3 tuples of ``(W [M, in, out], b [M, out])``,
    ``energy`` = tuple of layers. ``shared``: ``shifts [G]`` (Å), the D3 tables by species
    (``c6ref [S, S, 5, 5]``, ``cnref [S, 5]``, ``r4r2``, ``rcov``, ``cnmax [S]``) and ``d3``, a
    :class:`~phai.physics.dispersion.D3BJParams` of scalars. Arrays are NumPy in ``dtype``;
    species ``s`` is atomic number ``config["elements"][s]``.
    """
    z = np.asarray(config["elements"], dtype=np.int64)
    nf, ng = int(config["nfeature"]), int(config["nshifts"])
    cast = lambda x: np.asarray(x, dtype=dtype)
    mlps = {m["name"]: m["layers"] for m in config["mlps"]}

    def layers(name):
        return tuple((cast(arrays[f"{name}/{l}/W"]), cast(arrays[f"{name}/{l}/b"])) for l in range(mlps[name]))

    afv = arrays["afv"][:, z]
    member = {
        "afv": cast(afv.reshape(afv.shape[0], len(z), nf, ng)),
        "shift": cast(arrays["atomic_shift"][:, z]),
        "agh_a": cast(arrays["conv_a/agh"]),
        "agh_q": cast(arrays["conv_q/agh"][:, 0]),
        "mlp": tuple(layers(f"mlp{k}") for k in range(3)),
        "energy": layers("energy"),
    }
    shared = {
        "shifts": cast(arrays["aev/shifts"]),
        "c6ref": cast(arrays["d3/c6ref"][np.ix_(z, z)]),
        "cnref": cast(arrays["d3/cnref"][z]),
        "r4r2": cast(arrays["d3/r4r2"][z]),
        "rcov": cast(arrays["d3/rcov"][z]),
        "cnmax": cast(arrays["d3/cnmax"][z]),
        "d3": D3BJParams(**{k: cast(v) for k, v in config["d3"].items()}),
    }
    return member, shared


# --------------------------------------------------------------------------------------------
# pure kernels (one molecule, one member)
# --------------------------------------------------------------------------------------------

def radial_vector_basis(positions, neighbors, shifts, *, eta: float, cutoff: float):
    r"""Scalar and vector radial terms of AIMNet2's AEV on a dense neighbor list.

    Args:
      positions: ``[N, 3]`` (Å).
      neighbors: ``[N, K]`` int32, sentinel ``N``; must hold every pair within ``cutoff``.
      shifts: ``[G]`` Gaussian centres (Å).
      eta: width (Å^-2); cutoff: ``r_c`` (Å) of the cosine cutoff.

    Returns:
      ``gs [N, K, G] = exp(-eta (d - shift)^2) f_C(d)`` and ``gv [N, K, G, 3] = gs * u`` with
      ``u = (R_j - R_i) / d`` the unit vector to the neighbor; empty slots are exactly 0.
    """
    dR, d, mask = neighbor_vectors(positions, neighbors)
    fc = jnp.where(mask, cosine_cutoff(d, cutoff), jnp.zeros_like(d))
    gs = jnp.exp(-eta * (d[..., None] - shifts[None, None, :]) ** 2) * fc[..., None]
    u = dR / d[..., None]
    gv = gs[..., None] * u[:, :, None, :]
    return gs, gv


def gather_neighbors(x, neighbors):
    """``x[neighbors]`` with zeros for the sentinel: ``x [N, ...]`` -> ``[N, K, ...]``."""
    pad = jnp.zeros((1,) + x.shape[1:], dtype=x.dtype)
    return jnp.concatenate([x, pad], axis=0)[neighbors]


def neighbor_basis(positions, neighbors, shifts, *, eta: float, cutoff: float):
    """``B [N, K, G, 4]``: the scalar terms ``gs`` and the vector terms ``gv`` side by side,
    ``B[..., 0] = gs`` and ``B[..., 1:] = gv`` (see :func:`radial_vector_basis`).

    On a *symmetric* neighbor list (``j`` lists ``i`` whenever ``i`` lists ``j``) the basis has
    the pair symmetry ``B(j -> i) = S * B(i -> j)`` with ``S = (1, -1, -1, -1)`` (bit for bit:
    the displacement is exactly negated), which :func:`neighbor_contract` uses for its gradient.
    """
    gs, gv = radial_vector_basis(positions, neighbors, shifts, eta=eta, cutoff=cutoff)
    return jnp.concatenate([gs[..., None], gv], axis=-1)


_PAIR_SIGN = (1.0, -1.0, -1.0, -1.0)


def _take_rows(x, idx):
    """``x[idx]`` along axis 0 with zeros for out-of-range (sentinel) indices."""
    return jnp.take(x, idx, axis=0, mode="fill", fill_value=0)


def _slot_pair_terms(positions, neighbors_t, shifts, eta, cutoff):
    n = positions.shape[0]
    mask = neighbors_t < n
    dR = positions[jnp.minimum(neighbors_t, n - 1)] - positions[None, :, :]    # [K, N, 3]
    dR = jnp.where(mask[..., None], dR, jnp.zeros_like(dR))
    r2 = jnp.sum(dR * dR, axis=-1)
    d = jnp.sqrt(jnp.where(mask, r2, jnp.ones_like(r2)))
    fc, dfc = jax.jvp(lambda t: cosine_cutoff(t, cutoff), (d,), (jnp.ones_like(d),))
    fc = jnp.where(mask, fc, jnp.zeros_like(fc))
    dfc = jnp.where(mask, dfc, jnp.zeros_like(dfc))
    x = d[..., None] - shifts[None, None, :]                                    # [K, N, G]
    e = jnp.exp(-eta * x * x)
    u = dR / d[..., None]
    return mask, d, fc, dfc, x, e, u


def _slot_basis_values(terms):
    _, _, fc, _, _, e, u = terms
    gs = e * fc[..., None]
    return jnp.concatenate([gs[..., None], gs[..., None] * u[:, :, None, :]], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _slot_basis(positions, neighbors_t, shifts, eta, cutoff):
    return _slot_basis_values(_slot_pair_terms(positions, neighbors_t, shifts, eta, cutoff))


def _slot_basis_fwd(positions, neighbors_t, shifts, eta, cutoff):
    terms = _slot_pair_terms(positions, neighbors_t, shifts, eta, cutoff)
    return _slot_basis_values(terms), (neighbors_t, terms, jnp.zeros((), positions.dtype))


def _slot_basis_bwd(eta, cutoff, res, db):
    # By hand: the autodiff form's sums over the 3 vector components and the 16 shells
    # ([K, N, G, 3] arrays reduced along short axes) ran ~10x slower on XLA:CPU than one
    # batched dot of db against gs and its distance derivative, followed by [K, N] algebra.
    neighbors_t, (mask, d, fc, dfc, x, e, u), zero = res
    gs = e * fc[..., None]
    hs = e * ((-2.0 * eta) * x * fc[..., None] + dfc[..., None])               # d gs / d d
    p = jax.lax.dot_general(jnp.stack([gs, hs], axis=2), db, (((3,), (2,)), ((0, 1), (0, 1))))  # [K, N, 2, 4]
    du = p[:, :, 0, 1:]                                                         # dE/du [K, N, 3]
    dd = p[:, :, 1, 0] + sum(p[:, :, 1, c + 1] * u[..., c] for c in range(3))  # dE/dd [K, N]
    udu = du[..., 0] * u[..., 0] + du[..., 1] * u[..., 1] + du[..., 2] * u[..., 2]
    g = jnp.stack([(du[..., c] - udu * u[..., c]) / d + dd * u[..., c] for c in range(3)], axis=-1)
    g = jnp.where(mask[..., None], g, jnp.zeros_like(g))                        # dE / d(R_j - R_i)
    grad = -jnp.sum(g, axis=0)
    grad = grad.at[neighbors_t.reshape(-1)].add(g.reshape(-1, 3), mode="drop")
    return grad.astype(zero.dtype), None, None


_slot_basis.defvjp(_slot_basis_fwd, _slot_basis_bwd)


def slot_basis(positions, neighbors_t, shifts, *, eta: float, cutoff: float):
    """:func:`neighbor_basis` in slot-major layout: ``[K, N, G, 4]`` from ``neighbors_t = neighbors.T``
    (``[K, N]``, sentinel ``N``), free space. The layout :func:`slot_contract` scans over.

    Differentiable once in ``positions`` (hand-written VJP), not in ``shifts``.
    """
    return _slot_basis(positions, neighbors_t, shifts, float(eta), float(cutoff))


def _contract_fwd_scan(x, basis_t, neighbors_t):
    def step(acc, inp):
        idx, bk = inp                                              # [N], [N, G, C]
        return acc + _take_rows(x, idx)[..., None] * bk[:, None], None

    acc = jnp.zeros(x.shape + (basis_t.shape[-1],), dtype=jnp.result_type(x, basis_t))
    out, _ = jax.lax.scan(step, acc, (neighbors_t, basis_t))
    return out


@jax.custom_vjp
def slot_contract(x, basis_t, neighbors_t):
    r"""``W[i, f, g, c] = sum_k x[j_k(i), f, g] B[k, i, g, c]``: AIMNet2's AEV x feature contraction
    on a slot-major basis.

    Args:
      x: ``[N, F, G]`` per-atom features (padding rows are never read through a valid slot).
      basis_t: ``[K, N, G, C]`` pair basis (:func:`slot_basis`, ``C = 4``); empty slots 0.
      neighbors_t: ``[K, N]`` int32 (the transposed ``[N, K]`` list), sentinel ``N``; the
        list must be **symmetric** (every host list within a cutoff is), because the
        gradient with respect to ``x`` reuses it in place of the transposed list.

    Returns:
      ``[N, F, G, C]``.

    Speed: XLA:CPU runs the gather-then-contract form (``[N, K, F, G]`` materialised, a
    batched dot over ``(n, g)``, a scatter-add in the backward pass) 5-15x slower than this
    scan over the ``K`` neighbor slots, in which each step gathers ``N`` rows of ``x`` and
    accumulates into ``W``. The reverse pass has no scatter: by the pair symmetry of the
    basis, ``dx[j] = sum_k sum_c dW[j_k(j), :, :, c] S_c B[k, j, :, c]``, the same scan over
    ``j``'s own neighbors. Reverse mode only (no ``jvp``): for Hessians use the plain kernel
    (``member_energy(..., fast=False)``).
    """
    return _contract_fwd_scan(x, basis_t, neighbors_t)


def _contract_vjp_fwd(x, basis_t, neighbors_t):
    return _contract_fwd_scan(x, basis_t, neighbors_t), (x, basis_t, neighbors_t)


def _contract_vjp_bwd(res, dw):
    x, basis_t, neighbors_t = res
    sign = jnp.asarray(_PAIR_SIGN[:basis_t.shape[-1]], dtype=basis_t.dtype)
    # Shell-major layouts (xt [N, G, F], dwt [N, G, C, F], materialised once before the scan):
    # both reductions are then batched dots over (atom, shell) that read the gathered rows as
    # they lie. The basis is the *left* operand of the dx dot: with the other order XLA:CPU
    # re-laid the gathered rows to contract a minor axis of length C = 4, 10x slower per step.
    xt, dwt = jax.lax.optimization_barrier((jnp.swapaxes(x, 1, 2), jnp.transpose(dw, (0, 2, 3, 1))))
    batch = ((0, 1), (0, 1))
    nc = basis_t.shape[-1]

    def step(dx, inp):
        idx, bk = inp                                              # [N], [N, G, C] (signed)
        dx = dx + jax.lax.dot_general(bk, _take_rows(dwt, idx), (((2,), (2,)), batch))   # [N, G, F]
        db = jax.lax.dot_general(dwt, _take_rows(xt, idx), (((3,), (2,)), batch))        # [N, G, C]
        return dx, db

    def step_one_channel(dx, inp):                                 # F = 1 (the charges): no dots
        idx, bk = inp
        dwj = _take_rows(dwt, idx)[..., 0]                         # [N, G, C]
        dx = dx + sum(bk[..., c] * dwj[..., c] for c in range(nc))[..., None]
        return dx, dwt[..., 0] * _take_rows(xt, idx)

    if x.shape[1] == 1:
        step = step_one_channel
    dxt, db = jax.lax.scan(step, jnp.zeros_like(xt), (neighbors_t, basis_t * sign[None, None, None, :]))
    return jnp.swapaxes(dxt, 1, 2), db.astype(basis_t.dtype), None


slot_contract.defvjp(_contract_vjp_fwd, _contract_vjp_bwd)


def neighbor_contract(x, basis, neighbors):
    r"""``W[i, f, g, c] = sum_k x[j_k(i), f, g] B[i, k, g, c]`` with an atom-major ``basis [N, K, G, C]``
    and ``neighbors [N, K]``: :func:`slot_contract` on the transposed arrays (same contract:
    symmetric list, reverse mode only). Returns ``[N, F, G, C]``."""
    return slot_contract(x, jnp.moveaxis(basis, 1, 0), neighbors.T)


def conv_features_fast(a, basis_t, agh, neighbors_t):
    """:func:`conv_features` through :func:`slot_contract` (same output, ``[N, A G + A H]``) from
    the slot-major ``basis_t [K, N, G, 4]`` and ``neighbors_t [K, N]``."""
    n = a.shape[0]
    w = slot_contract(a, basis_t, neighbors_t)                      # [N, A, G, 4]
    return jnp.concatenate([w[..., 0].reshape(n, -1), _vector_norms(w, agh).reshape(n, -1)], axis=-1)


def _vector_norms(w, agh):
    """``|v|^2 [N, A, H]`` of ``v[n, a, h, :] = sum_g w[n, a, g, 1:] agh[a, g, h]`` (``w [N, A, G, 4]``).

    Component by component: XLA:CPU runs a sum over a minor axis of length 3 (``jnp.sum(v * v,
    axis=-1)``) as a fusion several times slower than three products and two additions.
    """
    v = [jnp.einsum("nag,agh->nah", w[..., c], agh) for c in (1, 2, 3)]
    return v[0] * v[0] + v[1] * v[1] + v[2] * v[2]


def conv_charges_fast(q, basis_t, agh, neighbors_t):
    """:func:`conv_charges` through :func:`slot_contract` (``[N, G + H]``), the charges as one
    feature channel broadcast over the shells (a separate scan: as a 17th channel of the
    features' scan the unaligned width made that scan 2x slower)."""
    n, g = q.shape[0], basis_t.shape[2]
    w = slot_contract(jnp.broadcast_to(q[:, None, None], (n, 1, g)), basis_t, neighbors_t)   # [N, 1, G, 4]
    return jnp.concatenate([w[:, 0, :, 0], _vector_norms(w, agh[None])[:, 0]], axis=-1)


def conv_features(a, gs, gv, agh, neighbors):
    """AEV x AFV contraction (``ConvSV`` with 2-D features) -> ``[N, A G + A H]``.

    Args:
      a: ``[N, A, G]`` atomic features.
      gs, gv: ``[N, K, G]``, ``[N, K, G, 3]`` from :func:`radial_vector_basis`.
      agh: ``[A, G, H]`` vector-combination weights.
      neighbors: ``[N, K]``.

    Returns:
      ``concat(s.flat (a, g), |v|^2.flat (a, h))`` with ``s[i,a,g] = sum_k gs[i,k,g] a[j_k,a,g]``
      and ``v[i,a,h,:] = sum_k sum_g gv[i,k,g,:] a[j_k,a,g] agh[a,g,h]``.

    The plain gather-then-einsum form, differentiable to any order (any neighbor list);
    :func:`conv_features_fast` is the fast first-order form used for energies and forces.
    """
    aj = gather_neighbors(a, neighbors)                                 # [N, K, A, G]
    s = jnp.einsum("nkg,nkag->nag", gs, aj)
    t = jnp.einsum("nkgd,nkag->nagd", gv, aj)
    v = jnp.einsum("nagd,agh->nahd", t, agh)
    n = a.shape[0]
    return jnp.concatenate([s.reshape(n, -1), jnp.sum(v * v, axis=-1).reshape(n, -1)], axis=-1)


def conv_charges(q, gs, gv, agh, neighbors):
    """Charge contraction (``ConvSV`` with scalar features) -> ``[N, G + H]``.

    ``q [N]`` charges (e), ``agh [G, H]``; returns ``concat(sum_k gs q_j, |sum_k sum_g gv q_j agh|^2)``.
    """
    qj = gather_neighbors(q, neighbors)                                 # [N, K]
    s = jnp.einsum("nkg,nk->ng", gs, qj)
    v = jnp.einsum("nkgd,nk,gh->nhd", gv, qj, agh)
    return jnp.concatenate([s, jnp.sum(v * v, axis=-1)], axis=-1)


def mlp(layers, x, final_gelu: bool):
    """Linear layers ``(W [in, out], b [out])`` with exact-GELU in between (and at the end if asked)."""
    for l, (w, b) in enumerate(layers):
        x = x @ w + b[None, :]
        if l < len(layers) - 1 or final_gelu:
            x = jax.nn.gelu(x, approximate=False)
    return x


def nqe(total_charge, q, f, *, eps: float = 1e-6):
    r"""Neural charge equilibration ``q + f^2 (Q - sum q) / (sum f^2 + eps)``.

    Args:
      total_charge: scalar ``Q`` (e). q: ``[N]`` uncorrected charges. f: ``[N]`` weights
        (padding slots must be 0 in both).

    Returns:
      ``[N]`` charges; their sum misses ``Q`` by ``eps (Q - sum q) / (sum f^2 + eps)``.
    """
    w = f * f
    return q + w * (total_charge - jnp.sum(q)) / (jnp.sum(w) + eps)


def _neighbor_species(species, neighbors_t, atom_mask):
    s = jnp.where(atom_mask, species, -1)
    return jnp.take(s, neighbors_t, mode="fill", fill_value=-1)                 # [K, N], -1: none


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _species_basis(basis_t, species, neighbors_t, atom_mask, nspecies):
    sj = _neighbor_species(species, neighbors_t, atom_mask)
    onehot = (sj[..., None] == jnp.arange(nspecies)[None, None, :]).astype(basis_t.dtype)   # [K, N, S]
    return jnp.einsum("kns,kngc->nsgc", onehot, basis_t)


def _species_basis_fwd(basis_t, species, neighbors_t, atom_mask, nspecies):
    return (_species_basis(basis_t, species, neighbors_t, atom_mask, nspecies),
            (_neighbor_species(species, neighbors_t, atom_mask), jnp.zeros((), basis_t.dtype)))


def _species_basis_bwd(nspecies, res, dbs):
    # dB[k, n] = dBs[n, s(j_k(n))]: one row gather (the einsum's transpose is a dot plus an
    # [N, K, G C] transpose, 3x slower)
    sj, zero = res
    n, _, g, c = dbs.shape
    rows = jnp.where(sj >= 0, jnp.arange(n)[None, :] * nspecies + sj, n * nspecies)
    db = jnp.take(dbs.reshape(n * nspecies, g, c), rows, axis=0, mode="fill", fill_value=0)
    return db.astype(zero.dtype), None, None, None


_species_basis.defvjp(_species_basis_fwd, _species_basis_bwd)


def species_neighbor_basis(basis_t, species, neighbors_t, atom_mask, nspecies: int):
    r"""``Bs [N, S, G, C] = sum_k [s(j_k(i)) = s] B[k, i, g, c]``: the basis summed per neighbor species.

    Args:
      basis_t: ``[K, N, G, C]`` (:func:`slot_basis`). species: ``[N]`` int species index.
      neighbors_t: ``[K, N]`` int32, sentinel ``N``. atom_mask: ``[N]`` bool (padding neighbors
        count for no species). nspecies: ``S``.

    The first pass's features depend on the species alone (``a_j = afv[s_j]``), so its
    contraction is ``sum_s afv[s, f, g] Bs[i, s, g, c]`` (:func:`conv_species_fast`): one
    ``[N, S, G, C]`` sum shared by every member instead of a scan over the neighbor slots.
    Differentiable once in ``basis_t``.
    """
    return _species_basis(basis_t, species, neighbors_t, atom_mask, int(nspecies))


def conv_species_fast(afv, species_basis, agh):
    """:func:`conv_features` of species features ``a_i = afv[s_i]`` from :func:`species_neighbor_basis`.

    ``afv [S, A, G]``, ``species_basis [N, S, G, 4]``, ``agh [A, G, H]`` -> ``[N, A G + A H]``.
    """
    n = species_basis.shape[0]
    w = jnp.einsum("sag,nsgd->nagd", afv, species_basis)              # [N, A, G, 4]
    return jnp.concatenate([w[..., 0].reshape(n, -1), _vector_norms(w, agh).reshape(n, -1)], axis=-1)


def local_geometry(positions, species, neighbors, atom_mask, shared, *, cfg: AIMNet2Config):
    """The member-independent pair terms of the local part: ``(basis_t [K, N, G, 4],
    species_basis [N, S, G, 4])`` (:func:`slot_basis`, :func:`species_neighbor_basis`)."""
    basis_t = slot_basis(positions, neighbors.T, shared["shifts"], eta=cfg.eta, cutoff=cfg.cutoff)
    return basis_t, species_neighbor_basis(basis_t, species, neighbors.T, atom_mask, len(cfg.elements))


def charge_term_energy(q, species, atom_mask, charge_terms):
    """``sum_i a[s_i] q_i + b[s_i] q_i^2`` (eV): an energy in the atomic charges ``q [N]`` (e) with
    per-species coefficients ``charge_terms [S, 2]`` (``a`` eV/e, ``b`` eV/e^2; further columns,
    :func:`diffuse_term_energy`'s, are not read), padding excluded.

    The correction a Δ model may fit on top of AIMNet2 (:meth:`AIMNet2.with_charge_terms`): an
    electronegativity (``a``) and hardness (``b``) shift per element, in the charges the model
    itself predicts, one table per state."""
    maskf = atom_mask.astype(q.dtype)
    c = charge_terms.astype(q.dtype)[species]
    return jnp.sum((c[:, 0] * q + c[:, 1] * q * q) * maskf)


def diffuse_term_energy(positions, species, atom_mask, charge_terms):
    """``d * w`` (eV): the diffuse-basis term of a ``[S, 4]`` charge-term table, else ``0``.

    ``w`` is :func:`~phai.physics.diffuse.diffuse_orbital_energy` (eV) of the per-species
    exponents in column 2 (bohr^-2, 0 = none) at ``positions [N, 3]`` (Å); ``d`` (eV/eV) is
    column 3 (the same in every row). It depends on the geometry only, not on the member, so
    the ensemble paths compute it once. ``charge_terms`` None or ``[S, 2]``: ``0`` (static)."""
    if charge_terms is None or charge_terms.shape[1] != 4:
        return jnp.zeros((), positions.dtype)
    maskf = atom_mask.astype(positions.dtype)
    alpha = charge_terms.astype(positions.dtype)[species, 2] * maskf
    return charge_terms[0, 3].astype(positions.dtype) * diffuse_orbital_energy(positions, alpha)


def state_kind(numbers, charge) -> tuple[int, str]:
    """``(Q, "even" | "odd")``: a state's total charge and the parity of its electron count, the
    key of a charge-term table (:meth:`AIMNet2.with_charge_terms`; for closed-shell neutrals the
    ions have odd electron counts, for radicals even)."""
    return int(charge), ("odd" if (int(np.sum(numbers)) - int(charge)) % 2 else "even")


def _signed(q: int) -> str:
    return f"{q:+d}" if q else "0"


def _passes(params, inputs, a, q_total, positions, species, atom_mask, *, cfg: AIMNet2Config,
            include_shifts: bool, block_size: int | None, charge_terms=None):
    """The three message passes, the energy head and the Coulomb term, shared by the fast and the
    plain contraction paths (``inputs(a, q)`` is the path's ``[N, D]`` MLP input; ``q=None`` in
    the first pass). ``charge_terms [S, 2]`` or ``[S, 4]``: adds :func:`charge_term_energy` of the
    final charges (None: nothing); the member-independent :func:`diffuse_term_energy` of an
    ``[S, 4]`` table is left to the callers.
    Returns ``(local + Coulomb energy eV, charges [N] e, Coulomb eV)``."""
    maskf = atom_mask.astype(positions.dtype)
    q = None
    for k in range(2):
        y = mlp(params["mlp"][k], inputs(a, q), cfg.final_gelu[k]) * maskf[:, None]
        qu = y[:, 0] if q is None else q + y[:, 0]
        q = nqe(q_total, qu, y[:, 1], eps=cfg.nqe_eps)
        a = a + y[:, 2:].reshape(a.shape)
    aim = mlp(params["mlp"][2], inputs(a, q), cfg.final_gelu[2]) * maskf[:, None]
    e_atom = mlp(params["energy"], aim, False)[:, 0]
    if include_shifts:
        e_atom = e_atom + params["shift"][species]
    e_local = jnp.sum(e_atom * maskf)
    if charge_terms is not None:
        e_local = e_local + charge_term_energy(q, species, atom_mask, charge_terms)
    e_coul = coulomb_energy(positions, q, atom_mask, switch_radius=cfg.coulomb_switch_radius,
                            half_ke=cfg.half_ke, block_size=block_size)
    return e_local + e_coul, q, e_coul


def member_energy_local(params, shared, geometry, positions, species, neighbors, atom_mask, total_charge, *,
                        cfg: AIMNet2Config, include_shifts: bool = True, block_size: int | None = None,
                        charge_terms=None):
    """One member's energy without the member-independent D3 and diffuse-basis
    (:func:`diffuse_term_energy`) terms, from :func:`local_geometry`.

    Differentiable (reverse mode, first order) in ``geometry`` and ``positions`` (the Coulomb
    term); :func:`member_energy` and :func:`ensemble_outputs` chain the geometry's VJP.
    Returns ``(energy eV, aux)`` with ``charges [N]`` and ``coulomb`` in ``aux``. ``charge_terms``:
    as :func:`member_energy`.
    """
    dtype = positions.dtype
    n = positions.shape[0]
    maskf = atom_mask.astype(dtype)
    basis_t, species_basis = geometry
    neighbors_t = neighbors.T
    a = params["afv"][species] * maskf[:, None, None]                  # [N, A, G]
    q_total = jnp.asarray(total_charge, dtype)

    def inputs(a, q=None):
        if q is None:
            return jnp.concatenate([a.reshape(n, -1), conv_species_fast(params["afv"], species_basis,
                                                                        params["agh_a"])], axis=-1)
        return jnp.concatenate([a.reshape(n, -1), conv_features_fast(a, basis_t, params["agh_a"], neighbors_t),
                                q[:, None], conv_charges_fast(q, basis_t, params["agh_q"], neighbors_t)], axis=-1)

    e, q, e_coul = _passes(params, inputs, a, q_total, positions, species, atom_mask, cfg=cfg,
                           include_shifts=include_shifts, block_size=block_size, charge_terms=charge_terms)
    return e, {"charges": q, "coulomb": e_coul}


def member_energy(params, shared, positions, species, neighbors, atom_mask, total_charge, *,
                  cfg: AIMNet2Config, include_shifts: bool = True, block_size: int | None = None,
                  fast: bool = True, charge_terms=None):
    """Energy and charges of one molecule for one ensemble member.

    Args:
      params: one member's slice of ``member_params`` (:func:`params_from_arrays`).
      shared: ``shared`` pytree.
      positions: ``[N, 3]`` (Å), float32 or float64 (params in the same dtype).
      species: ``[N]`` int32 species index (``cfg.elements``); any valid index on padding slots.
      neighbors: ``[N, K]`` int32, every pair within ``cfg.cutoff``, sentinel ``N``.
      atom_mask: ``[N]`` bool.
      total_charge: scalar (e).
      include_shifts: add the atomic energy shifts (constants of the composition).
      block_size: row block of the all-pairs Coulomb and D3 sums.
      fast: contract through :func:`neighbor_contract` (reverse mode only; needs a symmetric
        list); False: the plain gathers, differentiable to any order (Hessians).
      charge_terms: optional ``[S, 2]`` per-species coefficients of :func:`charge_term_energy`,
        added to the energy (a fitted correction, :meth:`AIMNet2.with_charge_terms`; None: the
        pretrained model as shipped); ``[S, 4]`` adds :func:`diffuse_term_energy` too.

    Returns:
      ``(energy, aux)``: scalar eV; ``aux`` dict with ``charges [N]`` (e, padding 0),
      ``coulomb``, ``dispersion`` (eV).
    """
    e_disp = d3bj_energy(positions, species, atom_mask, shared, shared["d3"], block_size=block_size)
    e_disp_all = e_disp + diffuse_term_energy(positions, species, atom_mask, charge_terms)
    if fast:
        geometry = local_geometry(positions, species, neighbors, atom_mask, shared, cfg=cfg)
        e, aux = member_energy_local(params, shared, geometry, positions, species, neighbors, atom_mask,
                                     total_charge, cfg=cfg, include_shifts=include_shifts, block_size=block_size,
                                     charge_terms=charge_terms)
        return e + e_disp_all, {**aux, "dispersion": e_disp}
    dtype = positions.dtype
    n = positions.shape[0]
    maskf = atom_mask.astype(dtype)
    gs, gv = radial_vector_basis(positions, neighbors, shared["shifts"], eta=cfg.eta, cutoff=cfg.cutoff)
    a = params["afv"][species] * maskf[:, None, None]                  # [N, A, G]
    q_total = jnp.asarray(total_charge, dtype)

    def inputs(a, q=None):
        x = [a.reshape(n, -1), conv_features(a, gs, gv, params["agh_a"], neighbors)]
        if q is not None:
            x += [q[:, None], conv_charges(q, gs, gv, params["agh_q"], neighbors)]
        return jnp.concatenate(x, axis=-1)

    e, q, e_coul = _passes(params, inputs, a, q_total, positions, species, atom_mask, cfg=cfg,
                           include_shifts=include_shifts, block_size=block_size, charge_terms=charge_terms)
    return e + e_disp_all, {"charges": q, "coulomb": e_coul, "dispersion": e_disp}


def ensemble_outputs(member_params, shared, positions, species, neighbors, atom_mask, total_charge, *,
                     cfg: AIMNet2Config, include_shifts: bool = True, block_size: int | None = None,
                     member_batch: int | None = None, charge_terms=None):
    """Per-member energies, forces and charges of one molecule.

    Args: as :func:`member_energy`, with ``member_params`` stacked over members ``[M, ...]``;
      ``member_batch``: members evaluated at once (``None``: all, by ``vmap``; 1: one after
      the other, least memory).

    Returns:
      dict with ``energy [M]`` (eV), ``forces [M, N, 3]`` (eV/Å, ``-dE/dR``), ``charges [M, N]`` (e).

    What does not depend on the member is computed once: the D3 energy and its gradient (and
    the diffuse-basis term of an ``[S, 4]`` table, :func:`diffuse_term_energy`), the pair basis
    and its per-species sums (:func:`local_geometry`), whose VJP each member then applies to its
    own cotangent.
    """
    e_disp, g_disp = jax.value_and_grad(
        lambda R: d3bj_energy(R, species, atom_mask, shared, shared["d3"], block_size=block_size)
        + diffuse_term_energy(R, species, atom_mask, charge_terms))(positions)
    geometry, geometry_vjp = jax.vjp(
        lambda R: local_geometry(R, species, neighbors, atom_mask, shared, cfg=cfg), positions)

    def one(p):
        (e, aux), (g_geo, g_pos) = jax.value_and_grad(member_energy_local, argnums=(2, 3), has_aux=True)(
            p, shared, geometry, positions, species, neighbors, atom_mask, total_charge,
            cfg=cfg, include_shifts=include_shifts, block_size=block_size, charge_terms=charge_terms)
        g = geometry_vjp(g_geo)[0] + g_pos + g_disp
        return e + e_disp, -g, aux["charges"]

    m = jax.tree_util.tree_leaves(member_params)[0].shape[0]
    e, f, q = jax.lax.map(one, member_params, batch_size=m if member_batch is None else member_batch)
    return {"energy": e, "forces": f, "charges": q}


def ensemble_energy(member_params, shared, positions, species, neighbors, atom_mask, total_charge, *,
                    cfg: AIMNet2Config, block_size: int | None = None, charge_terms=None):
    """Ensemble-mean energy (eV, atomic shifts included) of one molecule: a differentiable
    ``positions [N, 3] -> scalar`` for ``jax.grad``, Hessians or jax-md. Arguments as
    :func:`ensemble_outputs`; the neighbor list must stay valid (every pair within 5 Å)."""
    e = jax.vmap(lambda p: member_energy(p, shared, positions, species, neighbors, atom_mask, total_charge,
                                         cfg=cfg, block_size=block_size, fast=False,
                                         charge_terms=charge_terms)[0])(member_params)
    return jnp.mean(e)


@functools.partial(jax.jit, static_argnames=("cfg", "include_shifts", "block_size", "member_batch"))
def _ensemble_jit(member_params, shared, positions, species, neighbors, atom_mask, total_charge,
                  charge_terms=None, *, cfg, include_shifts, block_size, member_batch):
    return ensemble_outputs(member_params, shared, positions, species, neighbors, atom_mask, total_charge,
                            cfg=cfg, include_shifts=include_shifts, block_size=block_size,
                            member_batch=member_batch, charge_terms=charge_terms)


@functools.partial(jax.jit, static_argnames=("cfg", "member_batch"))
def _charges_vjp_jit(member_params, shared, positions, species, neighbors, atom_mask, total_charge, cotangent, *,
                     cfg, member_batch):
    """``sum_i c_i d qbar_i / dR [N, 3]``: the VJP of the ensemble-mean charges ``qbar [N]`` (e)
    with the cotangent ``c [N]`` (e.g. eV/e: then eV/Å), reverse mode through the fast path."""

    def mean_charges(r):
        geometry = local_geometry(r, species, neighbors, atom_mask, shared, cfg=cfg)

        def one(p):
            return member_energy_local(p, shared, geometry, r, species, neighbors, atom_mask, total_charge,
                                       cfg=cfg, include_shifts=False)[1]["charges"]

        m = jax.tree_util.tree_leaves(member_params)[0].shape[0]
        return jnp.mean(jax.lax.map(one, member_params, batch_size=m if member_batch is None else member_batch), 0)

    return jax.vjp(mean_charges, positions)[1](cotangent)[0]


# --------------------------------------------------------------------------------------------
# host side: validation, padding, the calculator
# --------------------------------------------------------------------------------------------

def check_charge_multiplicity(numbers, charge=0, multiplicity=None) -> tuple[int, int]:
    """Check a total charge (and multiplicity) against the electron count; returns ``(Q, 2S+1)``.

    Args:
      numbers: ``[A]`` atomic numbers.
      charge: total charge (e); must be an integer (``1.0`` is accepted).
      multiplicity: ``2S + 1``, or None for the lowest one (1 for an even electron count, else 2).

    Raises:
      InputError: a non-integer or non-finite charge, fewer than 0 electrons, a multiplicity
        that is not a positive integer, needs more unpaired electrons than there are, or has
        the wrong parity for the electron count.
    """
    z = np.asarray(numbers, dtype=np.int64)
    try:
        qf = float(charge)
    except (TypeError, ValueError):
        raise InputError(f"total charge {charge!r} is not a number; give an integer such as 0, 1 or -1") from None
    if not np.isfinite(qf) or not qf.is_integer():
        raise InputError(f"total charge {charge!r} is not an integer: molecular charges are whole "
                         f"multiples of e (give 0, 1, -1, ...)")
    q = int(qf)
    electrons = int(z.sum()) - q
    if electrons < 0:
        raise InputError(f"total charge {q:+d} leaves {electrons} electrons (the nuclei carry {int(z.sum())}): "
                         f"the charge is too positive for this structure")
    if multiplicity is None:
        return q, 1 + electrons % 2
    try:
        mf = float(multiplicity)
    except (TypeError, ValueError):
        raise InputError(f"multiplicity {multiplicity!r} is not a number; give 2S+1 (1, 2, 3, ...)") from None
    if not np.isfinite(mf) or not mf.is_integer() or mf < 1:
        raise InputError(f"multiplicity {multiplicity!r} must be a positive integer 2S+1 (1, 2, 3, ...)")
    m = int(mf)
    if m - 1 > electrons:
        raise InputError(f"multiplicity {m} needs {m - 1} unpaired electrons but charge {q:+d} leaves only "
                         f"{electrons} electrons")
    if (electrons + m - 1) % 2:
        raise InputError(f"multiplicity {m} does not fit {electrons} electrons (charge {q:+d}): an "
                         f"{'even' if electrons % 2 == 0 else 'odd'} electron count needs an "
                         f"{'odd' if electrons % 2 == 0 else 'even'} multiplicity, e.g. {1 + electrons % 2}")
    return q, m


class AIMNet2Inputs(NamedTuple):
    """One molecule padded for the jitted kernels (host NumPy arrays).

    Attributes:
      positions: ``[N, 3]`` (Å), float64; padding rows 0.
      species: ``[N]`` int32 species index; padding 0.
      neighbors: ``[N, K]`` int32, sentinel ``N``.
      atom_mask: ``[N]`` bool.
      charge: total charge (int, e).
      natoms: ``A``, the real atoms (the first ``A`` slots).
      numbers: ``[A]`` atomic numbers.
    """

    positions: np.ndarray
    species: np.ndarray
    neighbors: np.ndarray
    atom_mask: np.ndarray
    charge: int
    natoms: int
    numbers: np.ndarray


class AIMNet2Result(NamedTuple):
    """Ensemble prediction for one molecule (NumPy; std over members with ddof = 1).

    The first five fields are those of ANI's :class:`phai.potential.Result`, in the same order
    and units, so code written for one family reads the other without branches; a caller
    that also wants charges reads ``getattr(res, "charges", None)`` (None from charge-blind
    models).

    Attributes:
      energy: eV (float64), atomic shifts included.
      forces: ``[A, 3]`` eV/Å, in the working dtype.
      energy_std: eV, over the members.
      member_energies: ``[M]`` eV (float64).
      num_atoms: ``A``.
      charges: ``[A]`` atomic charges (e), summing to the total charge (to ~1e-5 e).
      forces_std, charges_std: ``[A, 3]``, ``[A]`` spreads over the members.
    """

    energy: float
    forces: np.ndarray
    energy_std: float
    member_energies: np.ndarray
    num_atoms: int
    charges: np.ndarray
    forces_std: np.ndarray
    charges_std: np.ndarray

    @property
    def qbc(self) -> float:
        """``energy_std / sqrt(A)`` (eV), as :attr:`phai.potential.Result.qbc`."""
        return self.energy_std / np.sqrt(self.num_atoms)


VMAP_MEMBERS_UP_TO = 64
"""Atom slots up to which :class:`AIMNet2` evaluates the members together (``vmap``, 2x faster at
24 slots); above, one after the other, which XLA:CPU runs as fast at 96 slots and 1.5x faster at
512, in a quarter of the memory."""


class AIMNet2:
    """A pretrained AIMNet2 ensemble: ``(numbers, positions Å, charge) -> energy, forces, charges``.

    Precision follows JAX: float32 by default, float64 inside ``with jax.enable_x64(True):``
    (parameters are cast on first use and cached per dtype; one compilation per dtype and size
    bucket). Elements outside the model are refused on the host
    (:class:`~phai.errors.UnsupportedElementError`), as are impossible charges.

    Args:
      arrays, config: as stored by :mod:`phai.pretrained` (see :meth:`from_pretrained`).
      block_size: row block of the all-pairs long-range sums; molecules with at most this many
        atom slots use one dense block.
      member_batch: members evaluated at once (None: all four by ``vmap`` up to
        :data:`VMAP_MEMBERS_UP_TO` atom slots, where that is fastest, one after the other above; 1
        for the least memory on large systems).
      charge_terms: None (the model as shipped), or a correction in the model's own atomic
        charges fitted by a Δ model (:meth:`with_charge_terms`).

    Example::

        model = AIMNet2.from_pretrained("aimnet2-wb97m-d3")
        out = model([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], charge=0)
        out.energy, out.forces, out.charges
    """

    charge_aware = True
    """Takes a total charge (and checks a multiplicity); returns atomic charges."""

    def __init__(self, arrays: dict, config: dict, *, block_size: int = 512, member_batch: int | None = None,
                 precision: str | None = None, charge_terms: list | None = None):
        if precision not in (None, "float32", "float64"):
            raise InputError(f"precision must be 'float32' or 'float64', got {precision!r}")
        self.precision = precision
        self.config = config
        self.cfg = AIMNet2Config.from_config(config)
        self.name = config.get("name", "aimnet2")
        self.elements = self.cfg.elements
        self.members = int(np.shape(arrays["afv"])[0])
        self.block_size = int(block_size)
        self.member_batch = member_batch
        self._arrays = arrays
        self._params: dict[str, tuple] = {}
        self._shift64 = np.asarray(arrays["atomic_shift"], dtype=np.float64)[:, np.asarray(self.elements)]
        self._species_of = np.full(max(len(SYMBOLS), max(self.elements) + 1), -1, dtype=np.int32)
        self._species_of[np.asarray(self.elements)] = np.arange(len(self.elements), dtype=np.int32)
        self.charge_terms = None if charge_terms is None else [dict(t) for t in charge_terms]
        """The fitted charge-term correction (:meth:`with_charge_terms`), or None."""
        self._term_tables = None if charge_terms is None else self._tables(self.charge_terms)

    def _tables(self, terms: list) -> dict:
        tables = {}
        for t in terms:
            try:
                q, parity = int(t["charge"]), str(t["electrons"])
                zs, a, b = [int(z) for z in t["elements"]], np.asarray(t["a"], float), np.asarray(t["b"], float)
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelFileError(f"{self.name}: a charge-term entry is malformed ({exc!r}): {t}") from None
            if parity not in ("even", "odd") or a.shape != (len(zs),) or b.shape != (len(zs),):
                raise ModelFileError(f"{self.name}: a charge-term entry needs 'electrons' even/odd and one a and b "
                                     f"per element: {t}")
            bad = sorted(set(zs) - set(self.elements))
            if bad:
                raise ModelFileError(f"{self.name}: charge terms for elements the model lacks: {bad}")
            d = float(t.get("diffuse", 0.0) or 0.0)
            table = np.zeros((len(self.elements), 4 if d else 2))
            table[self._species_of[zs], 0], table[self._species_of[zs], 1] = a, b
            if d:   # a diffuse-basis term: its exponents (bohr^-2) per element, d (eV/eV) in every row
                alpha = np.asarray(t.get("diffuse_alpha", ()), float)
                if alpha.shape != (len(zs),) or not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
                    raise ModelFileError(f"{self.name}: a charge-term entry with 'diffuse' needs one exponent "
                                         f">= 0 per element in 'diffuse_alpha': {t}")
                table[self._species_of[zs], 2] = alpha
                table[:, 3] = d
            tables[(q, parity)] = table
        return tables

    def with_charge_terms(self, terms: list | None) -> AIMNet2:
        """The same ensemble plus an energy in its own atomic charges, one table per kind of state.

        ``terms``: a list of ``{"charge": Q, "electrons": "even" | "odd", "elements": [Z...],
        "a": [eV/e ...], "b": [eV/e² ...]}``; a molecule of total charge ``Q`` whose electron
        count has that parity gets ``sum_i a[Z_i] q_i + b[Z_i] q_i^2`` added to every member's
        energy (:func:`charge_term_energy`, with each member's own charges ``q``). An entry may
        also carry ``"diffuse": d`` (eV/eV) and ``"diffuse_alpha": [bohr^-2 ...]`` (one exponent
        per element, 0 for none): then ``d`` times the kinetic energy of the most diffuse
        orbital of those s Gaussians (:func:`phai.physics.diffuse.diffuse_orbital_energy`, the
        energy of an electron only a finite diffuse basis binds) is added too. Forces,
        Hessians and the jax-md energy functions include it. A state with no table is refused.
        This is the correction :class:`phai.train.aimnet_me.AIMNetMETrainer` fits with
        ``base_charge_terms`` (recorded in the Δ folder). ``None``: the model as shipped.
        """
        return type(self)(self._arrays, self.config, block_size=self.block_size, member_batch=self.member_batch,
                          precision=self.precision, charge_terms=terms)

    def state_charge_terms(self, numbers, charge) -> np.ndarray | None:
        """``[S, 2]`` charge-term table for a molecule (atomic numbers) of total ``charge``, or None
        for a model without charge terms."""
        if self._term_tables is None:
            return None
        kind = state_kind(numbers, charge)
        table = self._term_tables.get(kind)
        if table is None:
            have = ", ".join(f"charge {_signed(q)} with {p} electrons" for q, p in sorted(self._term_tables))
            raise InputError(f"{self.name} with fitted charge terms covers {have}; not charge {_signed(kind[0])} "
                             f"with an {kind[1]} electron count")
        return table

    def _member_batch(self, slots: int) -> int:
        if self.member_batch is not None:
            return int(self.member_batch)
        return self.members if slots <= VMAP_MEMBERS_UP_TO else 1

    def with_precision(self, precision: str) -> AIMNet2:
        """The same ensemble evaluated in ``precision`` (``"float32"``/``"float64"``), sharing the arrays."""
        return type(self)(self._arrays, self.config, block_size=self.block_size, member_batch=self.member_batch,
                          precision=precision, charge_terms=self.charge_terms)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Chemical symbols of the elements the model covers."""
        return tuple(SYMBOLS[z] for z in self.elements)

    @classmethod
    def from_pretrained(cls, name: str = "aimnet2-wb97m-d3", **kwargs) -> AIMNet2:
        """Load ``"aimnet2-wb97m-d3"`` or ``"aimnet2-b973c"`` (converted into phai's cache on first use)."""
        from ..pretrained import load_arrays

        arrays, config = load_arrays(name)
        if config.get("kind") != "aimnet2":
            raise ModelFileError(f"{name} is a {config.get('kind')} model, not an AIMNet2 ensemble")
        return cls(arrays, config, **kwargs)

    def params(self, dtype) -> tuple[dict, dict]:
        """``(member_params, shared)`` as JAX arrays of ``dtype`` (cached)."""
        key = np.dtype(dtype).name
        if key not in self._params:
            member, shared = params_from_arrays(self._arrays, self.config, dtype)
            self._params[key] = jax.tree_util.tree_map(jnp.asarray, (member, shared))
        return self._params[key]

    def prepare(self, numbers, positions, charge=0, multiplicity=None, *,
                capacity: tuple[int, int] | None = None) -> AIMNet2Inputs:
        """Validate one structure and pad it into a size bucket (host only).

        ``capacity = (N, K)`` fixes the atom and neighbor slots (to share one compilation
        between molecules); by default both come from :func:`phai.structures.bucket`.
        """
        z, r = validate_structure(numbers, positions, supported=self.elements, model=self.name)
        q, _ = check_charge_multiplicity(z, charge, multiplicity)
        a = len(z)
        n = bucket(a) if capacity is None else int(capacity[0])
        if n < a:
            raise InputError(f"capacity of {n} atom slots is smaller than the {a} atoms: raise it")
        i, j, _ = neighbor_pairs(r, self.cfg.cutoff)
        nbr = dense_from_pairs(i, j, n, None if capacity is None else int(capacity[1]))
        pos = np.zeros((n, 3))
        pos[:a] = r
        species = np.zeros(n, dtype=np.int32)
        species[:a] = self._species_of[z]
        mask = np.zeros(n, dtype=bool)
        mask[:a] = True
        return AIMNet2Inputs(pos, species, nbr, mask, q, a, z)

    def evaluate(self, structures, *, forces: bool = True, labels=None, multiplicity=None) -> list[AIMNet2Result]:
        """Evaluate many structures, as :meth:`phai.potential.ANIPotential.evaluate`.

        Args:
          structures: ``ase.Atoms`` (total charge from ``atoms.info["charge"]``, default 0),
            ``(numbers, positions)`` pairs or ``(numbers, positions, charge)`` triples.
          forces: accepted for compatibility; forces are always computed (one pass).
          labels: names of the structures for error messages (default ``"structure k"``).
          multiplicity: one ``2S+1`` for every structure, checked against its electron count
            (None: ``atoms.info["multiplicity"]`` if present, else the lowest that fits).

        Every structure is validated first (an error names it), then evaluated one by one;
        structures of one size bucket share a compilation.
        """
        items = as_structure_list(structures)
        mults = [multiplicity if multiplicity is not None else
                 (s.info.get("multiplicity") if hasattr(s, "info") else None) for s in structures]
        prepared = []
        for k, ((z, r, q), m) in enumerate(zip(items, mults)):
            try:
                prepared.append(self.prepare(z, r, q, m))
            except InputError as exc:
                raise type(exc)(f"{labels[k] if labels else f'structure {k}'}: {exc}") from None
        return [self.evaluate_prepared(inp) for inp in prepared]

    def _in_precision(self):
        """The context of a call in ``precision`` (JAX's current one if None)."""
        return contextlib.nullcontext() if self.precision is None else jax.enable_x64(self.precision == "float64")

    def evaluate_prepared(self, inputs: AIMNet2Inputs) -> AIMNet2Result:
        """Run the ensemble on prepared inputs (in ``precision``, or JAX's current one if None)."""
        with self._in_precision():
            return self._evaluate(inputs)

    def _evaluate(self, inputs: AIMNet2Inputs) -> AIMNet2Result:
        dtype = jnp.result_type(float)
        member, shared = self.params(dtype)
        table = self.state_charge_terms(inputs.numbers, inputs.charge)
        out = _ensemble_jit(member, shared, jnp.asarray(inputs.positions, dtype), jnp.asarray(inputs.species),
                            jnp.asarray(inputs.neighbors), jnp.asarray(inputs.atom_mask),
                            jnp.asarray(inputs.charge, dtype), None if table is None else jnp.asarray(table, dtype),
                            cfg=self.cfg, include_shifts=False,
                            block_size=self.block_size, member_batch=self._member_batch(len(inputs.positions)))
        a = inputs.natoms
        shift = self._shift64[:, self._species_of[inputs.numbers]].sum(axis=1)     # [M] float64
        e = np.asarray(out["energy"], dtype=np.float64) + shift
        f = np.asarray(out["forces"])[:, :a]
        q = np.asarray(out["charges"])[:, :a]
        return AIMNet2Result(energy=float(e.mean()), forces=f.mean(0), energy_std=float(e.std(ddof=1)),
                             member_energies=e, num_atoms=a, charges=q.mean(0), forces_std=f.std(0, ddof=1),
                             charges_std=q.std(0, ddof=1))

    def charges_vjp(self, numbers, positions, charge, cotangent) -> np.ndarray:
        """``sum_i c_i d q_i / dR`` ``[A, 3]`` (float64 NumPy): how the ensemble-mean atomic
        charges ``q [A]`` (e) move with the positions (Å), contracted with ``cotangent`` ``c [A]``.
        The chain-rule term of a model that reads these charges as inputs: with
        ``c = dE/dq`` (eV/e) it is ``dE/dR`` through the charges (eV/Å). In ``precision``."""
        inputs = self.prepare(numbers, positions, charge)
        c = np.asarray(cotangent, np.float64).reshape(-1)
        if len(c) != inputs.natoms:
            raise InputError(f"cotangent has {len(c)} entries for {inputs.natoms} atoms")
        with self._in_precision():
            dtype = jnp.result_type(float)
            member, shared = self.params(dtype)
            ct = np.zeros(len(inputs.positions))
            ct[:inputs.natoms] = c
            g = _charges_vjp_jit(member, shared, jnp.asarray(inputs.positions, dtype), jnp.asarray(inputs.species),
                                 jnp.asarray(inputs.neighbors), jnp.asarray(inputs.atom_mask),
                                 jnp.asarray(inputs.charge, dtype), jnp.asarray(ct, dtype), cfg=self.cfg,
                                 member_batch=self._member_batch(len(inputs.positions)))
            return np.asarray(g, np.float64)[:inputs.natoms]

    def __call__(self, numbers, positions=None, charge=None, multiplicity=None, *,
                 capacity: tuple[int, int] | None = None) -> AIMNet2Result:
        """Energy (eV), forces (eV/Å) and atomic charges (e) of one molecule, ensemble mean and std.

        Args:
          numbers: ``[A]`` atomic numbers or symbols (H B C N O F Si P S Cl As Se Br I), or an
            ``ase.Atoms`` (then ``positions`` is None).
          positions: ``[A, 3]`` (Å).
          charge: total charge (integer, e); None: ``atoms.info["charge"]`` for an ``ase.Atoms``
            (and ``atoms.info["multiplicity"]`` if ``multiplicity`` is None), else 0.
          multiplicity: checked against the electron count, but **not** an input of AIMNet2:
            the 2023 models cannot tell spin states apart.
          capacity: optional fixed ``(atom slots, neighbor slots)``.
        """
        if positions is None:
            if not hasattr(numbers, "get_positions"):
                raise InputError("positions are missing: pass (numbers, positions in Å) or an ase.Atoms")
            info = getattr(numbers, "info", {})
            charge = info.get("charge", 0) if charge is None else charge
            multiplicity = info.get("multiplicity") if multiplicity is None else multiplicity
            numbers, positions = numbers.get_atomic_numbers(), numbers.get_positions()
        charge = 0 if charge is None else charge
        return self.evaluate_prepared(self.prepare(numbers, positions, charge, multiplicity, capacity=capacity))


def load_aimnet2(name: str = "aimnet2-wb97m-d3", **kwargs) -> AIMNet2:
    """:meth:`AIMNet2.from_pretrained`."""
    return AIMNet2.from_pretrained(name, **kwargs)

