"""Training ANI ensembles: the jitted step, schedules, early stopping, exact resume.

The whole ensemble trains at once: members are stacked on the leading axis of every
weight (``[M, in, out]``) and evaluated by one batched contraction per layer
(:func:`phai.models.ani.apply_network`), so one step updates all members. The members
see the **same batches in the same order** and differ by their random initial weights
(independent draws per member); the total loss is the sum of the member losses, so each
member receives exactly its own gradient and the elementwise optimizers (Adam, AdamW)
keep them independent. The learning-rate schedule is shared (it follows the mean
validation loss), but the best-validation weights are kept **per member**.

Recipe defaults follow NeuroChem's ANI-1x inputs (papers notes §1.4): Adam(W) at 1e-3,
learning rate ×0.5 after ``plateau_patience`` epochs without validation improvement,
stop when it falls below ``min_lr``; energy loss per √atom; optional per-layer L2.

Resume is exact: the batch order of epoch ``e`` is a permutation drawn from
``numpy.random.default_rng([seed, e])``, so it needs no stored RNG state; checkpoints
hold the weights, the optimizer state, the epoch and batch index, the running sums, the
schedule state and the padded shapes, and the step is a deterministic XLA program, so
on CPU a run killed mid-epoch and resumed ends with bit-identical weights.

Several devices: ``num_devices = D > 1`` splits each batch into ``D`` sub-batches along a
leading axis sharded over a 1-D mesh (``jax.sharding.NamedSharding(mesh, P("data"))``),
weights and optimizer state replicated; XLA inserts the gradient all-reduce. On several
hosts, call ``jax.distributed.initialize()`` in every process first (coordinator address,
process count and id, or the cluster's environment), build the same :class:`Trainer` in
each, with ``num_devices = jax.device_count()``: ``jax.devices()`` then lists the devices
of all hosts and the same program runs SPMD; every process assembles the same global
batch (the order depends only on the seed and the epoch) and ``jax.device_put`` hands
each device its part. Only process 0 (``jax.process_index() == 0``) writes the output
folder (checkpoints, model, logs); give every process the same ``out_dir`` on a shared
file system, so that a restarted job resumes everywhere from the same checkpoint. CPU
hosts need ``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before
``jax.distributed.initialize``. Sketch, one process per host (or per GPU)::

    import jax
    jax.distributed.initialize(coordinator_address="host0:1234", num_processes=N, process_id=i)
    cfg = TrainConfig(..., num_devices=jax.device_count())
    Trainer(cfg, load_data(...), out_dir="/shared/run").fit()   # the same call everywhere

(``PHAI_TEST_MULTIHOST=1 pytest tests/test_train.py -k two_processes`` runs this with two
processes on one machine and checks it against a one-device run.)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..batching import pack
from ..errors import InputError
from ..models.ani import ani_member_energies
from ..structures import SYMBOLS
from ..units import EV_TO_HARTREE, HARTREE_TO_KCALMOL
from . import checkpoint as ckpt
from .batches import (
    ShapePolicy,
    TrainingSet,
    assemble,
    needs,
    species_lookup,
    split_by_group,
)
from .losses import energy_sq_errors, force_sq_errors, l2_penalty
from .model import ModelSpec, load_start, scratch_model
from .sae import fit_self_energies


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of a run (plain data; saved in every checkpoint).

    Attributes:
      members: ensemble size ``M`` (with ``init``, the first ``M`` members of the start).
      hidden: hidden widths per element for a new model (default: ANI-1x's).
      init: ``None`` (new model), a pretrained name (``"ani-1x"``) or a model/output folder.
      freeze_layers: 0-based linear-layer indices whose weights stay fixed (NeuroChem's
        ``freezelayer``; ``(0, 2)`` is the ANI-1ccx recipe).
      freeze_biases: freeze the biases of those layers too (default True: a frozen layer
        is the whole affine map; NeuroChem's choice is not documented).
      refit_sae: fit the self energies to the training energies (always for a new model).
        For a new model: ``E ~ counts . SAE`` by least squares. Starting from ``init``: the
        same regression on the residual ``E - NN_start(x)`` of the starting networks, i.e.
        new SAE = the linear per-element shift that best maps the start onto the new level
        of theory (ANI-1ccx refitted its SAE to the CC data; fitting the residual keeps the
        starting networks' predictions meaningful on small data sets).
      epochs, batch_size, seed: as usual; batches hold ``batch_size`` conformations.
      lr, optimizer (``"adamw"`` or ``"adam"``), weight_decay (AdamW's decoupled decay).
      schedule: ``"plateau"`` (×``plateau_factor`` after ``plateau_patience`` stale epochs),
        ``"cosine"`` (to 0 at ``epochs``) or ``"constant"``.
      min_lr: stop when the plateau schedule drives the rate below this (NeuroChem ``tcrit``).
      early_stopping: stop after this many epochs without a better mean validation loss.
      force_weight: weight ``w_F`` of the force loss (used when the data have forces and
        ``use_forces``).
      l2: ``{layer index: coefficient}`` L2 penalty on weights (NeuroChem ``l2valu``).
      valid_fraction: held-out fraction of molecules when no validation set is given.
      num_devices: data-parallel devices (see the module docstring).
      checkpoint_every: steps between mid-epoch checkpoints (0: only at epoch ends).
    """

    members: int = 8
    hidden: dict | None = None
    init: str | None = None
    freeze_layers: tuple = ()
    freeze_biases: bool = True
    refit_sae: bool = True
    epochs: int = 100
    batch_size: int = 256
    seed: int = 0
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-5
    schedule: str = "plateau"
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    min_lr: float = 1e-6
    early_stopping: int | None = None
    use_forces: bool = True
    force_weight: float = 0.1
    l2: dict = dataclasses.field(default_factory=dict)
    valid_fraction: float = 0.1
    num_devices: int = 1
    checkpoint_every: int = 100
    progress: bool = True
    plot: bool = True
    name: str = "trained"

    def __post_init__(self):
        self.freeze_layers = tuple(int(x) for x in self.freeze_layers)
        self.l2 = {int(k): float(v) for k, v in self.l2.items()}
        if self.optimizer not in ("adamw", "adam"):
            raise InputError(f"optimizer must be 'adamw' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("plateau", "cosine", "constant"):
            raise InputError(f"schedule must be 'plateau', 'cosine' or 'constant', got {self.schedule!r}")
        for name in ("members", "epochs", "batch_size", "num_devices"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"lr must be positive, got {self.lr}")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["freeze_layers"] = list(self.freeze_layers)
        d["l2"] = {str(k): v for k, v in self.l2.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown training settings {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


def freeze_labels(params: dict, layers: Sequence[int], biases: bool = True) -> dict:
    """Optimizer labels (``"frozen"``/``"train"``) with the structure of ``params``."""
    layers = {int(x) for x in layers}
    for s, net in params.items():
        bad = [l for l in layers if l >= len(net)]
        if bad:
            raise InputError(f"cannot freeze layer {bad[0]}: the {s} network has {len(net)} linear layers (0-{len(net) - 1})")
    return {s: [{"W": "frozen" if l in layers else "train", "b": "frozen" if (l in layers and biases) else "train"}
                for l in range(len(net))] for s, net in params.items()}


def make_optimizer(config: TrainConfig, params: dict) -> optax.GradientTransformation:
    """Adam/AdamW with an injectable learning rate; frozen layers get zero updates
    (``optax.multi_transform`` with ``optax.set_to_zero``), so they stay bit-identical."""
    labels = freeze_labels(params, config.freeze_layers, config.freeze_biases) if config.freeze_layers else None

    def build(learning_rate):
        if config.optimizer == "adamw":
            inner = optax.adamw(learning_rate, weight_decay=config.weight_decay)
        else:
            inner = optax.adam(learning_rate)
        if labels is None:
            return inner
        return optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()}, labels)

    return optax.inject_hyperparams(build)(learning_rate=config.lr)


BATCH_KEYS = ("R", "species", "atom_mask", "mol_index", "pairs", "triples", "species_atoms")


def make_loss_fn(spec: ModelSpec, *, force_weight: float, use_forces: bool, l2: dict):
    """``loss(params, batch, num_molecules) -> (total, aux)`` over a ``[D, ...]`` batch.

    ``aux``: ``esq [M]`` (sum of per-atom-scaled squared energy errors), ``fsq [M]``,
    ``ens_sq``/``ens_abs`` (sums over molecules of the ensemble-mean energy error, squared
    and absolute, Hartree), ``fens_sq`` (force components, ensemble mean), ``count``,
    ``atoms``."""

    def per_device(params, b, num_molecules):
        def energies(R):
            return ani_member_energies(params, spec.aev, spec.activations, R, b["species"], b["atom_mask"],
                                       b["mol_index"], b["pairs"], b["triples"], b["species_atoms"], num_molecules)

        if use_forces:
            e, vjp = jax.vjp(energies, b["R"])
            m = e.shape[0]
            cot = jnp.eye(m, dtype=e.dtype)[:, :, None] * jnp.ones((1, 1, e.shape[1]), e.dtype)
            forces = -jax.vmap(lambda c: vjp(c)[0])(cot)  # [M, N, 3]
            fsq = force_sq_errors(forces, b["F"], b["atom_mask"])
            fmean = jnp.mean(forces, axis=0)
            fens = jnp.sum(jnp.where(b["atom_mask"][:, None], (fmean - b["F"]) ** 2, 0.0))
        else:
            e = energies(b["R"])
            fsq = jnp.zeros(e.shape[0], e.dtype)
            fens = jnp.zeros((), e.dtype)
        esq = energy_sq_errors(e, b["E"], b["num_atoms"], b["mol_mask"])
        d = jnp.where(b["mol_mask"], jnp.mean(e, axis=0) - b["E"], 0.0)
        return esq, fsq, jnp.sum(d * d), jnp.sum(jnp.abs(d)), fens

    def loss(params, batch, num_molecules):
        esq, fsq, ens_sq, ens_abs, fens = jax.vmap(lambda b: per_device(params, b, num_molecules))(batch)
        count = jnp.sum(batch["mol_mask"])
        atoms = jnp.sum(batch["atom_mask"])
        esq, fsq = jnp.sum(esq, axis=0), jnp.sum(fsq, axis=0)
        total = jnp.sum(esq) / count
        if use_forces:
            total = total + force_weight * jnp.sum(fsq) / (3 * atoms)
        if l2:
            total = total + l2_penalty(params, l2)
        aux = {"esq": esq, "fsq": fsq, "ens_sq": jnp.sum(ens_sq), "ens_abs": jnp.sum(ens_abs),
               "fens_sq": jnp.sum(fens), "count": count.astype(esq.dtype), "atoms": atoms.astype(esq.dtype)}
        return total, aux

    return loss


def make_train_step(spec: ModelSpec, tx: optax.GradientTransformation, out_shardings=None, **loss_kw):
    """The jitted update ``step(params, opt_state, batch, num_molecules) -> (params, opt_state, aux)``.

    ``out_shardings``: with a mesh, the replicated sharding, so that outputs come back with
    the shardings of the inputs (no recompilation on the next call)."""
    loss = make_loss_fn(spec, **loss_kw)

    def step(params, opt_state, batch, num_molecules):
        (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(params, batch, num_molecules)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux

    if out_shardings is None:
        return jax.jit(step, static_argnames="num_molecules", donate_argnums=(0, 1))
    return jax.jit(step, static_argnames="num_molecules", donate_argnums=(0, 1), out_shardings=out_shardings)


@dataclasses.dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    params: dict
    best_params: dict
    sae: np.ndarray
    history: list
    stopped: str
    out_dir: Path | None


def _chunks(n: int, size: int) -> list[np.ndarray]:
    """Consecutive index batches ``[0, size), [size, 2 size), ...`` covering ``range(n)``."""
    return [np.arange(k, min(k + size, n)) for k in range(0, n, size)]


class _NoBar:
    """Stands for a tqdm bar when progress is off (tqdm is then not imported at all: in
    Jupyter without ipywidgets, importing ``tqdm.auto`` alone prints a warning)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(enabled: bool, **kw):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(**kw)


_SUMS = ("esq", "fsq", "ens_sq", "ens_abs", "fens_sq", "count", "atoms")


class Trainer:
    """Trains an ANI ensemble on a :class:`TrainingSet`.

    Args:
      config: :class:`TrainConfig`.
      train: training conformations (eV, eV/Å): a :class:`TrainingSet` in memory or a
        :class:`phai.train.stream.StreamedTrainingSet` (an ANI HDF5 file read batch by batch;
        the same split, epoch order, checkpoints and results).
      valid: validation conformations; default: ``config.valid_fraction`` of the molecules
        of ``train`` (by ``groups`` if present, else of the conformations), held out.
      out_dir: output folder (see :mod:`phai.train.checkpoint`); if it holds a checkpoint
        the run resumes from it. ``None``: nothing is written.
      delta: for a Δ-learning run, :func:`phai.train.delta.delta_record` (what the energies
        of ``train`` are a difference to), written into the model folder so that
        ``phai.load(out_dir)`` knows it. The self energies are fitted to ``train.energies``,
        i.e. to the differences the networks learn.
    """

    def __init__(self, config: TrainConfig, train: TrainingSet, valid: TrainingSet | None = None,
                 out_dir=None, delta: dict | None = None):
        self.config = config
        key = jax.random.PRNGKey(config.seed)
        if config.init:
            params, sae, spec = load_start(config.init, config.members)
        else:
            params, spec = scratch_model(key, config.members, config.hidden)
            sae = None
        spec.name = config.name
        spec.description = (f"trained by phai from {config.init or 'scratch'}"
                            + (f", layers {list(config.freeze_layers)} frozen" if config.freeze_layers else ""))
        spec.delta = dict(delta) if delta else None
        if spec.delta:
            from .delta import describe

            spec.description += "; " + describe(spec.delta)
        self.spec = spec
        supported = [SYMBOLS.index(s) for s in spec.aev.species]
        if valid is None:
            groups = train.groups if train.groups is not None else np.arange(len(train))
            tr, va = split_by_group(groups, [1 - config.valid_fraction, config.valid_fraction], seed=config.seed)
            train, valid = train.subset(tr), train.subset(va)
        if len(train) == 0 or len(valid) == 0:
            raise InputError(f"need training and validation conformations, have {len(train)} and {len(valid)}")
        train.validate(supported, config.name)
        valid.validate(supported, config.name)
        self.train_set, self.valid_set = train, valid
        self.use_forces = bool(config.use_forces and train.forces is not None and valid.forces is not None)
        if sae is None:
            sae = fit_self_energies(train.numbers, train.energies, spec.aev.species) * EV_TO_HARTREE
        elif config.refit_sae:
            nn = self._network_energies(params, spec, train)  # eV, no self energies
            sae = fit_self_energies(train.numbers, train.energies - nn, spec.aev.species) * EV_TO_HARTREE
        self.sae = np.asarray(sae, np.float64)
        self.species_of_z = species_lookup(spec.aev.species)
        self.tx = make_optimizer(config, params)
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.opt_state = self.tx.init(self.params)
        self.best_params = jax.tree_util.tree_map(np.asarray, params)
        self.state = {"epoch": 0, "batch": 0, "step": 0, "lr": config.lr, "best_member_loss": [math.inf] * spec.members,
                      "best_mean_loss": math.inf, "stale": 0, "since_best": 0, "history": [],
                      "sums": None, "stopped": None, "fingerprint": self._fingerprint()}
        self.policy, self.eval_policy = ShapePolicy(), ShapePolicy()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._mesh = None
        if config.num_devices > 1:
            devices = jax.devices()
            if len(devices) < config.num_devices:
                raise InputError(f"num_devices={config.num_devices} but JAX sees {len(devices)} devices")
            from jax.sharding import Mesh
            self._mesh = Mesh(np.array(devices[:config.num_devices]), ("data",))
        self._set_lr(config.lr)  # a strongly typed rate from the start: no recompilation when it changes
        loss_kw = {"force_weight": config.force_weight, "use_forces": self.use_forces, "l2": config.l2}
        rep = None
        if self._mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            rep = NamedSharding(self._mesh, PartitionSpec())
        self._step = make_train_step(spec, self.tx, out_shardings=rep, **loss_kw)
        self._eval = jax.jit(make_loss_fn(spec, **{**loss_kw, "l2": {}}), static_argnames="num_molecules")
        self.compilations = 0
        if self.out_dir is not None and (self.out_dir / "checkpoint" / "config.json").is_file():
            self.restore(self.out_dir / "checkpoint")

    @staticmethod
    def _network_energies(params, spec: ModelSpec, ts: TrainingSet, chunk: int = 1024) -> np.ndarray:
        """``[C]`` ensemble-mean network energies (eV, self energies excluded) of ``ts``, in
        chunks of ``chunk`` conformations (the same chunks in memory and streamed)."""
        from ..potential import ANIConfig, ANIPotential

        cfg = ANIConfig(spec.name, "", spec.aev, spec.activations, spec.members)
        pot = ANIPotential(params, np.zeros(len(spec.aev.species)), cfg)
        out = []
        for k in range(0, len(ts), chunk):
            part = ts.load(np.arange(k, min(k + chunk, len(ts))))
            out.extend(r.energy for r in pot.evaluate(list(zip(part.numbers, part.positions)), forces=False))
        return np.array(out)

    # ------------------------------------------------------------------ data
    def _fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for ts in (self.train_set, self.valid_set) if hasattr(self, "valid_set") else ():
            h.update(np.asarray(ts.energies, np.float64).tobytes())
            h.update(np.asarray([len(z) for z in ts.numbers], np.int64).tobytes())
        return h.hexdigest()[:16]

    def epoch_order(self, epoch: int) -> list[np.ndarray]:
        """Batches (conformation indices) of ``epoch``: a permutation seeded by ``(seed, epoch)``."""
        perm = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_set))
        b = self.config.batch_size
        return [perm[k:k + b] for k in range(0, len(perm), b)]

    def warm_up(self, max_batches: int = 64) -> None:
        """Fix the padded shapes before the first step: pack (on the host only) up to
        ``max_batches`` batches of the first epochs and of the validation set and keep the largest
        needs, so that the train and evaluation steps compile once each."""
        if not self.policy.state:  # batches of the first epochs (random compositions), at most max_batches
            batches = [b for e in range(min(self.config.epochs, 4)) for b in self.epoch_order(e)]
            self._grow(self.train_set, batches[:max_batches], self.policy)
        if not self.eval_policy.state:
            self._grow(self.valid_set, _chunks(len(self.valid_set), self.config.batch_size)[:max_batches],
                       self.eval_policy)

    def _grow(self, ts, batches, policy: ShapePolicy) -> None:
        """Grow ``policy`` to the needs of ``batches`` of ``ts`` (host packing only, no device work)."""
        for index in batches:
            local = ts.load(index)  # a streamed set reads this batch only
            for part in np.array_split(np.arange(len(local)), self.config.num_devices):
                sp = [self.species_of_z[np.asarray(local.numbers[c])] for c in part]
                p = pack(sp, [local.positions[c] for c in part], num_species=len(self.spec.aev.species),
                         radial_cutoff=self.spec.aev.Rcr, angular_cutoff=self.spec.aev.Rca)
                policy.grow([needs(p)])

    def batch(self, ts: TrainingSet, index, policy: ShapePolicy | None = None) -> tuple[dict, int]:
        """Device-ready ``[D, ...]`` arrays of conformations ``index`` and the static ``B``."""
        b = assemble(ts, index, species_of_z=self.species_of_z, num_species=len(self.spec.aev.species),
                     radial_cutoff=self.spec.aev.Rcr, angular_cutoff=self.spec.aev.Rca, sae_hartree=self.sae,
                     num_devices=self.config.num_devices, policy=policy or self.policy, with_forces=self.use_forces)
        nm = b.pop("num_molecules")
        arrays = {k: v for k, v in b.items()}
        arrays["R"] = arrays["R"].astype(np.float32)
        for k in ("E", "num_atoms"):
            arrays[k] = arrays[k].astype(np.float32)
        if "F" in arrays:
            arrays["F"] = arrays["F"].astype(np.float32)
        if self._mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            sh = NamedSharding(self._mesh, PartitionSpec("data"))
            arrays = jax.tree_util.tree_map(lambda a: jax.device_put(a, sh), arrays)
        return arrays, nm

    def _replicate(self, tree):
        if self._mesh is None:
            return tree
        from jax.sharding import NamedSharding, PartitionSpec

        return jax.device_put(tree, NamedSharding(self._mesh, PartitionSpec()))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, ts: TrainingSet, params=None, batch_size: int | None = None) -> dict:
        """Losses and errors on ``ts``: ``member_loss [M]`` (per-atom-scaled energy MSE +
        ``w_F`` force MSE, Hartree units), ``loss`` (their mean), ensemble ``energy_rmse``/
        ``energy_mae`` (kcal/mol) and ``force_rmse`` (kcal/mol/Å)."""
        params = self.params if params is None else self._replicate(jax.tree_util.tree_map(jnp.asarray, params))
        batches = _chunks(len(ts), batch_size or self.config.batch_size)
        policy = self.eval_policy
        if ts is not self.valid_set or batch_size not in (None, self.config.batch_size):
            # one padded shape for every batch of this set, at least the validation shape: the
            # evaluation compiles once per set (not per batch), and not at all if the set fits
            # the validation shape already compiled
            policy = ShapePolicy(self.eval_policy.to_json())
            self._grow(ts, batches, policy)
        sums = None
        for index in batches:
            b, nm = self.batch(ts, index, policy)
            _, aux = self._eval(params, b, nm)
            sums = aux if sums is None else jax.tree_util.tree_map(jnp.add, sums, aux)
        return self._summarise(sums)

    def _summarise(self, sums) -> dict:
        s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
        member = s["esq"] / s["count"]
        if self.use_forces:
            member = member + self.config.force_weight * s["fsq"] / (3 * s["atoms"])
        out = {"member_loss": member.tolist(), "loss": float(np.mean(member)),
               "energy_rmse": float(np.sqrt(s["ens_sq"] / s["count"]) * HARTREE_TO_KCALMOL),
               "energy_mae": float(s["ens_abs"] / s["count"] * HARTREE_TO_KCALMOL)}
        if self.use_forces:
            out["force_rmse"] = float(np.sqrt(s["fens_sq"] / (3 * s["atoms"])) * HARTREE_TO_KCALMOL)
        return out

    # ------------------------------------------------------------------ checkpoints
    def _arrays(self) -> dict:
        arrays = ckpt.flatten_params(jax.device_get(self.params))
        arrays.update(ckpt.flatten_params(self.best_params, "best/"))
        arrays.update(ckpt.flatten_tree(jax.device_get(self.opt_state), "opt/"))
        arrays["sae"] = self.sae
        return arrays

    def _training_json(self) -> dict:
        st = dict(self.state)
        if st["sums"] is not None:
            st["sums"] = {k: np.asarray(v).tolist() for k, v in st["sums"].items()}
        st["best_member_loss"] = [float(x) for x in st["best_member_loss"]]
        st["shapes"] = {"train": self.policy.to_json(), "eval": self.eval_policy.to_json()}
        st["config"] = self.config.to_json()
        return st

    def save_checkpoint(self, folder=None) -> Path:
        folder = Path(folder) if folder is not None else self.out_dir / "checkpoint"
        return ckpt.write_checkpoint(folder, self._arrays(), self.spec.to_config(), self._training_json())

    def restore(self, folder) -> None:
        """Continue from a checkpoint folder written by :meth:`save_checkpoint`."""
        arrays, cfg = ckpt.read_checkpoint(folder)
        st = cfg["training"]
        if st.get("fingerprint") != self.state["fingerprint"]:
            raise InputError(f"{folder} was written for another data set (fingerprint {st.get('fingerprint')} vs "
                             f"{self.state['fingerprint']}); use another output folder")
        species = self.spec.aev.species
        params = ckpt.unflatten_params(arrays, species)
        if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(jax.device_get(self.params)) or any(
                np.shape(a) != np.shape(b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                            jax.tree_util.tree_leaves(jax.device_get(self.params)))):
            raise InputError(f"{folder} holds another architecture than this run's")
        self.params = self._replicate(jax.tree_util.tree_map(jnp.asarray, params))
        self.best_params = ckpt.unflatten_params(arrays, species, "best/")
        self.opt_state = self._replicate(jax.tree_util.tree_map(jnp.asarray, ckpt.unflatten_tree(
            jax.device_get(self.opt_state), arrays, "opt/")))
        self.sae = np.asarray(arrays["sae"], np.float64)
        shapes = st.pop("shapes", {})
        self.policy, self.eval_policy = ShapePolicy(shapes.get("train")), ShapePolicy(shapes.get("eval"))
        st.pop("config", None)
        if st.get("sums") is not None:
            st["sums"] = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in st["sums"].items()}
        self.state.update(st)

    def model_arrays(self, best: bool = True) -> dict:
        params = self.best_params if best else jax.device_get(self.params)
        arrays = ckpt.flatten_params(params)
        arrays["sae"] = self.sae
        return arrays

    def save_model(self, folder, best: bool = True) -> Path:
        """Write the ensemble (best-validation weights per member) as a model folder that
        ``phai.load`` reads."""
        return ckpt.write_model_files(folder, self.model_arrays(best), self.spec.to_config())

    def potential(self, best: bool = True, precision: str = "float32"):
        """The current (or best) ensemble as a :class:`phai.potential.ANIPotential`."""
        from ..models.ani import params_from_arrays
        from ..potential import ANIConfig, ANIPotential

        cfg = ANIConfig(self.spec.name, self.spec.description, self.spec.aev, self.spec.activations, self.spec.members)
        arrays = self.model_arrays(best)
        return ANIPotential(params_from_arrays(arrays, self.spec.aev.species), self.sae, cfg, precision)

    # ------------------------------------------------------------------ the loop
    def _set_lr(self, lr: float):
        hp = dict(self.opt_state.hyperparams)
        hp["learning_rate"] = self._replicate(jnp.asarray(lr, dtype=jnp.asarray(hp["learning_rate"]).dtype))
        self.opt_state = self.opt_state._replace(hyperparams=hp)

    def _end_epoch(self, epoch: int, sums, seconds: float) -> None:
        cfg, st = self.config, self.state
        train = self._summarise(sums)
        val = self.evaluate(self.valid_set)
        member = np.asarray(val["member_loss"])
        best = np.asarray(st["best_member_loss"])
        improved = member < best
        if improved.any():
            cur = jax.device_get(self.params)
            self.best_params = jax.tree_util.tree_map(
                lambda b_, c: np.where(improved.reshape((-1,) + (1,) * (np.ndim(c) - 1)), np.asarray(c), b_),
                self.best_params, cur)
            st["best_member_loss"] = np.where(improved, member, best).tolist()
        if val["loss"] < st["best_mean_loss"]:
            st["best_mean_loss"], st["stale"], st["since_best"] = val["loss"], 0, 0
        else:
            st["stale"] += 1
            st["since_best"] += 1
        lr = st["lr"]
        row = {"epoch": epoch + 1, "step": st["step"], "lr": lr, "seconds": seconds, "train_loss": train["loss"],
               "train_energy_rmse": train["energy_rmse"], "val_loss": val["loss"],
               "val_energy_rmse": val["energy_rmse"], "val_energy_mae": val["energy_mae"]}
        if self.use_forces:
            row["train_force_rmse"], row["val_force_rmse"] = train["force_rmse"], val["force_rmse"]
        st["history"].append(row)
        if cfg.schedule == "plateau" and st["stale"] >= cfg.plateau_patience:
            lr, st["stale"] = lr * cfg.plateau_factor, 0
            if lr < cfg.min_lr:
                st["stopped"] = f"learning rate fell below min_lr={cfg.min_lr:g}"
        elif cfg.schedule == "cosine":
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch + 1) / cfg.epochs))
        if cfg.early_stopping and st["since_best"] >= cfg.early_stopping:
            st["stopped"] = f"no validation improvement for {cfg.early_stopping} epochs"
        st["lr"] = lr
        self._set_lr(lr)
        st["epoch"], st["batch"], st["sums"] = epoch + 1, 0, None

    def fit(self, callback: Callable[[dict], None] | None = None) -> FitResult:
        """Train until ``epochs`` or a stop criterion; resumable at any point.

        ``callback(info)`` runs after every step (after a checkpoint, if one was written):
        ``info`` has ``epoch``, ``batch``, ``step`` and ``checkpointed``."""
        cfg, st = self.config, self.state
        self.warm_up()
        self.params = self._replicate(self.params)
        self.opt_state = self._replicate(self.opt_state)
        self._set_lr(st["lr"])
        while st["epoch"] < cfg.epochs and not st["stopped"]:
            epoch = st["epoch"]
            order = self.epoch_order(epoch)
            sums = st["sums"]
            t0 = time.perf_counter()
            bar = _progress_bar(cfg.progress, total=len(order), initial=st["batch"],
                                desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
            nxt = self.batch(self.train_set, order[st["batch"]]) if st["batch"] < len(order) else None
            for k in range(st["batch"], len(order)):
                b, nm = nxt
                self.params, self.opt_state, aux = self._step(self.params, self.opt_state, b, nm)
                if k + 1 < len(order):  # pack the next batch on the host while the device works
                    nxt = self.batch(self.train_set, order[k + 1])
                sums = aux if sums is None else jax.tree_util.tree_map(jnp.add, sums, aux)
                st["batch"], st["step"], st["sums"] = k + 1, st["step"] + 1, sums
                bar.update(1)
                done = False
                if self._writes and cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0 \
                        and k + 1 < len(order):
                    self.save_checkpoint()
                    done = True
                if callback is not None:
                    callback({"epoch": epoch, "batch": k + 1, "step": st["step"], "checkpointed": done})
            bar.close()
            jax.block_until_ready(self.params)  # dispatch is asynchronous: time the work, not its queueing
            self._end_epoch(epoch, sums, time.perf_counter() - t0)
            if cfg.progress:
                h = st["history"][-1]
                print(f"epoch {h['epoch']}: train E RMSE {h['train_energy_rmse']:.3f}, val E RMSE "
                      f"{h['val_energy_rmse']:.3f} kcal/mol, lr {st['lr']:.2e}", flush=True)
            if self._writes:
                self.save_checkpoint()
                self.save_model(self.out_dir)
                self.write_logs()
        if self._writes and cfg.plot and st["history"]:
            plot_learning_curve(st["history"], self.out_dir / "learning_curve.png")
        stopped = st["stopped"] or f"{cfg.epochs} epochs"
        return FitResult(jax.device_get(self.params), self.best_params, self.sae, st["history"], stopped, self.out_dir)

    @property
    def _writes(self) -> bool:
        """Whether this process writes ``out_dir``: there is one, and this is process 0 of
        a multi-process (``jax.distributed``) run or the only process."""
        return self.out_dir is not None and jax.process_index() == 0

    def write_logs(self) -> None:
        hist = self.state["history"]
        ckpt.write_text_atomic(self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in hist))
        buf = io.StringIO()
        keys = list(hist[0]) if hist else []
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(hist)
        ckpt.write_text_atomic(self.out_dir / "metrics.csv", buf.getvalue())


def plot_learning_curve(history: list, path) -> Path:
    """Training and validation energy RMSE (kcal/mol) per epoch, log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ep, [h["train_energy_rmse"] for h in history], label="train")
    ax.plot(ep, [h["val_energy_rmse"] for h in history], label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("energy RMSE / kcal/mol")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def train(config: TrainConfig, train_set: TrainingSet, valid_set: TrainingSet | None = None, out_dir=None,
          callback=None, delta: dict | None = None) -> FitResult:
    """Build a :class:`Trainer` and run :meth:`Trainer.fit`."""
    return Trainer(config, train_set, valid_set, out_dir, delta=delta).fit(callback)
