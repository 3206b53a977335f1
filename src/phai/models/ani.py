r"""ANI: per-element networks on AEVs, evaluated for a whole ensemble at once.

.. math::  E_b = \sum_{i \in b} \left[ \frac{1}{M} \sum_m NN^{(m)}_{Z_i}(G_i) + SAE_{Z_i} \right]

The networks of the ``M`` members are stacked (weights ``[M, in, out]``), so each layer is
one batched contraction over members, never a Python loop. Each element's network runs
only on that element's atoms: the host lists the slots of each species, padded to a
size bucket (:func:`phai.batching.species_slots`), and the AEV rows are gathered,
transformed and scattered back. Energies here are in the unit of the weights (Hartree
for ANI).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..descriptors.aev import AEVParams, aev


def celu(x, alpha: float = 0.1):
    """CELU ``max(0, x) + min(0, alpha (exp(x / alpha) - 1))``, NaN-free in gradients."""
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0) / alpha))


def gaussian(x):
    """NeuroChem's Gaussian activation ``exp(-x^2)`` (the 2018 ANI-1x networks)."""
    return jnp.exp(-x * x)


ACTIVATIONS = {"celu0.1": celu, "gaussian": gaussian, "linear": lambda x: x}


def apply_network(layers, activations: Sequence[str], x):
    """One element's network for all members.

    Args:
      layers: sequence of ``{"W": [M, in, out], "b": [M, out]}``.
      activations: names (``celu0.1``, ``gaussian``, ``linear``), one per layer.
      x: inputs ``[T, F]`` shared by the members.

    Returns:
      ``[M, T]`` outputs of the last layer (which has one unit).
    """
    h = jnp.einsum("tf,mfo->mto", x, layers[0]["W"].astype(x.dtype)) + layers[0]["b"].astype(x.dtype)[:, None, :]
    h = ACTIVATIONS[activations[0]](h)
    for layer, act in zip(layers[1:], activations[1:]):
        h = jnp.einsum("mtf,mfo->mto", h, layer["W"].astype(x.dtype)) + layer["b"].astype(x.dtype)[:, None, :]
        h = ACTIVATIONS[act](h)
    return h[..., 0]


def ani_atomic_energies(params, species_order: Sequence[str], activations: dict, aevs, species_atoms):
    """Per-member atomic network energies ``[M, N]`` from AEVs ``[N, F]``.

    Args:
      params: ``{symbol: [{"W": [M, in, out], "b": [M, out]}, ...]}``.
      species_order: model species symbols, in the order of ``species_atoms``.
      activations: ``{symbol: [activation name per layer]}``.
      aevs: ``[N, F]``.
      species_atoms: one int32 array ``[C_s]`` per species: the slots of its atoms,
        padded with the sentinel ``N`` (``C_s`` may be 0).

    Returns:
      ``[M, N]``; entries of slots listed in no ``species_atoms`` are 0.
    """
    n, f = aevs.shape
    padded = jnp.concatenate([aevs, jnp.zeros((1, f), aevs.dtype)])
    m = next(iter(params.values()))[0]["W"].shape[0]
    out = jnp.zeros((m, n + 1), aevs.dtype)
    for s, idx in zip(species_order, species_atoms):
        if idx.shape[0] == 0:
            continue
        out = out.at[:, idx].set(apply_network(params[s], activations[s], padded[idx]))
    return out[:, :n]


def ani_member_energies(params, aev_params: AEVParams, activations: dict, R, species, atom_mask,
                        mol_index, pairs, triples, species_atoms, num_molecules: int,
                        displacement_fn=None):
    """Network energies per member and molecule, ``[M, B]`` (no self energies).

    Args:
      R: ``[N, 3]`` positions (Å), padded.
      species: ``[N]`` int32 model species index; padding slots any valid index.
      atom_mask: ``[N]`` bool, True for real atoms.
      mol_index: ``[N]`` int32 molecule of each slot (``< num_molecules``).
      pairs, triples: flat neighbor lists (sentinel ``N``), see :func:`phai.descriptors.aev.aev`.
      species_atoms: per-species atom slots, see :func:`ani_atomic_energies`.
      num_molecules: static ``B``.
    """
    g = aev(R, species, pairs, triples, aev_params, displacement_fn)
    e = ani_atomic_energies(params, aev_params.species, activations, g, species_atoms)
    e = jnp.where(atom_mask[None, :], e, 0.0)
    return jax.vmap(lambda em: jax.ops.segment_sum(em, mol_index, num_segments=num_molecules))(e)


class ANIEnsemble(nn.Module):
    """Flax wrapper: an ensemble of ANI networks with its AEV.

    Attributes:
      aev_params: the AEV constants (species order included).
      hidden: ``{symbol: (h1, h2, ...)}`` hidden widths per element.
      members: ensemble size ``M``.
      activation: hidden activation name (output layer is linear).

    ``__call__`` takes the arguments of :func:`ani_member_energies` after ``R`` and returns
    ``[M, B]``. Parameters are ``{symbol: {"0": {"W", "b"}, "1": ...}}`` with members stacked.
    """

    aev_params: AEVParams
    hidden: dict
    members: int = 8
    activation: str = "celu0.1"

    def _layers(self):
        sizes = {}
        for s in self.aev_params.species:
            widths = (self.aev_params.length, *self.hidden[s], 1)
            sizes[s] = list(itertools.pairwise(widths))
        return sizes

    @nn.compact
    def __call__(self, R, species, atom_mask, mol_index, pairs, triples, species_atoms,
                 num_molecules: int, displacement_fn=None):
        params, acts = {}, {}
        for s, shapes in self._layers().items():
            layers = []
            for l, (i, o) in enumerate(shapes):
                W = self.param(f"{s}/{l}/W", nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                                            in_axis=-2, out_axis=-1, batch_axis=(0,)),
                               (self.members, i, o))
                b = self.param(f"{s}/{l}/b", nn.initializers.zeros, (self.members, o))
                layers.append({"W": W, "b": b})
            params[s] = layers
            acts[s] = [self.activation] * (len(shapes) - 1) + ["linear"]
        return ani_member_energies(params, self.aev_params, acts, R, species, atom_mask, mol_index,
                                   pairs, triples, species_atoms, num_molecules, displacement_fn)


def params_from_arrays(arrays: dict, species: Sequence[str]) -> dict:
    """``{symbol: [{"W", "b"}, ...]}`` from the flat store keys ``{X}/{l}/W``."""
    out = {}
    for s in species:
        layers, l = [], 0
        while f"{s}/{l}/W" in arrays:
            layers.append({"W": jnp.asarray(arrays[f"{s}/{l}/W"]), "b": jnp.asarray(arrays[f"{s}/{l}/b"])})
            l += 1
        out[s] = layers
    return out
