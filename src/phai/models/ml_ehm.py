r"""ML-EHM: extended Hückel theory with HIP-NN-predicted parameters (Zubatiuk et al.,
arXiv:1909.12963; the review's eqs 5-6), end to end differentiable.

**Model.** For a molecule with Hoffmann's minimal STO basis (:mod:`phai.physics.huckel`):

* a :class:`~phai.models.hipnn.HIPNN` feature network reads species and positions;
* atom head: ``alpha_s(i) = alpha_s^Hoff(Z_i) + da_s(i)``, ``alpha_p(i) = alpha_p^Hoff(Z_i) + da_p(i)``
  with ``(da_s, da_p) = sum_n L_n(z_i^n)`` linear over every hierarchy level (the one-hot level
  gives per-element shifts), eV; ``p_x, p_y, p_z`` of one atom share ``alpha_p`` (rotation
  invariance requires it);
* pair head, **per atom pair** (the review: K is "bond-dependent"):
  ``K_ij = K0 + dK_max tanh(u_ij)``, ``u_ij = MLP(q_ij)`` of HIP-NN's symmetric pair features
  ``q_ij = (s(r_ij), z_i * z_j, z_i + z_j)``, so ``K_ij = K_ji`` exactly; ``K0 = 1.75``
  (Hoffmann) and ``dK_max = 0.75`` keep ``1 < K < 2.5`` (bonding combinations stay below their
  parents, as Wolfsberg-Helmholz requires) and make the model start from plain EHM. One K
  for all orbital pairs of an atom pair; pairs not listed (beyond the pair list) keep ``K0``;
* on-site p field (``p_field=True``), **per atom, from its bonds**: the p block of atom i gets
  ``F_i = sum_j g_ij b(r_ij) (u_ij u_ij^T - I/3)`` (eV; ``u_ij`` the unit vector to neighbour j,
  ``g_ij = MLP(s(r_ij), z_i, z_j)``, directed, ``b`` = :func:`bond_switch`, 1 up to 1.65 Å and 0
  from 2.0 Å: bonded neighbours only). Traceless, so the mean of the p levels stays
  ``alpha_p``; it rotates with the molecule, so the energies stay invariant. Why: one shared
  ``alpha_p`` ties the energy of an atom's in-plane p orbitals (sigma bonds, the imine N lone
  pair) to that of its out-of-plane p orbital (pi); the ligand field of the bonds separates
  them (an environment-dependent on-site term, as in crystal-field tight-binding models). Bonded neighbours of a planar fragment lie in its
  plane, so the field never mixes that fragment's pi and in-plane orbitals: near-crossings of
  pi and lone-pair levels (2-aza-1,3-butadiene's HOMO-1/HOMO-2 at 90 degrees) are not opened by
  the field. A longer-ranged field (1-3 and 1-4 neighbours) would mix them;
* ``H`` by the unweighted Wolfsberg-Helmholz formula of the review's eq 5 (``weighted=True``
  selects the YAeHMOP/RDKit form), ``S`` from Hoffmann's exponents, orbital energies from
  :func:`phai.physics.eigen.generalized_eigh` (degeneracy-safe derivative);
* **energy reference**: the orbital energies are ``eig(H, S) + c`` with one constant
  ``c = energy_shift + dc`` for every orbital of every molecule (``energy_shift``: a fixed
  hyperparameter, eV, set by the trainer to plain EHM's least-squares offset to the reference
  on the training frames; ``dc``: a learned scalar starting at 0). Equivalently the returned
  Hamiltonian is ``H + c S`` on the real orbitals. Why: Hoffmann's alphas are valence-state
  ionisation energies, Kohn-Sham eigenvalues lie several eV higher (B3LYP: ~5 eV for these
  molecules), and Wolfsberg-Helmholz couplings scale with ``alpha_u + alpha_v``, so the zero
  of the energy scale is not arbitrary in EHM. Without ``c`` the network can only reach the
  DFT scale by raising every alpha by ~5 eV, which shrinks every coupling by ~40 %; K then sits
  at its upper bound (tanh saturated, no gradient), the pi systems of 2-aza-1,3-butadiene
  decouple and its HOMO-1/HOMO-2 crossing is lost. With ``c`` the alphas stay VSIE-like and K
  near Hoffmann's 1.75.

The heads' last layers and the learned shift start at zero: an untrained model *is* plain
EHM (Hoffmann's alpha, K = 1.75) shifted by ``energy_shift`` (exactly plain EHM when it is 0),
and :func:`ml_ehm_orbitals` with zero corrections reproduces
:func:`phai.physics.huckel_orbitals` exactly.

**Loss** (:func:`orbital_loss`): squared error of the orbital energies against DFT on the
*valence* orbitals, aligned by index: EHM's occupied orbitals ``0..homo`` are the molecule's
valence occupied orbitals (the DFT ones minus one 1s core orbital per heavy atom: the
counts are equal), matched in ascending order; EHM's ``homo+1+m`` is DFT's ``LUMO+m`` for
``m < n_virtual``. Sorted-index matching is continuous through orbital crossings. Optionally
(``gap_weight``) plus the squared error of the spacings of adjacent levels.

**Files.** :func:`save` / :func:`load`: a folder with ``arrays.npz`` (no pickle) and
``config.json`` (:mod:`phai.pretrained.store`, atomic, checksummed).

Units: Å, eV. Shapes: ``A`` atom slots, ``O`` orbital slots, ``P`` pairs, ``B`` molecules.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import InputError, ModelFileError
from ..physics.eigen import generalized_eigh
from ..physics.huckel import HOFFMANN, HuckelSystem, huckel_matrices
from .hipnn import HIPNN, all_pairs, species_index

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "ehm" / "ml_ehm_model"
"""The small ML-EHM trained on phai's DFT data set (``phai ehm --model ml-ehm``)."""

