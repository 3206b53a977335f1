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
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from ..geometry import cosine_cutoff, neighbor_vectors, triu_slot_pairs


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
    def from_neurochem(cls, text: str) -> "AEVParams":
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


def radial_terms(d, params: AEVParams):
    """Radial terms ``0.25 exp(-eta_R (d - R_s)^2) f_C(d; Rcr)``.

    Args:
      d: distances ``[...]`` (Å).

    Returns:
      ``[..., n_R]`` with ``n_R = len(EtaR) len(ShfR)`` (shift fastest).
    """
    dt = d.dtype
    eta = jnp.asarray(params.EtaR, dt)[:, None]
    shf = jnp.asarray(params.ShfR, dt)[None, :]
    x = d[..., None, None]
    terms = 0.25 * jnp.exp(-eta * (x - shf) ** 2) * cosine_cutoff(x, params.Rcr)
    return terms.reshape(d.shape + (params.radial_sublength,))


def angular_terms(dR_j, dR_k, d_j, d_k, params: AEVParams):
    """Angular terms for neighbor pairs, ``[..., n_A]`` in TorchANI's order (angle fastest).

    Args:
      dR_j, dR_k: vectors from the centre atom to neighbors j and k, ``[..., 3]`` (Å).
      d_j, d_k: their lengths ``[...]`` (Å), strictly positive.
    """
    dt = d_j.dtype
    cos = jnp.sum(dR_j * dR_k, axis=-1) / jnp.maximum(d_j * d_k, 1e-10)
    c = 0.95 * cos
    s = jnp.sqrt(1.0 - c * c)  # |c| <= 0.95, so never at the kink of sqrt
    shfz = jnp.asarray(params.ShfZ, dt)
    cos_shifted = c[..., None] * jnp.cos(shfz) + s[..., None] * jnp.sin(shfz)  # [..., n_z]
    fc = cosine_cutoff(d_j, params.Rca) * cosine_cutoff(d_k, params.Rca)
    mean_d = 0.5 * (d_j + d_k)
    out = []
    for eta in params.EtaA:
        for zeta in params.Zeta:
            f1 = _power(0.5 * (1.0 + cos_shifted), zeta)  # [..., n_z]
            f2 = jnp.exp(-eta * (mean_d[..., None] - jnp.asarray(params.ShfA, dt)) ** 2)  # [..., n_a]
            out.append(2.0 * f2[..., :, None] * f1[..., None, :] * fc[..., None, None])
    terms = jnp.stack(out, axis=-3)  # [..., eta*zeta, n_a, n_z]
    return terms.reshape(d_j.shape + (params.angular_sublength,))


def aev(R, species, nbr_radial, nbr_angular, params: AEVParams, displacement_fn=None,
        num_pairs: int | None = None):
    """ANI AEVs of a flat padded atom set.

    Args:
      R: positions ``[N, 3]`` (Å).
      species: ``[N]`` int32 model species index (0..S-1). Padding slots may hold any
        value in range: they are never anyone's neighbor (the lists exclude them), and
        their own rows are discarded by the caller's mask.
      nbr_radial: ``[N, Kr]`` int32 neighbors within ``Rcr``, sentinel ``N``.
      nbr_angular: ``[N, Ka]`` int32 neighbors within ``Rca``, sentinel ``N``.
      params: :class:`AEVParams`.
      displacement_fn: jax-md displacement (free space if ``None``).
      num_pairs: static number of leading slot pairs to evaluate (see
        :func:`phai.geometry.triu_slot_pairs`): ``c (c - 1) / 2`` for a list whose most
        crowded atom has ``c`` angular neighbors; ``None`` evaluates all ``Ka (Ka - 1) / 2``.

    Returns:
      ``[N, F]`` AEVs in the dtype of ``R``.
    """
    n = R.shape[0]
    S = params.num_species
    dt = R.dtype
    safe_species = jnp.clip(species, 0, S - 1)

    # radial: [N, Kr, n_R], summed into species blocks by a one-hot contraction
    _, d, mask = neighbor_vectors(R, nbr_radial, displacement_fn)
    rad = jnp.where(mask[..., None], radial_terms(d, params), 0.0)
    sj = safe_species[jnp.minimum(nbr_radial, n - 1)]
    onehot = (sj[..., None] == jnp.arange(S)).astype(dt)  # [N, Kr, S]
    radial = jnp.einsum("nks,nkr->nsr", onehot, rad).reshape(n, S * params.radial_sublength)

    # angular: unordered slot pairs (p < q) of the angular list
    dRa, da, maska = neighbor_vectors(R, nbr_angular, displacement_fn)
    ka = nbr_angular.shape[1]
    p, q = triu_slot_pairs(ka)
    if num_pairs is not None:
        p, q = p[:num_pairs], q[:num_pairs]
    pair_mask = maska[:, p] & maska[:, q]  # [N, P]
    # Slot selection as a matmul with a constant 0/1 matrix: its transpose (in the
    # gradient) is another matmul, where an indexed gather would transpose to a slow
    # scatter-add on CPU.
    sel_p = jnp.asarray(np.eye(ka)[p], dt)  # [P, Ka]
    sel_q = jnp.asarray(np.eye(ka)[q], dt)
    pick = lambda sel, x: jnp.einsum("pk,nk...->np...", sel, x)
    ang = angular_terms(pick(sel_p, dRa), pick(sel_q, dRa), jnp.where(pair_mask, pick(sel_p, da), 1.0),
                        jnp.where(pair_mask, pick(sel_q, da), 1.0), params)
    ang = jnp.where(pair_mask[..., None], ang, 0.0)
    sa = safe_species[jnp.minimum(nbr_angular, n - 1)]
    table = jnp.asarray(params.species_pair_table())
    pair_species = table[sa[:, p], sa[:, q]]  # [N, P]
    onehot_pair = (pair_species[..., None] == jnp.arange(params.num_species_pairs)).astype(dt)
    angular = jnp.einsum("npc,npf->ncf", onehot_pair, ang).reshape(
        n, params.num_species_pairs * params.angular_sublength)
    return jnp.concatenate([radial, angular], axis=-1)


def aev_length(params: AEVParams) -> int:
    """Length of the AEV of ``params`` (kept for symmetry with TorchANI's ``aev_length``)."""
    return params.length


__all__: Sequence[str] = ("AEVParams", "aev", "radial_terms", "angular_terms")
