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
* ``H`` by the unweighted Wolfsberg-Helmholz formula of the review's eq 5 (``weighted=True``
  selects the YAeHMOP/RDKit form), ``S`` from Hoffmann's exponents, orbital energies from
  :func:`phai.physics.eigen.generalized_eigh` (degeneracy-safe derivative).

The heads' last layers start at zero: an untrained model *is* plain EHM (Hoffmann's alpha,
K = 1.75), and :func:`ml_ehm_orbitals` with zero corrections reproduces
:func:`phai.physics.huckel_orbitals` exactly.

**Loss** (:func:`orbital_loss`): squared error of the orbital energies against DFT on the
*valence* orbitals, aligned by index: EHM's occupied orbitals ``0..homo`` are the molecule's
valence occupied orbitals (the DFT ones minus one 1s core orbital per heavy atom: the
counts are equal), matched in ascending order; EHM's ``homo+1+m`` is DFT's ``LUMO+m`` for
``m < n_virtual``. Sorted-index matching is continuous through orbital crossings.

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


def ml_ehm_orbitals(positions, system: HuckelSystem, d_alpha, K, *, weighted: bool = False,
                    broadening: float | None = None) -> MLEHMOutput:
    """Orbital energies from per-atom alpha corrections and per-atom-pair K (pure, differentiable).

    Args:
      positions: ``[A, 3]`` Å; system: :class:`HuckelSystem` (``[O]`` fields).
      d_alpha: ``[A, 2]`` eV corrections to Hoffmann's (alpha_s, alpha_p) of each atom.
      K: ``[A, A]`` symmetric Wolfsberg-Helmholz factors.
    """
    basis = system.basis
    l_index = jnp.minimum(jnp.asarray(basis.l), 1)
    alpha = system.alpha + d_alpha[basis.atom, l_index]
    alpha = jnp.where(basis.mask, alpha, 0.0)
    H, S = huckel_matrices(positions, system, K=K, weighted=weighted, alpha=alpha)
    w, _ = generalized_eigh(H, S, broadening=broadening)
    homo = jnp.asarray(system.n_electrons, jnp.int32) // 2 - 1
    return MLEHMOutput(w, alpha, K, H, S, homo)


class MLEHM(nn.Module):
    """HIP-NN -> (alpha, K) -> extended Hückel, for one molecule (``vmap`` over a batch).

    Attributes: the :class:`HIPNN` hyperparameters, ``pair_width`` (hidden units of the
    K head) and ``weighted`` (Wolfsberg-Helmholz form).
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
        return ml_ehm_orbitals(positions, system, d_alpha, K0 + dK, weighted=self.weighted)

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


def orbital_loss(energies, targets: OrbitalTargets):
    """Mean squared error (eV^2) over the weighted slots of a batch ``[B, O]``."""
    w = jnp.asarray(targets.weight)
    return jnp.sum(w * (energies - jnp.asarray(targets.target)) ** 2) / jnp.sum(w)


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
          learning_rate: float = 3e-3, weight_decay: float = 0.0, log_every: int = 0):
    """Full-batch Adam(W) on :func:`orbital_loss`. ``batch = (numbers, positions, system)``.
    Returns ``(params, losses [steps])``."""
    opt = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05), weight_decay=weight_decay)
    numbers, positions, system = (jax.tree.map(jnp.asarray, x) for x in batch)
    tgt = OrbitalTargets(jnp.asarray(targets.target), jnp.asarray(targets.weight))

    def loss_fn(p):
        return orbital_loss(batch_apply(model, p, numbers, positions, system).energies, tgt)

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
    A = 4
    numbers = np.array([6, 1, 1, 8], np.int32)[:A]
    pos = np.array([[0, 0, 0], [1.1, 0, 0], [-0.5, 0.9, 0], [0, 0, 1.2]])
    _, nb, sys_ = make_batch([numbers], [pos])
    system = jax.tree.map(lambda x: jnp.asarray(x[0]), sys_)
    with jax.enable_x64(True):
        return model.init(jax.random.PRNGKey(0), jnp.asarray(numbers), jnp.asarray(nb[0]), system)


def load(folder) -> TrainedMLEHM:
    """Read a folder written by :func:`save` (checksum, shapes and keys checked)."""
    from ..pretrained import store

    arrays, config = store.load(folder)
    if config.get("kind") != "ml-ehm":
        raise ModelFileError(f"{folder} is not an ML-EHM model folder (kind {config.get('kind')!r})")
    cfg = dict(config["model"])
    cfg["species"] = tuple(int(s) for s in cfg["species"])
    model = MLEHM(**cfg)
    template = _template(model)
    flat = _flatten(template)
    if set(flat) != set(arrays):
        raise ModelFileError(f"{folder}: parameters {sorted(set(flat) ^ set(arrays))[:4]} do not match the model")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
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