K0: float = 1.75
DK_MAX: float = 0.75


class MLEHMOutput(NamedTuple):
    """Per molecule (batched: leading ``B``): energies ``[O]`` eV ascending, ``alpha [O]`` eV,
    ``K [A, A]``, ``hamiltonian``/``overlap [O, O]``, ``homo_index []``."""

    energies: jax.Array
    alpha: jax.Array
    K: jax.Array
    hamiltonian: jax.Array
    overlap: jax.Array
    homo_index: jax.Array


def p_block(system: HuckelSystem, field):
    """``[O, O]`` on-site p-block matrix: ``field[a, x, y]`` at the (p_x, p_y) orbital pair
    of atom ``a``, zero elsewhere (s orbitals, pairs on different atoms, padding)."""
    basis = system.basis
    atom, axis = jnp.asarray(basis.atom), jnp.asarray(basis.axis)
    is_p = (jnp.asarray(basis.l) == 1) & jnp.asarray(basis.mask)
    same = (atom[:, None] == atom[None, :]) & is_p[:, None] & is_p[None, :]
    a = jnp.minimum(atom, field.shape[0] - 1)
    return jnp.where(same, field[a[:, None], axis[:, None], axis[None, :]], 0.0)


def bond_switch(d, r_on: float, r_off: float):
    """1 for ``d <= r_on``, ``cos^2`` down to 0 at ``r_off``, 0 beyond (Å; smooth to first order):
    the range of the on-site p field, bonded neighbours only (bonds of H/C/N/O are <= 1.55 Å,
    1-3 distances >= ~2 Å)."""
    x = jnp.clip((d - r_on) / (r_off - r_on), 0.0, 1.0)
    c = jnp.cos(0.5 * jnp.pi * x)
    return c * c


