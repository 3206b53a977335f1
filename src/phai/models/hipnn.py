r"""HIP-NN: the hierarchically interacting particle neural network (Lubbers, Smith and Barros,
*J. Chem. Phys.* 148, 241715 (2018)), in JAX/flax, over flat neighbor-pair lists.

**Architecture** (phai's own code after the paper's description and lanl/hippynn's public
source; see ``notes/papers.md`` §6):

* input: one-hot species ``z_i^0`` over the model's species (padding atoms: all zeros);
* sensitivities (hippynn's "inverse" form, the original paper's):
  ``s_nu(r) = exp(-1/2 ((1/r - 1/mu_nu) sigma_nu)^2) phi(r)`` with the soft cutoff
  ``phi(r) = cos^2(pi r / (2 R_hard))`` for ``r < R_hard`` (0 beyond); ``mu`` (Å) and
  ``sigma`` (Å) are trainable, initialised as ``mu = 1/linspace(1/soft_max, 1/soft_min, S)``,
  ``sigma = 2 S soft_min`` (Gaussians in ``1/r`` about half their spacing wide);
* interaction layer ``n``: ``z_i^n = f(sum_nu sum_j s_nu(r_ij) V_nu z_j + W z_i + b)``
  (``V``: ``[S, F_out, F_in]``), then ``n_atom_layers`` on-site layers ``z <- f(W z + b)``;
  ``f`` = softplus; with ``resnet=True`` each layer is hippynn's residual form
  ``x + Linear(f(layer(x)))`` (the paper's plain layers are the default);
* hierarchical energy: ``E = sum_n sum_i (w_n . z_i^n + b_n)`` over ``n = 0 .. N_int``;
  ``E^0`` is a per-species reference energy (set by least squares,
  :func:`species_energy_lstsq`).

**Pairs and padding.** Pairs are flat ordered lists ``i [P]``, ``j [P]`` holding both
directions of every pair (:func:`phai.geometry.neighbors.neighbor_pairs`, or
``pairs_from_dense`` of a jax-md list plus its reverse, or :func:`all_pairs`); an entry with
``i >= A`` is padding (phai's sentinel convention). Padded atoms have species ``-1``: they get
zero input, no pairs, and are masked out of every sum, so padding changes nothing.

Units: Å in, energies in the units of the training data (eV in phai).
Shapes: ``A`` atoms, ``P`` pairs, ``S`` sensitivities, ``F`` features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import InputError
from ..geometry.pairs import pair_vectors


class HIPNNOutput(NamedTuple):
    """Output of :class:`HIPNN` for one structure.

    Attributes:
      energy: ``[]`` total energy (sum over levels and real atoms).
      level_energies: ``[N_int + 1, A]`` atom energies per hierarchy level (0 on padding).
      features: tuple of ``N_int + 1`` arrays ``[A, F_n]``: one-hot input, then each block's output.
      pair_features: ``[P, S + 2 F]`` symmetric pair features of the last level
        (``s(r_ij)``, ``z_i * z_j``, ``z_i + z_j``); zero on padded pairs.
      sensitivities: ``[P, S]``; pair_mask: ``[P]`` bool; atom_mask: ``[A]`` bool.
    """

    energy: jax.Array
    level_energies: jax.Array
    features: tuple
    pair_features: jax.Array
    sensitivities: jax.Array
    pair_mask: jax.Array
    atom_mask: jax.Array


def cos2_cutoff(d, hard_cutoff: float):
    """``cos^2(pi d / (2 R))`` for ``d < R``, else 0 (smooth to first order at ``R``)."""
    inside = d < hard_cutoff
    c = jnp.cos(0.5 * jnp.pi * jnp.where(inside, d, 0.0) / hard_cutoff)
    return jnp.where(inside, c * c, 0.0)


def inverse_sensitivities(d, mu, sigma, hard_cutoff: float):
    """``[P, S]`` Gaussians in ``1/d`` times the soft cutoff (``d``, ``mu``, ``sigma`` in Å)."""
    x = (1.0 / d[:, None] - 1.0 / mu[None, :]) * sigma[None, :]
    return jnp.exp(-0.5 * x * x) * cos2_cutoff(d, hard_cutoff)[:, None]


def all_pairs(n_slots: int, n_atoms) -> tuple[jax.Array, jax.Array]:
    """All ordered pairs ``i != j`` among ``n_slots`` atom slots, padding (``i = j = n_slots``)
    wherever either atom is ``>= n_atoms``. Jit-compatible (``n_atoms`` may be traced).

    Returns ``(i [n (n-1)], j [n (n-1)])`` int32.
    """
    ii, jj = np.nonzero(~np.eye(n_slots, dtype=bool))
    ii, jj = jnp.asarray(ii, jnp.int32), jnp.asarray(jj, jnp.int32)
    ok = (ii < n_atoms) & (jj < n_atoms)
    return jnp.where(ok, ii, n_slots), jnp.where(ok, jj, n_slots)


def species_index(numbers, species: Sequence[int]):
    """Map atomic numbers ``[...]`` to species slots; 0 (padding) and unknown elements -> -1."""
    table = np.full(119, -1, np.int32)
    for k, z in enumerate(species):
        table[int(z)] = k
    return jnp.asarray(table)[jnp.asarray(numbers)]


class HIPNN(nn.Module):
    """HIP-NN for one structure (``vmap`` ``apply`` over a padded batch).

    Attributes:
      species: atomic numbers the model knows, in slot order.
      width: features per layer.
      n_interactions: interaction blocks (hierarchy levels beyond the input).
      n_atom_layers: on-site layers after each interaction layer.
      n_sensitivities: Gaussians ``S``.
      soft_min, soft_max: Å, range of the initial sensitivity centres.
      hard_cutoff: Å, where the sensitivities vanish.
      resnet: residual layers (hippynn's default) instead of the paper's plain ones.
    """

    species: Sequence[int] = (1, 6, 7, 8)
    width: int = 20
    n_interactions: int = 2
    n_atom_layers: int = 3
    n_sensitivities: int = 20
    soft_min: float = 0.75
    soft_max: float = 4.5
    hard_cutoff: float = 5.5
    resnet: bool = False

    @nn.compact
    def __call__(self, species_idx, positions, i, j, displacement_fn=None) -> HIPNNOutput:
        """Args: ``species_idx [A]`` int (-1 = padding), ``positions [A, 3]`` Å,
        ``i, j [P]`` int32 flat ordered pairs (``i >= A`` = padding)."""
        A = positions.shape[0]
        n_s = len(self.species)
        atom_mask = species_idx >= 0
        dtype = positions.dtype
        z = jax.nn.one_hot(jnp.where(atom_mask, species_idx, n_s), n_s, dtype=dtype)
        _, d, pair_mask = pair_vectors(positions, i, j, displacement_fn)
        S = self.n_sensitivities
        inv = np.linspace(1.0 / self.soft_max, 1.0 / self.soft_min, S)
        mu = self.param("mu", lambda k: jnp.asarray(1.0 / inv, dtype))
        sigma = self.param("sigma", lambda k: jnp.full((S,), 2.0 * S * self.soft_min, dtype))
        sens = inverse_sensitivities(d, mu, sigma, self.hard_cutoff)
        sens = jnp.where(pair_mask[:, None], sens, 0.0)
        ic, jc = jnp.minimum(i, A - 1), jnp.minimum(j, A - 1)
        act = jax.nn.softplus
        features = [z]
        heads = [nn.Dense(1, name="energy_0", param_dtype=dtype)(z)[:, 0]]
        for n in range(self.n_interactions):
            f_in = z.shape[-1]
            env = jax.ops.segment_sum(sens[:, :, None] * z[jc][:, None, :], ic, num_segments=A)  # [A, S, F]
            V = self.param(f"V_{n}", nn.initializers.lecun_normal(in_axis=(0, 2), out_axis=1),
                           (S, self.width, f_in), dtype)
            h = jnp.einsum("asf,sof->ao", env, V) + nn.Dense(self.width, name=f"W_{n}", param_dtype=dtype)(z)
            if self.resnet and f_in == self.width:
                z = z + nn.Dense(self.width, name=f"res_{n}", param_dtype=dtype)(act(h))
            else:
                z = act(h)
            for m in range(self.n_atom_layers):
                h = nn.Dense(self.width, name=f"atom_{n}_{m}", param_dtype=dtype)(z)
                z = z + nn.Dense(self.width, name=f"atom_res_{n}_{m}", param_dtype=dtype)(act(h)) \
                    if self.resnet else act(h)
            z = jnp.where(atom_mask[:, None], z, 0.0)
            features.append(z)
            heads.append(nn.Dense(1, name=f"energy_{n + 1}", param_dtype=dtype,
                                  kernel_init=_scaled_lecun(1e-2))(z)[:, 0])
        level = jnp.where(atom_mask[None, :], jnp.stack(heads), 0.0)
        zi, zj = z[ic], z[jc]
        pair = jnp.concatenate([sens, zi * zj, zi + zj], axis=-1)
        pair = jnp.where(pair_mask[:, None], pair, 0.0)
        return HIPNNOutput(jnp.sum(level), level, tuple(features), pair, sens, pair_mask, atom_mask)


def _scaled_lecun(scale: float):
    base = nn.initializers.lecun_normal()
    return lambda key, shape, dtype=jnp.float32: scale * base(key, shape, dtype)


def hierarchicality(level_energies, atom_mask):
    """hippynn's hierarchicality ``R = sum_{n>=1} (E^n)^2 / ((E^n)^2 + (E^{n-1})^2)`` of the
    molecular level energies (``[N_int + 1, A]`` -> ``[]``); small when later levels are small
    corrections. A regulariser for energy training."""
    e = jnp.sum(jnp.where(atom_mask[None, :], level_energies, 0.0), axis=1)
    num = e[1:] ** 2
    return jnp.sum(num / (num + e[:-1] ** 2 + 1e-12))


def species_energy_lstsq(species_idx, energies, n_species: int) -> np.ndarray:
    """Per-species reference energies ``[n_species]`` by least squares on molecule energies
    (``species_idx [B, A]`` with -1 padding, ``energies [B]``): HIP-NN's ``E^0``."""
    s = np.asarray(species_idx)
    counts = np.stack([(s == k).sum(axis=1) for k in range(n_species)], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(counts, np.asarray(energies, np.float64), rcond=None)
    return coef


def batch_apply(model: HIPNN, params, species_idx, positions, i, j):
    """``model.apply`` vmapped over a padded batch: ``[B, A]``, ``[B, A, 3]``, ``[B, P]``."""
    return jax.vmap(lambda s, r, a, b: model.apply(params, s, r, a, b))(species_idx, positions, i, j)


def init_params(model: HIPNN, key, species_idx, positions, i, j, energies=None):
    """Initialise on one example (``[A]``, ``[A, 3]``, ``[P]``); with a batch of
    ``energies [B]`` (and ``species_idx [B, A]``), set ``E^0`` by least squares."""
    s1 = species_idx if np.ndim(species_idx) == 1 else species_idx[0]
    r1 = positions if np.ndim(positions) == 2 else positions[0]
    i1, j1 = (i, j) if np.ndim(i) == 1 else (i[0], j[0])
    params = model.init(key, jnp.asarray(s1), jnp.asarray(r1), jnp.asarray(i1), jnp.asarray(j1))
    if energies is not None:
        if np.ndim(species_idx) != 2:
            raise InputError("E^0 by least squares needs a batch: species_idx [B, A], energies [B]")
        e0 = species_energy_lstsq(species_idx, energies, len(model.species))
        p = jax.tree.map(lambda x: x, params)
        p["params"]["energy_0"]["kernel"] = jnp.asarray(e0[:, None], r1.dtype)
        p["params"]["energy_0"]["bias"] = jnp.zeros_like(p["params"]["energy_0"]["bias"])
        params = p
    return params


def fit_energies(model: HIPNN, params, species_idx, positions, i, j, energies, *, steps: int = 200,
                 learning_rate: float = 3e-3, hierarchicality_weight: float = 0.0, freeze_e0: bool = True):
    """A small full-batch Adam loop on molecular energies (MSE, optional hierarchicality).

    Args: batched arrays as :func:`batch_apply`; ``energies [B]``. ``E^0`` stays frozen by
    default (HIP-NN's convention). Returns ``(params, losses [steps])``.
    """
    opt = optax.adam(learning_rate)
    if freeze_e0:
        labels = jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if any(getattr(k, "key", None) == "energy_0" for k in path) else "train", params)
        opt = optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)
    energies = jnp.asarray(energies)

    def loss_fn(p):
        out = batch_apply(model, p, species_idx, positions, i, j)
        loss = jnp.mean((out.energy - energies) ** 2)
        if hierarchicality_weight:
            loss = loss + hierarchicality_weight * jnp.mean(jax.vmap(hierarchicality)(out.level_energies, out.atom_mask))
        return loss

    from ..train.full_batch import fit_full_batch

    return fit_full_batch(loss_fn, params, opt, steps)
