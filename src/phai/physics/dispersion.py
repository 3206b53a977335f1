r"""Two-body DFT-D3(BJ) dispersion in the variant that AIMNet2's TorchScript files compute.

Grimme's D3 with Becke-Johnson damping (J. Chem. Phys. 132, 154104, 2010; J. Comput. Chem.
32, 1456, 2011), as coded in the ``D3BJ`` module of the 2023 AIMNet2 ensembles. Distances
are converted to bohr (``R = 1.8897261258369282 r``), energies from Hartree to eV:

.. math::

   \mathrm{CN}_i &= \min\Bigl(\sum_{j \ne i} \frac{1}{1 + e^{k_1 ((R^{cov}_i + R^{cov}_j)/R_{ij} - 1)}},
                        \ \mathrm{CN}^{max}_{Z_i}\Bigr) \\
   w_{ia} &= e^{k_3 (\mathrm{CN}_i - \mathrm{CN}^{ref}_{Z_i a})^2}, \qquad
   C_6^{ij} = \frac{\sum_{ab} C_{6,ab}^{ref}(Z_i, Z_j)\, w_{ia} w_{jb}}{\max(W_i W_j, 10^{-5})},
   \quad W_i = \sum_a w_{ia} \\
   E &= -\frac{E_h}{2} \sum_{i \ne j} C_6^{ij}\Bigl(\frac{s_6}{R_{ij}^6 + R_0^6}
        + \frac{s_8\, r_{ij}}{R_{ij}^8 + R_0^8}\Bigr), \quad r_{ij} = 3 \sqrt{Q_i}\sqrt{Q_j},
   \quad R_0 = a_1 \sqrt{r_{ij}} + a_2

with ``k1 = -16``, ``k3 = -4``, ``C6 = 0`` where ``W_i W_j < 1e-5``, and ``E_h / 2 =
13.605693012183622`` eV. Deliberate differences from standard D3 codes, all taken from the
file: the coordination number has no cutoff but is clamped at a per-element ``CN^max``;
missing reference points (stored as ``CN^ref = -1``, ``C6^ref = 0``) are *not* skipped, so they
still add to the Gaussian weights; no three-body term; no distance cutoff. An off-the-shelf
D3 (simple-dftd3, dftd3, tblite) gives different numbers.

The reference CNs depend only on the element and the reference index, so the Gaussian weight
``L_ijab`` factorises as ``w_ia w_jb``; the ``[N, N, 5, 5]`` tensor of the original is never
built. Per-atom ``T_i[t, b] = sum_a C6ref[Z_i, t, a, b] w_ia`` (``[N, S, 5]``) turns the C6
contraction into one matrix product per row block (``T`` against ``[s_j = s] w_jb``). All-pairs sums go through
:func:`phai.physics.coulomb.pair_row_sums` (``O(block N)`` memory).

Shapes: ``N`` atom slots, ``S`` species of the model, ``R = 5`` reference points.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from .coulomb import pair_row_sums

HARTREE_HALF_EV = 13.605693012183622
"""eV, half the Hartree energy as inlined in AIMNet2's D3 code (ordered pairs are summed)."""
ANGSTROM_TO_BOHR = 1.8897261258369282
"""bohr per Å as inlined in AIMNet2's D3 code."""


_FIELDS = ("s6", "s8", "a1", "a2", "k1", "k3", "weight_floor", "angstrom_to_bohr", "energy_factor")


@functools.partial(jax.tree_util.register_dataclass, data_fields=list(_FIELDS), meta_fields=[])
@dataclasses.dataclass(frozen=True)
class D3BJParams:
    """Damping and weighting constants of D3(BJ).

    A pytree whose leaves are the constants: pass it as an ordinary (traced) argument so that
    models differing only in damping share one compilation, or with plain floats as a
    static argument.

    Attributes:
      s6, s8: scaling of the C6 and C8 terms.
      a1: dimensionless; a2: bohr (BJ damping radius ``R0 = a1 sqrt(C8/C6) + a2``).
      k1: coordination-number steepness (-16); k3: Gaussian weight exponent (-4).
      weight_floor: ``W`` below which C6 is 0 and the denominator floor (1e-5).
      angstrom_to_bohr, energy_factor: unit conversions as inlined in the model (the energy
        factor is -Hartree/2 in eV).
    """

    s6: float
    s8: float
    a1: float
    a2: float
    k1: float = -16.0
    k3: float = -4.0
    weight_floor: float = 1e-5
    angstrom_to_bohr: float = ANGSTROM_TO_BOHR
    energy_factor: float = -HARTREE_HALF_EV