def ml_ehm_orbitals(positions, system: HuckelSystem, d_alpha, K, *, weighted: bool = False,
                    shift=0.0, p_field=None, broadening: float | None = None) -> MLEHMOutput:
    """Orbital energies from per-atom alpha corrections and per-atom-pair K (pure, differentiable).

    Args:
      positions: ``[A, 3]`` Å; system: :class:`HuckelSystem` (``[O]`` fields).
      d_alpha: ``[A, 2]`` eV corrections to Hoffmann's (alpha_s, alpha_p) of each atom.
      K: ``[A, A]`` symmetric Wolfsberg-Helmholz factors.
      shift: ``[]`` eV added to every real orbital energy (``H + shift S`` on real orbitals;
        padding slots keep their energy).
      p_field: optional ``[A, 3, 3]`` symmetric eV, added to the on-site p block of each atom
        (``H[p_x(a), p_y(a)] += p_field[a, x, y]``); rotates with the molecule when built from
        bond directions (:meth:`MLEHM.__call__`), so the energies stay invariant.
    """
    basis = system.basis
    l_index = jnp.minimum(jnp.asarray(basis.l), 1)
    alpha = system.alpha + d_alpha[basis.atom, l_index]
    alpha = jnp.where(basis.mask, alpha, 0.0)
    H, S = huckel_matrices(positions, system, K=K, weighted=weighted, alpha=alpha)
    if p_field is not None:
        H = H + p_block(system, p_field)
    mask = jnp.asarray(basis.mask)
    H = jnp.where(mask[:, None] & mask[None, :], H + shift * S, H)
    w, _ = generalized_eigh(H, S, broadening=broadening)
    homo = jnp.asarray(system.n_electrons, jnp.int32) // 2 - 1
    return MLEHMOutput(w, alpha, K, H, S, homo)


class MLEHM(nn.Module):
    """HIP-NN -> (alpha, K) -> extended Hückel, for one molecule (``vmap`` over a batch).

    Attributes: the :class:`HIPNN` hyperparameters, ``pair_width`` (hidden units of the
    K head), ``weighted`` (Wolfsberg-Helmholz form) and ``energy_shift`` (eV, the fixed part
    of the energy reference; a learned scalar ``shift`` starting at 0 adds to it).
    """

    species: tuple = (1, 6, 7, 8)
    width: int = 16
    n_interactions: int = 2
    n_atom_layers: int = 1
    n_sensitivities: int = 10
    soft_min: float = 0.8
    soft_max: float = 3.5
    hard_cutoff: float = 4.5
    pair_width: int = 16
    weighted: bool = False
    energy_shift: float = 0.0
    p_field: bool = True
    field_range: tuple = (1.65, 2.0)

    @nn.compact
    def __call__(self, numbers, positions, system: HuckelSystem) -> MLEHMOutput:
        """``numbers [A]`` (0 = padding), ``positions [A, 3]`` Å, ``system`` with ``[O]`` fields."""
        A = positions.shape[0]
        dtype = positions.dtype
        s_idx = species_index(numbers, self.species)
        i, j = all_pairs(A, jnp.sum(numbers > 0))
        net = HIPNN(species=self.species, width=self.width, n_interactions=self.n_interactions,
                    n_atom_layers=self.n_atom_layers, n_sensitivities=self.n_sensitivities,
                    soft_min=self.soft_min, soft_max=self.soft_max, hard_cutoff=self.hard_cutoff, name="hipnn")
        out = net(s_idx, positions, i, j)
        zeros = nn.initializers.zeros
        d_alpha = sum(nn.Dense(2, kernel_init=zeros, name=f"alpha_{n}", param_dtype=dtype)(f)
                      for n, f in enumerate(out.features))
        d_alpha = jnp.where(out.atom_mask[:, None], d_alpha, 0.0)
        h = jax.nn.softplus(nn.Dense(self.pair_width, name="pair_0", param_dtype=dtype)(out.pair_features))
        u = nn.Dense(1, kernel_init=zeros, name="pair_1", param_dtype=dtype)(h)[:, 0]
        u = jnp.where(out.pair_mask, u, 0.0)
        ic, jc = jnp.minimum(i, A - 1), jnp.minimum(j, A - 1)
        dK = jnp.zeros((A, A), dtype).at[ic, jc].add(jnp.where(out.pair_mask, DK_MAX * jnp.tanh(u), 0.0))
        shift = self.energy_shift + self.param("shift", zeros, (), dtype)
        field = None
        if self.p_field:
            # directed pair features (atom i's p orbitals in the field of neighbour j)
            z = out.features[-1]
            f = jnp.concatenate([out.sensitivities, z[ic], z[jc]], axis=-1)
            h = jax.nn.softplus(nn.Dense(self.pair_width, name="field_0", param_dtype=dtype)(f))
            g = nn.Dense(1, kernel_init=zeros, name="field_1", param_dtype=dtype)(h)[:, 0]
            rij = positions[jc] - positions[ic]
            d = jnp.sqrt(jnp.sum(jnp.where(out.pair_mask[:, None], rij, 1.0) ** 2, axis=-1))
            g = jnp.where(out.pair_mask, g * bond_switch(d, *self.field_range), 0.0)
            u = rij / d[:, None]
            q = u[:, :, None] * u[:, None, :] - jnp.eye(3, dtype=dtype)[None] / 3.0  # traceless
            field = jax.ops.segment_sum(g[:, None, None] * q, ic, num_segments=A)
        return ml_ehm_orbitals(positions, system, d_alpha, K0 + dK, weighted=self.weighted, shift=shift,
                               p_field=field)

    def config(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("parent", "name")}


