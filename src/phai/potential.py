"""User-facing potentials: validation, packing, jitted evaluation, units.

:func:`phai.load` returns an :class:`ANIPotential`. Inputs are atomic numbers (or symbols)
and positions in Å; outputs are eV, eV/Å and eV/Å². Every call validates its input on the
host first (elements, shapes, finiteness, overlapping atoms, charge), then packs it into a
size bucket so that compiled functions are reused across sizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .batching import Packed, pack
from .descriptors.aev import AEVParams, aev as aev_fn
from .errors import InputError
from .models.ani import ani_member_energies, params_from_arrays
from .structures import SYMBOLS, as_structure_list, validate_structure
from .units import HARTREE_TO_EV

PRECISIONS = ("float32", "float64")


class Result(NamedTuple):
    """Properties of one structure.

    Attributes:
      energy: ensemble-mean energy (eV), self energies included.
      forces: ``[A, 3]`` eV/Å (``None`` if not requested).
      energy_std: standard deviation of the member energies (eV, Bessel-corrected, as
        TorchANI's ``energies_qbcs``); the query-by-committee signal.
      member_energies: ``[M]`` energies of the members (eV).
      num_atoms: ``A``.
    """

    energy: float
    forces: np.ndarray | None
    energy_std: float
    member_energies: np.ndarray
    num_atoms: int

    @property
    def qbc(self) -> float:
        """``energy_std / sqrt(A)`` (eV): the committee disagreement per square root of the
        atom count, the criterion of the ANI-1x active learning (TorchANI's ``energies_qbcs``)."""
        return self.energy_std / np.sqrt(self.num_atoms)


@dataclasses.dataclass(frozen=True)
class ANIConfig:
    """Static description of an ANI ensemble."""

    name: str
    description: str
    aev: AEVParams
    activations: dict
    members: int


class ANIPotential:
    """An ANI ensemble ready to evaluate (energies, forces, uncertainty, Hessians).

    Args:
      params: ``{symbol: [{"W": [M, in, out], "b": [M, out]}, ...]}`` (Hartree).
      sae: ``[S]`` self atomic energies (Hartree), in species order.
      config: :class:`ANIConfig`.
      precision: ``"float32"`` (default, fast) or ``"float64"`` (parity, Hessians,
        optimisation). float64 runs inside ``jax.enable_x64(True)`` for the duration of
        each call only; nothing global is changed.
    """

    def __init__(self, params, sae: np.ndarray, config: ANIConfig, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.params = params
        self.sae = np.asarray(sae, dtype=np.float64)
        self.config = config
        self.precision = precision
        self.traces = 0
        self._params_cache: dict = {}
        z = [SYMBOLS.index(s) for s in config.aev.species]
        self.atomic_numbers = tuple(z)
        self._species_of_z = np.full(len(SYMBOLS), -1, dtype=np.int32)
        self._species_of_z[z] = np.arange(len(z), dtype=np.int32)
        self._energy_jit = jax.jit(self._member_energies, static_argnames="num_molecules")
        self._forces_jit = jax.jit(self._energies_and_forces, static_argnames="num_molecules")
        self._hessian_jit = jax.jit(self._hessian, static_argnames=("a", "num_molecules"))

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def members(self) -> int:
        return self.config.members

    @property
    def species(self) -> tuple[str, ...]:
        return self.config.aev.species

    @property
    def cutoff(self) -> float:
        return self.config.aev.Rcr

    def with_precision(self, precision: str) -> "ANIPotential":
        """The same model at another precision (shares the weights)."""
        return ANIPotential(self.params, self.sae, self.config, precision)

    def __repr__(self):
        return (f"ANIPotential({self.name!r}, members={self.members}, species={''.join(self.species)}, "
                f"precision={self.precision!r})")

    # ------------------------------------------------------------------ jitted kernels
    @property
    def _dtype(self):
        return jnp.float64 if self.precision == "float64" else jnp.float32

    def _context(self):
        return jax.enable_x64(True) if self.precision == "float64" else contextlib.nullcontext()

    def _member_energies(self, params, R, species, atom_mask, mol_index, pairs, triples, species_atoms,
                         num_molecules):
        self.traces += 1  # runs once per compilation
        return ani_member_energies(params, self.config.aev, self.config.activations, R, species, atom_mask,
                                   mol_index, pairs, triples, species_atoms, num_molecules)

    def _energies_and_forces(self, params, R, *args, num_molecules):
        def total(R_):
            e = self._member_energies(params, R_, *args, num_molecules=num_molecules)
            return jnp.sum(jnp.mean(e, axis=0)), e

        grad, e = jax.grad(total, has_aux=True)(R)
        return e, -grad

    def _cast_params(self):
        """The weights as device arrays of the working dtype (cast once per dtype)."""
        key = self.precision
        if key not in self._params_cache:
            with self._context():
                self._params_cache[key] = jax.tree_util.tree_map(lambda a: jnp.asarray(a, self._dtype), self.params)
        return self._params_cache[key]

    # ------------------------------------------------------------------ host side
    def species_indices(self, numbers: np.ndarray) -> np.ndarray:
        """Model species indices ``[A]`` of validated atomic numbers."""
        return self._species_of_z[numbers]

    def _validate(self, numbers, positions, charge=0):
        if charge not in (0, None):
            raise InputError(f"{self.name} is trained on neutral molecules and cannot use a total charge "
                             f"({charge!r}); use a charge-aware model such as AIMNet2")
        return validate_structure(numbers, positions, supported=self.atomic_numbers, model=self.name)

    def pack(self, structures: Sequence[tuple[np.ndarray, np.ndarray]]) -> Packed:
        """Validated ``(numbers, positions)`` pairs -> :class:`phai.batching.Packed`."""
        return pack([self.species_indices(z) for z, _ in structures], [r for _, r in structures],
                    num_species=len(self.species), radial_cutoff=self.config.aev.Rcr,
                    angular_cutoff=self.config.aev.Rca)

    def _run(self, packed: Packed, forces: bool):
        with self._context():
            params = self._cast_params()
            args = (jnp.asarray(packed.R, self._dtype),) + packed.device_args[1:]
            if forces:
                e, f = self._forces_jit(params, *args, **packed.static_args)
                return np.asarray(e, np.float64), np.asarray(f, np.float64)
            e = self._energy_jit(params, *args, **packed.static_args)
            return np.asarray(e, np.float64), None

    def evaluate(self, structures: Iterable, *, forces: bool = True, max_batch_atoms: int = 4096,
                 labels: Sequence[str] | None = None) -> list[Result]:
        """Evaluate many structures (``ase.Atoms``, ``(numbers, positions)`` pairs or
        ``(numbers, positions, charge)`` triples).

        Structures are validated one by one, then packed into batches of at most
        ``max_batch_atoms`` atoms. An error names the structure by ``labels[k]`` if given,
        else ``"structure k"``.
        """
        items = as_structure_list(structures)
        checked = []
        for k, (z, r, q) in enumerate(items):
            try:
                checked.append(self._validate(z, r, q))
            except InputError as exc:
                raise type(exc)(f"{labels[k] if labels else f'structure {k}'}: {exc}") from None
        results: list[Result] = []
        start = 0
        while start < len(checked):
            stop, atoms = start, 0
            while stop < len(checked) and (stop == start or atoms + len(checked[stop][0]) <= max_batch_atoms):
                atoms += len(checked[stop][0])
                stop += 1
            results.extend(self._evaluate_packed(checked[start:stop], forces))
            start = stop
        return results

    def _evaluate_packed(self, chunk, forces: bool) -> list[Result]:
        packed = self.pack(chunk)
        e, f = self._run(packed, forces)
        out = []
        for k, (z, _) in enumerate(chunk):
            sae = float(np.sum(self.sae[self.species_indices(z)]))
            member = (e[:, k] + sae) * HARTREE_TO_EV
            std = float(np.std(e[:, k], ddof=1) * HARTREE_TO_EV) if self.members > 1 else 0.0
            fk = None if f is None else f[packed.offsets[k]:packed.offsets[k + 1]] * HARTREE_TO_EV
            out.append(Result(float((np.mean(e[:, k]) + sae) * HARTREE_TO_EV), fk, std, member, len(z)))
        return out

    def _one(self, numbers, positions, charge):
        """Validated ``(numbers, positions)`` of one structure given in any accepted form."""
        if positions is None:
            if not hasattr(numbers, "get_positions"):
                raise InputError("pass an ase.Atoms, or atomic numbers and positions (Å)")
            charge = numbers.info.get("charge", 0) if charge == 0 else charge
            numbers, positions = numbers.get_atomic_numbers(), numbers.get_positions()
        return self._validate(numbers, positions, charge)

    def __call__(self, numbers, positions=None, *, forces: bool = True, charge=0) -> Result:
        """Evaluate one structure: ``pot(atoms)`` or ``pot(numbers, positions)``."""
        return self._evaluate_packed([self._one(numbers, positions, charge)], forces)[0]

    def energy(self, numbers, positions=None, *, charge=0) -> float:
        """Ensemble energy (eV)."""
        return self(numbers, positions, forces=False, charge=charge).energy

    def forces(self, numbers, positions=None, *, charge=0) -> np.ndarray:
        """Forces ``[A, 3]`` (eV/Å)."""
        return self(numbers, positions, charge=charge).forces

    def hessian(self, numbers, positions=None, *, charge=0) -> np.ndarray:
        """Hessian of the ensemble energy, ``[3A, 3A]`` (eV/Å²), by forward-over-reverse autodiff.

        Use ``precision="float64"`` for vibrational analysis. ANI's CELU activation has a
        second derivative that jumps where a hidden unit's input crosses zero, so the exact
        Hessian can differ from coarse finite differences of the forces (steps of 1e-3 Å)
        by ~0.1 eV/Å²; steps of 1e-5 Å agree to ~1e-6.
        """
        z, r = self._one(numbers, positions, charge)
        packed = self.pack([(z, r)])
        a = len(z)
        with self._context():
            params = self._cast_params()
            R0 = jnp.asarray(packed.R, self._dtype)
            h = self._hessian_jit(params, R0, packed.device_args[1:], a=a, num_molecules=packed.num_molecules)
            h = np.asarray(h, np.float64)
        return h.reshape(3 * a, 3 * a) * HARTREE_TO_EV

    def _hessian(self, params, R0, rest, *, a: int, num_molecules: int):
        def energy(Ra):
            e = self._member_energies(params, R0.at[:a].set(Ra), *rest, num_molecules=num_molecules)
            return jnp.sum(jnp.mean(e, axis=0))

        return jax.hessian(energy)(R0[:a])

    def aev(self, numbers, positions=None) -> np.ndarray:
        """AEVs ``[A, F]`` of one structure, in the potential's precision."""
        return self.aevs([self._one(numbers, positions, 0)])[0]

    def aevs(self, structures: Iterable) -> list[np.ndarray]:
        """AEVs ``[A_b, F]`` of many structures, computed in one padded batch."""
        checked = [self._validate(z, r, q) for z, r, q in as_structure_list(structures)]
        p = self.pack(checked)
        with self._context():
            g = np.asarray(_aev_jit(jnp.asarray(p.R, self._dtype), p.species, p.pairs, p.triples,
                                    params=self.config.aev))
        return [g[p.offsets[k]:p.offsets[k + 1]] for k in range(len(checked))]


_aev_jit = jax.jit(aev_fn, static_argnames="params")


def load_ani(name: str, precision: str = "float32") -> ANIPotential:
    """Build an :class:`ANIPotential` from a named pretrained model or a model folder."""
    from pathlib import Path

    from .pretrained import load_arrays, store

    if Path(name).is_dir():
        arrays, cfg = store.load(name)
    else:
        arrays, cfg = load_arrays(name)
    if cfg.get("kind") != "ani":
        raise InputError(f"{name} is a {cfg.get('kind')!r} model, not an ANI model")
    aevp = AEVParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["aev"].items()})
    acts = {s: list(v) for s, v in cfg["activations"].items()}
    config = ANIConfig(cfg.get("name", str(name)), cfg.get("description", ""), aevp, acts, int(cfg["members"]))
    return ANIPotential(params_from_arrays(arrays, aevp.species), arrays["sae"], config, precision)