def coordination_numbers(positions, species, atom_mask, rcov, cnmax, *, k1: float = -16.0,
                         angstrom_to_bohr: float = ANGSTROM_TO_BOHR, block_size: int | None = None):
    """Clamped D3 coordination numbers over all pairs (no cutoff).

    Args:
      positions: ``[N, 3]`` (Å).
      species: ``[N]`` int, index into the tables (any valid index for padding slots).
      atom_mask: ``[N]`` bool.
      rcov: ``[S]`` covalent radii in bohr, already scaled by 4/3.
      cnmax: ``[S]`` upper clamp of each species' CN.
      k1: counting-function steepness.
      block_size: see :func:`~phai.physics.coulomb.pair_row_sums`.

    Returns:
      ``[N]`` CN (dimensionless), 0 for padding slots. The clamp passes the gradient only where
      ``CN <= CNmax`` (as ``torch.clamp``).
    """
    rc = rcov[species]

    def pair(d, rci, rcj):
        r = d * angstrom_to_bohr
        return 1.0 / (1.0 + jnp.exp(k1 * ((rci[:, None] + rcj[None, :]) / r - 1.0)))

    cn = pair_row_sums(pair, positions, atom_mask, rc, rc, block_size=block_size)
    cap = cnmax[species]
    return jnp.where(cn > cap, cap, cn)


def reference_weights(cn, species, cnref, k3: float = -4.0):
    """Gaussian weights ``w [N, R] = exp(k3 (CN_i - CNref[s_i, a])^2)`` of the reference points.

    ``cnref [S, R]`` holds -1 for missing references, which still get a (small) weight.
    """
    return jnp.exp(k3 * (cn[:, None] - cnref[species]) ** 2)


def d3bj_energy(positions, species, atom_mask, tables, params: D3BJParams, *, block_size: int | None = None):
    """Two-body D3(BJ) energy (eV) of one molecule, AIMNet2's variant (see the module docstring).

    Args:
      positions: ``[N, 3]`` (Å), float32 or float64.
      species: ``[N]`` int, index into the tables.
      atom_mask: ``[N]`` bool, False for padding slots.
      tables: mapping with ``c6ref [S, S, R, R]`` (Hartree bohr^6), ``cnref [S, R]``, ``r4r2 [S]``,
        ``rcov [S]`` (bohr), ``cnmax [S]``; arrays in the working dtype.
      params: :class:`D3BJParams`.
      block_size: see :func:`~phai.physics.coulomb.pair_row_sums`.

    Returns:
      Scalar energy in eV, in the dtype of ``positions``.
    """
    p = params
    cn = coordination_numbers(positions, species, atom_mask, tables["rcov"], tables["cnmax"],
                              k1=p.k1, angstrom_to_bohr=p.angstrom_to_bohr, block_size=block_size)
    w = reference_weights(cn, species, tables["cnref"], p.k3)              # [N, R]
    wsum = jnp.sum(w, axis=-1)                                             # [N]
    n, nref = w.shape
    nspecies = tables["cnref"].shape[0]
    t = jnp.einsum("ntab,na->ntb", tables["c6ref"][species], w).reshape(n, nspecies * nref)   # [N, S R]
    # u[j, (s, b)] = [s_j = s] w[j, b], so sum_b T[i, s_j, b] w[j, b] = (t @ u.T)[i, j]: one
    # matrix product per row block instead of a gather of T at every pair
    onehot = (species[:, None] == jnp.arange(nspecies)[None, :]).astype(w.dtype)
    u = (onehot[:, :, None] * w[:, None, :]).reshape(n, nspecies * nref)  # [N, S R]
    sqrt_q = tables["r4r2"][species]

    def pair(d, row, col):
        t_i, w_i, q_i = row
        u_j, wsum_j, q_j = col
        r = d * p.angstrom_to_bohr
        z = t_i @ u_j.T                                                    # [C, N]
        wij = w_i[:, None] * wsum_j[None, :]
        c6 = jnp.where(wij < p.weight_floor, jnp.zeros_like(z), z / jnp.maximum(wij, p.weight_floor))
        rr = 3.0 * q_i[:, None] * q_j[None, :]
        r0 = p.a1 * jnp.sqrt(rr) + p.a2
        return c6 * (p.s6 / (r ** 6 + r0 ** 6) + p.s8 * rr / (r ** 8 + r0 ** 8))

    e = pair_row_sums(pair, positions, atom_mask, (t, wsum, sqrt_q), (u, wsum, sqrt_q),
                      block_size=block_size)
    return p.energy_factor * jnp.sum(e)