# --------------------------------------------------------------------------- data and loss

class OrbitalTargets(NamedTuple):
    """Reference orbital energies aligned to EHM orbital slots: ``target [B, O]`` eV and
    ``weight [B, O]`` (1 where a reference exists, else 0)."""

    target: np.ndarray
    weight: np.ndarray


def align_targets(occupied, n_occupied, virtual, homo_index, n_orbital_slots: int,
                  n_virtual: int = 2) -> OrbitalTargets:
    """Place DFT valence occupied energies on EHM slots ``0..homo`` and the ``n_virtual``
    lowest DFT virtuals on ``homo+1 ..`` (host NumPy).

    Args: ``occupied [B, M]`` eV ascending (NaN padding), ``n_occupied [B]``,
    ``virtual [B, V]`` eV, ``homo_index [B]`` of EHM.

    Raises: InputError if a molecule's DFT valence count differs from EHM's ``homo + 1``.
    """
    B = len(n_occupied)
    t = np.zeros((B, n_orbital_slots))
    w = np.zeros((B, n_orbital_slots))
    for b in range(B):
        n = int(n_occupied[b])
        if n != int(homo_index[b]) + 1:
            raise InputError(f"molecule {b}: {n} DFT valence occupied orbitals but EHM has {int(homo_index[b]) + 1}")
        t[b, :n] = occupied[b, :n]
        w[b, :n] = 1.0
        m = min(n_virtual, virtual.shape[1], n_orbital_slots - n)
        t[b, n:n + m] = virtual[b, :m]
        w[b, n:n + m] = 1.0
    return OrbitalTargets(t, w)


def orbital_loss(energies, targets: OrbitalTargets, gap_weight: float = 0.0):
    """Mean squared error (eV^2) over the weighted slots of a batch ``[B, O]``, plus
    ``gap_weight`` times the mean squared error of the gaps between adjacent weighted slots
    (``e[k+1] - e[k]``: the level spacings, whose zeros are the crossings)."""
    w = jnp.asarray(targets.weight)
    t = jnp.asarray(targets.target)
    loss = jnp.sum(w * (energies - t) ** 2) / jnp.sum(w)
    if gap_weight:
        wg = w[:, 1:] * w[:, :-1]
        dg = jnp.diff(energies, axis=1) - jnp.diff(t, axis=1)
        loss = loss + gap_weight * jnp.sum(wg * dg ** 2) / jnp.sum(wg)
    return loss


