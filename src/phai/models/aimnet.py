r"""AIMNet and AIMNet-ME as trainable flax models (**untrained**: no pretrained weights here).

AIMNet (Zubatyuk, Smith, Leszczynski and Isayev, *Sci. Adv.* 5, eaav6490, 2019) and its
charge/spin multi-embedding form AIMNet-ME (ChemRxiv 10.26434/chemrxiv.12725276; published as
AIMNet-NSE, *Nat. Commun.* 12, 4870, 2021). For atom ``i`` with neighbors ``j, k``:

.. math::

   g^r_{ijs} &= e^{-\eta_R (r_{ij} - R_s)^2} f_C(r_{ij}; R^r_c) \\
   g^a_{ijk,(z,a)} &= 2^{1-\zeta} (1 + \cos(\theta_{ijk} - \theta_z))^\zeta
        e^{-\eta_A ((r_{ij} + r_{ik})/2 - R_a)^2} f_C(r_{ij}; R^a_c) f_C(r_{ik}; R^a_c) \\
   A_{jk} &= \mathrm{MLP}_\mathrm{pair}([A_j + A_k,\ A_j \odot A_k]) \\
   G^r_i &= \sum_j g^r_{ij} \otimes A_j, \qquad G^a_i = \sum_{j<k} g^a_{ijk} \otimes A_{jk}, \qquad
   F_i = \mathrm{MLP}_\mathrm{emb}([G^r_i, G^a_i])

with atomic feature vectors (AFVs) ``A_j`` learned per element. ``npass`` passes ("SCF-like"):
before each pass after the first, ``A_i <- A_i + MLP_upd([F_i, A_i])`` and ``F`` is recomputed
from the updated neighbor AFVs; after the last, ``M_i = MLP_int([F_i, A_i])`` feeds the heads.

AIMNet-ME (``charge_spin=True``): the AFV table has one row set per charge state
(``charge_states``, e.g. -1, 0, +1: the "multi-embedding"), a learned spin embedding (per
multiplicity) is added to every AFV, and the interaction/update blocks are shared between
states. Spin-polarised charges come from neural spin-charge equilibration (NSE): per spin
channel ``s`` in (alpha, beta), with ``Q^alpha = (Q - M + 1) / 2`` and ``Q^beta = (Q + M - 1) / 2``
(so ``Q^alpha + Q^beta = Q``; ``M`` the multiplicity, as the AIMNet-NSE code),

.. math::  q^s_i = \tilde q^s_i + (Q^s - \textstyle\sum_j \tilde q^s_j)\, \frac{(k^s_i)^2}{\max(\sum_j (k^s_j)^2, \epsilon)}

and the atomic charge is ``q_i = q^alpha_i + q^beta_i``; charges sum to ``Q`` up to the
rounding (unless ``sum k^2 < epsilon``). The energy head reads ``[M_i, q^alpha_i, q^beta_i]``, so the energy depends
on the total charge and the spin through both the embeddings and the equilibrated charges.

Choices where the papers and code are not specific (stated, not copied): the ME embedding is
a table per charge state plus an additive spin embedding (the v1 preprint's equations were
unavailable); charges re-enter the energy head as in AIMNet-NSE; a single linear
``MLP_charge`` head gives ``(q~^alpha, q~^beta, k^alpha, k^beta)``; GELU (AIMNet-NSE) instead of
AIMNet's ELU by default (``activation``); the plain AIMNet (``charge_spin=False``) uses the same
NSE head with one channel and ``Q`` as its target (set ``charge_equilibration=False`` for the
2019 model's unconstrained charges). Energies in eV, positions in Å, charges in e.

Shapes: ``N`` atom slots, ``K`` neighbor slots (dense list within the radial cutoff, sentinel
``N``), ``S`` species, ``F`` = ``nfeature`` AFV size. One molecule per call; ``jax.vmap`` for
batches of one padded shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from ..geometry import cosine_cutoff, neighbor_vectors, triu_slot_pairs


@dataclasses.dataclass(frozen=True)
class AIMNetConfig:
    """Hyperparameters of an AIMNet / AIMNet-ME model (plain data; saved beside weights).

    Attributes:
      elements: atomic numbers, in species-index order.
      nfeature: AFV size ``F`` (16).
      radial_cutoff, angular_cutoff: Å (4.6, 3.1 as AIMNet).
      radial_shifts: ``R_s`` (Å); radial_eta: Å^-2 (16, AIMNet).
      angular_shifts: ``R_a`` (Å); angular_eta: Å^-2; zeta; theta_shifts: ``theta_z`` (rad).
      pair_hidden, embed_hidden, update_hidden, interact_hidden, head_hidden: MLP widths.
      aim_size: size of ``M_i``.
      npass: interaction passes (3 in AIMNet).
      charge_spin: AIMNet-ME (charge-state AFVs, spin embedding, two NSE channels).
      charge_states: total charges with their own AFV table (ME).
      max_multiplicity: spin embeddings for multiplicities 1..this.
      charge_equilibration: constrain charges to the total charge (NSE).
      nse_eps: the epsilon of NSE.
      activation: "gelu" or "elu".
      atom_inputs: per-atom input channels the caller supplies (0: none). AIMNet-ME Δ models
        with ``MEConfig.base_charge_inputs`` take the base model's atomic charges of the same
        state here (one channel, e): a learned linear map of them is added to the initial AFVs
        and the energy head reads them beside ``[M_i, q^alpha_i, q^beta_i]``.
    """

    elements: tuple[int, ...] = (1, 6, 7, 8)
    nfeature: int = 16
    radial_cutoff: float = 4.6
    angular_cutoff: float = 3.1
    radial_shifts: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.8, 4.4, 16))
    radial_eta: float = 16.0
    angular_shifts: tuple[float, ...] = (0.9, 1.55, 2.2, 2.85)
    angular_eta: float = 8.0
    zeta: float = 32.0
    theta_shifts: tuple[float, ...] = tuple(float(x) for x in (np.arange(8) + 0.5) * np.pi / 8)
    pair_hidden: tuple[int, ...] = (64,)
    embed_hidden: tuple[int, ...] = (256, 128)
    update_hidden: tuple[int, ...] = (128,)
    interact_hidden: tuple[int, ...] = (128,)
    aim_size: int = 128
    head_hidden: tuple[int, ...] = (128, 64)
    npass: int = 3
    charge_spin: bool = True
    charge_states: tuple[int, ...] = (-1, 0, 1)
    max_multiplicity: int = 4
    charge_equilibration: bool = True
    nse_eps: float = 1e-6
    activation: str = "gelu"
    atom_inputs: int = 0

    @property
    def n_angular(self) -> int:
        return len(self.angular_shifts) * len(self.theta_shifts)


# ------------------------------------------------------------------------------- pure kernels
def radial_terms(d, mask, shifts, eta: float, cutoff: float):
    """``g^r [N, K, R]`` on a dense neighbor list: Gaussians times the cosine cutoff, 0 on empty slots."""
    fc = jnp.where(mask, cosine_cutoff(d, cutoff), jnp.zeros_like(d))
    return jnp.exp(-eta * (d[..., None] - shifts[None, None, :]) ** 2) * fc[..., None]


def angular_terms(dR, d, mask, shifts, thetas, *, eta: float, zeta: float, cutoff: float):
    """``g^a [N, T, Ra * Z]`` over the slot pairs ``(p < q)`` of each row, AIMNet's order
    (``theta_z``-major, ``R_a`` fastest), and the slot pairs ``(p [T], q [T])``.

    ``theta = arccos(clip(cos, -0.99999, 0.99999))`` keeps the derivative finite; pairs with a
    slot beyond ``cutoff`` or empty are 0.
    """
    k = d.shape[1]
    p, q = triu_slot_pairs(k)
    fc = jnp.where(mask & (d <= cutoff), cosine_cutoff(d, cutoff), jnp.zeros_like(d))
    cos = jnp.einsum("ntx,ntx->nt", dR[:, p], dR[:, q]) / (d[:, p] * d[:, q])
    theta = jnp.arccos(jnp.clip(cos, -0.99999, 0.99999))
    ang = 2.0 ** (1.0 - zeta) * (1.0 + jnp.cos(theta[..., None] - thetas[None, None, :])) ** zeta   # [N, T, Z]
    rad = jnp.exp(-eta * (0.5 * (d[:, p] + d[:, q])[..., None] - shifts[None, None, :]) ** 2)    # [N, T, Ra]
    g = ang[..., :, None] * rad[..., None, :] * (fc[:, p] * fc[:, q])[..., None, None]
    return g.reshape(g.shape[0], g.shape[1], -1), (p, q)


def spin_charges(total_charge, multiplicity):
    """``(Q^alpha, Q^beta) = ((Q - M + 1) / 2, (Q + M - 1) / 2)``: spin-resolved total charges (e)."""
    return 0.5 * (total_charge - multiplicity + 1.0), 0.5 * (total_charge + multiplicity - 1.0)


def nse(target, q, k, atom_mask, eps: float = 1e-6):
    r"""Neural (spin-)charge equilibration ``q + (Q - sum q) k^2 / max(sum k^2, eps)`` per channel
    (the AIMNet-NSE code's ``max``: exact whenever ``sum k^2 >= eps``, unlike ``+ eps``).

    Args:
      target: ``[C]`` total charge of each channel (e).
      q: ``[N, C]`` unconstrained charges. k: ``[N, C]`` weights.
      atom_mask: ``[N]`` bool; padding slots get 0 and do not count.

    Returns:
      ``[N, C]``; each column sums to ``target`` to rounding (when ``sum k^2 >= eps``).
    """
    m = atom_mask[:, None].astype(q.dtype)
    q, w = q * m, k * k * m
    return q + w * (target[None, :] - jnp.sum(q, axis=0, keepdims=True)) / jnp.maximum(jnp.sum(w, axis=0, keepdims=True), eps)


# ---------------------------------------------------------------------------------- modules
class MLP(nn.Module):
    """Dense layers with an activation after each hidden layer (and after the last if asked)."""

    sizes: Sequence[int]
    activation: str = "gelu"
    final_activation: bool = False

    @nn.compact
    def __call__(self, x):
        act = (lambda y: jax.nn.gelu(y, approximate=False)) if self.activation == "gelu" else jax.nn.elu
        for n, size in enumerate(self.sizes):
            x = nn.Dense(size, param_dtype=jnp.float32, dtype=x.dtype)(x)
            if n < len(self.sizes) - 1 or self.final_activation:
                x = act(x)
        return x


class AIMNet(nn.Module):
    """AIMNet / AIMNet-ME on one molecule (untrained until fitted).

    Call: ``model.apply(params, positions [N, 3] Å, species [N] int, neighbors [N, K],
    atom_mask [N] bool, total_charge (e), multiplicity, atom_inputs [N, P])`` -> dict with ``energy`` (eV, scalar),
    ``atomic_energies [N]``, ``charges [N]`` (e; ``q^alpha + q^beta``), ``charges_alpha``,
    ``charges_beta`` ``[N]``, ``aim [N, aim_size]``. ``total_charge`` must be one of
    ``cfg.charge_states`` for ME models (checked on the host by :func:`check_state`);
    ``atom_inputs`` (``P = cfg.atom_inputs`` channels) is required when ``P > 0`` and ignored when 0.
    """

    cfg: AIMNetConfig

    @nn.compact
    def __call__(self, positions, species, neighbors, atom_mask, total_charge=0, multiplicity=1, atom_inputs=None):
        cfg = self.cfg
        dtype = positions.dtype
        n, f = positions.shape[0], cfg.nfeature
        maskf = atom_mask.astype(dtype)
        dR, d, nmask = neighbor_vectors(positions, neighbors)
        gr = radial_terms(d, nmask, jnp.asarray(cfg.radial_shifts, dtype), cfg.radial_eta, cfg.radial_cutoff)
        ga, (p, q) = angular_terms(dR, d, nmask, jnp.asarray(cfg.angular_shifts, dtype),
                                   jnp.asarray(cfg.theta_shifts, dtype), eta=cfg.angular_eta, zeta=cfg.zeta,
                                   cutoff=cfg.angular_cutoff)
        nstate = len(cfg.charge_states) if cfg.charge_spin else 1
        afv = self.param("afv", nn.initializers.normal(1.0), (nstate, len(cfg.elements), f), jnp.float32)
        if cfg.charge_spin:
            states = jnp.asarray(cfg.charge_states, dtype)
            state = jnp.argmin(jnp.abs(states - jnp.asarray(total_charge, dtype)))
            a = afv.astype(dtype)[state][species]
            spin = self.param("spin_embedding", nn.initializers.normal(0.1), (cfg.max_multiplicity, f), jnp.float32)
            m_idx = jnp.clip(jnp.asarray(multiplicity, jnp.int32) - 1, 0, cfg.max_multiplicity - 1)
            a = a + spin.astype(dtype)[m_idx][None, :]
        else:
            a = afv.astype(dtype)[0][species]
        x_in = None
        if cfg.atom_inputs:
            if atom_inputs is None or atom_inputs.shape != (n, cfg.atom_inputs):
                raise ValueError(f"this AIMNet takes atom_inputs of shape {(n, cfg.atom_inputs)}, got "
                                 f"{None if atom_inputs is None else atom_inputs.shape}")
            x_in = atom_inputs.astype(dtype) * maskf[:, None]
            a = a + nn.Dense(f, param_dtype=jnp.float32, dtype=dtype, name="input_embed")(x_in)
        a = a * maskf[:, None]

        pair_mlp = MLP(tuple(cfg.pair_hidden) + (f,), cfg.activation, final_activation=True, name="pair")
        embed_mlp = MLP(tuple(cfg.embed_hidden), cfg.activation, final_activation=True, name="embed")
        update_mlp = MLP(tuple(cfg.update_hidden) + (f,), cfg.activation, name="update")
        interact_mlp = MLP(tuple(cfg.interact_hidden) + (cfg.aim_size,), cfg.activation, final_activation=True,
                           name="interact")

        pad = jnp.zeros((1, f), dtype)

        def field(a):
            aj = jnp.concatenate([a, pad])[neighbors]                        # [N, K, F]
            g_r = jnp.einsum("nks,nkf->nsf", gr, aj).reshape(n, -1)           # [N, R F]
            aj_p, aj_q = aj[:, p], aj[:, q]                                   # [N, T, F]
            ajk = pair_mlp(jnp.concatenate([aj_p + aj_q, aj_p * aj_q], axis=-1))
            g_a = jnp.einsum("nta,ntf->naf", ga, ajk).reshape(n, -1)          # [N, A F]
            return embed_mlp(jnp.concatenate([g_r, g_a], axis=-1))

        for t in range(cfg.npass):
            if t > 0:
                a = (a + update_mlp(jnp.concatenate([field_i, a], axis=-1))) * maskf[:, None]   # noqa: F821
            field_i = field(a)
        aim = interact_mlp(jnp.concatenate([field_i, a], axis=-1)) * maskf[:, None]

        nch = 2 if cfg.charge_spin else 1
        raw = MLP(tuple(cfg.head_hidden) + (2 * nch,), cfg.activation, name="charge_head")(aim)
        q_raw, k = raw[:, :nch], raw[:, nch:]
        q_total = jnp.asarray(total_charge, dtype)
        if cfg.charge_spin:
            target = jnp.stack(spin_charges(q_total, jnp.asarray(multiplicity, dtype)))
        else:
            target = q_total[None]
        if cfg.charge_equilibration:
            qs = nse(target, q_raw, k, atom_mask, cfg.nse_eps)
        else:
            qs = q_raw * maskf[:, None]
        if not cfg.charge_spin:
            qs = jnp.concatenate([0.5 * qs, 0.5 * qs], axis=-1)                # alpha = beta
        shift = self.param("atomic_shift", nn.initializers.zeros, (len(cfg.elements),), jnp.float32)
        head_in = [aim, qs] if x_in is None else [aim, qs, x_in]
        e_atom = MLP(tuple(cfg.head_hidden) + (1,), cfg.activation, name="energy_head")(
            jnp.concatenate(head_in, axis=-1))[:, 0] + shift.astype(dtype)[species]
        e_atom = e_atom * maskf
        return {"energy": jnp.sum(e_atom), "atomic_energies": e_atom, "charges": qs[:, 0] + qs[:, 1],
                "charges_alpha": qs[:, 0], "charges_beta": qs[:, 1], "aim": aim}


def state_outputs(model: AIMNet, params, positions, species, neighbors, atom_mask, total_charge, multiplicity,
                  atom_inputs=None):
    """``(energy eV, forces [N, 3] eV/Å, q_alpha [N] e, q_beta [N] e, dE/d atom_inputs [N, P])`` of
    one padded molecule in one charge/spin state: the network energy (self energies not
    included), ``-dE/dR`` at fixed ``atom_inputs`` (a caller whose inputs depend on the positions,
    such as a base model's charges, adds its chain-rule term with the last output; ``P = 0``:
    an empty ``[N, 0]``). Pure; the potentials and the trainer jit (and vmap) it."""
    if atom_inputs is None:
        atom_inputs = jnp.zeros((positions.shape[0], 0), positions.dtype)

    def energy(r, x):
        out = model.apply(params, r, species, neighbors, atom_mask, total_charge, multiplicity,
                          x if model.cfg.atom_inputs else None)
        return out["energy"], out

    (e, out), (g, gx) = jax.value_and_grad(energy, argnums=(0, 1), has_aux=True)(positions, atom_inputs)
    return e, -g, out["charges_alpha"], out["charges_beta"], gx


def check_state(cfg: AIMNetConfig, numbers, charge, multiplicity) -> None:
    """Host check of a state for an AIMNet(-ME) model: elements, charge state, multiplicity.

    Raises:
      InputError: an element outside ``cfg.elements``, a charge without its AFV table (ME), a
        multiplicity beyond the spin embeddings or not fitting the electron count.
    """
    from .aimnet2 import check_charge_multiplicity

    z = np.asarray(numbers, dtype=np.int64)
    bad = sorted(set(z.tolist()) - set(cfg.elements))
    if bad:
        raise InputError(f"elements {bad} are outside this AIMNet model (atomic numbers {list(cfg.elements)})")
    q, m = check_charge_multiplicity(z, charge, multiplicity)
    if cfg.charge_spin and q not in cfg.charge_states:
        raise InputError(f"total charge {q:+d} has no embedding in this AIMNet-ME model (charge states "
                         f"{list(cfg.charge_states)})")
    if cfg.charge_spin and m > cfg.max_multiplicity:
        raise InputError(f"multiplicity {m} is beyond the model's spin embeddings (1..{cfg.max_multiplicity})")