def orbital_mae(energies, targets: OrbitalTargets) -> float:
    w = np.asarray(targets.weight)
    return float(np.sum(w * np.abs(np.asarray(energies) - targets.target)) / np.sum(w))


def make_batch(numbers_list, positions_list, *, n_atoms: int | None = None, n_orbitals: int | None = None):
    """Pad molecules (host): ``(numbers [B, A] int32, positions [B, A, 3] f64, system)``."""
    from ..physics.huckel import huckel_batch

    pos, system = huckel_batch(numbers_list, positions_list, n_atoms=n_atoms, n_orbitals=n_orbitals,
                               parameters=HOFFMANN)
    A = pos.shape[1]
    numbers = np.zeros((len(numbers_list), A), np.int32)
    for b, z in enumerate(numbers_list):
        numbers[b, :len(z)] = z
    return numbers, pos, system


def batch_apply(model: MLEHM, params, numbers, positions, system) -> MLEHMOutput:
    return jax.vmap(lambda z, r, s: model.apply(params, z, r, s))(numbers, positions, system)


def train(model: MLEHM, params, batch, targets: OrbitalTargets, *, steps: int = 500,
          learning_rate: float = 3e-3, weight_decay: float = 0.0, gap_weight: float = 0.0, log_every: int = 0):
    """Full-batch Adam(W) on :func:`orbital_loss` (``gap_weight`` passed on).
    ``batch = (numbers, positions, system)``.
    Returns ``(params, losses [steps])``."""
    opt = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05), weight_decay=weight_decay)
    numbers, positions, system = (jax.tree.map(jnp.asarray, x) for x in batch)
    tgt = OrbitalTargets(jnp.asarray(targets.target), jnp.asarray(targets.weight))

    def loss_fn(p):
        return orbital_loss(batch_apply(model, p, numbers, positions, system).energies, tgt, gap_weight)

    def log(k, loss):
        if k % log_every == 0:
            print(f"step {k}: loss {loss:.4f} eV^2", flush=True)

    from ..train.full_batch import fit_full_batch

    return fit_full_batch(loss_fn, params, opt, steps, callback=log if log_every else None)


# --------------------------------------------------------------------------- files

class TrainedMLEHM:
    """A trained ML-EHM: module + parameters (float64), with a batched kernel for
    :func:`phai.physics.ehm_batch.run_batched` (``phai ehm --model``)."""

    def __init__(self, model: MLEHM, params, info: dict | None = None):
        self.model, self.params, self.info = model, params, dict(info or {})

    @property
    def parameters(self):
        """Element table restricted to the model's species (unknown elements are an error)."""
        return {z: HOFFMANN[z] for z in self.model.species}

    def kernel(self):
        model, params = self.model, self.params

        @jax.jit
        def run(numbers, positions, system):
            out = batch_apply(model, params, numbers, positions, system)
            return out.energies, out.hamiltonian, out.overlap

        return run

    def predict(self, structures, *, matrices: bool = False):
        """Orbital energies of ``(numbers, positions, charge)`` triples (see ``run_batched``)."""
        from ..physics.ehm_batch import run_batched

        return run_batched(structures, kernel=self.kernel(), matrices=matrices, parameters=self.parameters)


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def save(folder, trained: TrainedMLEHM) -> Path:
    """Write ``arrays.npz`` (flattened parameters, keys ``"params/hipnn/V_0"`` ...) and
    ``config.json`` (hyperparameters + ``info``) atomically."""
    from ..pretrained import store

    config = {"kind": "ml-ehm", "model": trained.model.config(), "info": trained.info}
    config["model"]["species"] = list(config["model"]["species"])
    return store.save(folder, _flatten(trained.params), config)


def _template(model: MLEHM):
    """The parameter tree's structure, shapes and dtypes (``jax.ShapeDtypeStruct`` leaves), by
    abstract evaluation of ``init``: nothing is computed or compiled (an eager ``init`` runs the
    whole network and eigensolver op by op, ~10-50 s)."""
    A = 4
    numbers = np.array([6, 1, 1, 8], np.int32)[:A]
    pos = np.array([[0, 0, 0], [1.1, 0, 0], [-0.5, 0.9, 0], [0, 0, 1.2]])
    _, nb, sys_ = make_batch([numbers], [pos])
    with jax.enable_x64(True):
        system = jax.tree.map(lambda x: jnp.asarray(x[0]), sys_)
        return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(numbers), jnp.asarray(nb[0]), system)


def load(folder) -> TrainedMLEHM:
    """Read a folder written by :func:`save` (checksum, shapes and keys checked)."""
    from ..pretrained import store

    arrays, config = store.load(folder)
    if config.get("kind") != "ml-ehm":
        raise ModelFileError(f"{folder} is not an ML-EHM model folder (kind {config.get('kind')!r})")
    cfg = dict(config["model"])
    cfg["species"] = tuple(int(s) for s in cfg["species"])
    if "field_range" in cfg:
        cfg["field_range"] = tuple(float(x) for x in cfg["field_range"])
    model = MLEHM(**cfg)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(_template(model))
    keys = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
    if set(keys) != set(arrays):
        raise ModelFileError(f"{folder}: parameters {sorted(set(keys) ^ set(arrays))[:4]} do not match the model")
    for k, (_, leaf) in zip(keys, leaves):
        if tuple(np.shape(arrays[k])) != tuple(leaf.shape):
            raise ModelFileError(f"{folder}: parameter {k} has shape {np.shape(arrays[k])}, the model needs {leaf.shape}")
    params = jax.tree_util.tree_unflatten(treedef, [np.asarray(arrays[k], np.float64) for k in keys])
    return TrainedMLEHM(model, params, config.get("info"))


# --------------------------------------------------------------------------- the bundled data set

DATASET = Path(__file__).resolve().parents[1] / "data" / "ehm" / "ehm_dft.npz"
"""phai's DFT orbital-energy data set (``scripts/make_ehm_dataset.py``; RECIPE.md beside it)."""


class EHMDataset(NamedTuple):
    """The data set as padded model inputs plus metadata (host NumPy).

    Attributes: ``batch`` = (numbers, positions, system) for :func:`batch_apply`;
    ``targets`` aligned to the EHM orbital slots (:func:`align_targets`); ``molecule`` names
    ``[B]``; ``dihedral [B]`` degrees (NaN if none); ``distortion [B]`` (-1 = undistorted);
    ``test [B]`` bool; ``raw``: the npz arrays.
    """

    batch: tuple
    targets: OrbitalTargets
    molecule: np.ndarray
    dihedral: np.ndarray
    distortion: np.ndarray
    test: np.ndarray
    raw: dict


def load_dataset(path=DATASET, *, n_virtual: int = 2) -> EHMDataset:
    """Read the npz and build padded inputs and index-aligned targets (valence occupied +
    ``n_virtual`` lowest virtuals)."""
    with np.load(path, allow_pickle=False) as f:
        raw = {k: f[k] for k in f.files}
    n_at = raw["n_atoms"].astype(int)
    numbers = [raw["numbers"][b, :n_at[b]].astype(np.int32) for b in range(len(n_at))]
    positions = [raw["positions"][b, :n_at[b]] for b in range(len(n_at))]
    batch = make_batch(numbers, positions)
    homo = np.asarray(batch[2].n_electrons) // 2 - 1
    targets = align_targets(raw["occupied"], raw["n_occupied"], raw["virtual"], homo,
                            batch[2].alpha.shape[1], n_virtual=n_virtual)
    names = raw["molecule_names"][raw["molecule"]]
    return EHMDataset(batch, targets, names, raw["dihedral"], raw["distortion"], raw["test"], raw)


def subset(batch, index):
    """Rows ``index`` of a padded batch (numbers, positions, system)."""
    return jax.tree.map(lambda x: np.asarray(x)[index], batch)
