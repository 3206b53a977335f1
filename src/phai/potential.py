"""User-facing potentials: validation, packing, jitted evaluation, units.

:func:`phai.load` returns an :class:`ANIPotential`. Inputs are atomic numbers (or symbols)
and positions in Å; outputs are eV, eV/Å and eV/Å². Every call validates its input on the
host first (elements, shapes, finiteness, overlapping atoms, charge), then packs it into a
size bucket so that compiled functions are reused across sizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .batching import Packed, pack
from .descriptors.aev import AEVParams
from .descriptors.aev import aev as aev_fn
from .errors import InputError
from .geometry.cell import minimum_image
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
        self._stress_jit = jax.jit(self._energies_forces_stress, static_argnames="num_molecules")
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

    def with_precision(self, precision: str) -> ANIPotential:
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
                         num_molecules, box=None):
        """``[M, B]`` network energies (Hartree). ``box`` (``[3, 3]``, lattice vectors as
        columns, Å) makes displacements minimum-image ones (one periodic structure)."""
        self.traces += 1  # runs once per compilation
        disp = None if box is None else (lambda Ra, Rb: minimum_image(Ra - Rb, box))
        return ani_member_energies(params, self.config.aev, self.config.activations, R, species, atom_mask,
                                   mol_index, pairs, triples, species_atoms, num_molecules, disp)

    def _energies_and_forces(self, params, R, *args, num_molecules, box=None):
        def total(R_):
            e = self._member_energies(params, R_, *args, num_molecules=num_molecules, box=box)
            return jnp.sum(jnp.mean(e, axis=0)), e

        grad, e = jax.grad(total, has_aux=True)(R)
        return e, -grad

    def _energies_forces_stress(self, params, R, *args, num_molecules, box):
        """Energies, forces and ``dE/d(strain)`` ``[3, 3]`` of a periodic structure: positions
        and cell deformed together by ``F = 1 + eps`` (``R -> R F^T``, ``box -> F box``)."""
        def total(R_, eps):
            F = jnp.eye(3, dtype=R_.dtype) + eps
            e = self._member_energies(params, R_ @ F.T, *args, num_molecules=num_molecules, box=F @ box)
            return jnp.sum(jnp.mean(e, axis=0)), e

        (g_r, g_eps), e = jax.grad(total, argnums=(0, 1), has_aux=True)(R, jnp.zeros((3, 3), R.dtype))
        return e, -g_r, 0.5 * (g_eps + g_eps.T)

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

    def pack(self, structures: Sequence[tuple[np.ndarray, np.ndarray]], box: np.ndarray | None = None) -> Packed:
        """Validated ``(numbers, positions)`` pairs -> :class:`phai.batching.Packed`.

        ``box`` (``[3, 3]``, lattice vectors as columns) packs one periodic structure."""
        return pack([self.species_indices(z) for z, _ in structures], [r for _, r in structures],
                    num_species=len(self.species), radial_cutoff=self.config.aev.Rcr,
                    angular_cutoff=self.config.aev.Rca, box=box)

    def _run(self, packed: Packed, forces: bool, box: np.ndarray | None = None, stress: bool = False):
        with self._context():
            params = self._cast_params()
            args = (jnp.asarray(packed.R, self._dtype),) + packed.device_args[1:]
            kw = dict(packed.static_args)
            if box is not None:
                kw["box"] = jnp.asarray(box, self._dtype)
            if stress:
                e, f, g = self._stress_jit(params, *args, **kw)
                return np.asarray(e, np.float64), np.asarray(f, np.float64), np.asarray(g, np.float64)
            if forces:
                e, f = self._forces_jit(params, *args, **kw)
                return np.asarray(e, np.float64), np.asarray(f, np.float64), None
            e = self._energy_jit(params, *args, **kw)
            return np.asarray(e, np.float64), None, None

    def evaluate(self, structures: Iterable, *, forces: bool = True, max_batch_atoms: int = 4096,
                 labels: Sequence[str] | None = None) -> list[Result]:
        """Evaluate many structures (``ase.Atoms``, ``(numbers, positions)`` pairs or
        ``(numbers, positions, charge)`` triples).

        Structures are validated one by one, then packed into batches of at most
        ``max_batch_atoms`` atoms. An error names the structure by ``labels[k]`` if given,
        else ``"structure k"``.

        Periodic ``ase.Atoms`` (``pbc`` all True, a cell whose widths are all at least twice
        the cutoff) are evaluated one by one with minimum-image neighbors; atoms outside
        the cell are wrapped (energies and forces do not depend on it).
        """
        structures = list(structures)
        items = as_structure_list(structures)
        checked, boxes = [], []
        for k, (z, r, q) in enumerate(items):
            try:
                checked.append(self._validate(z, r, q))
                boxes.append(self._box_of(structures[k], checked[-1]))
            except InputError as exc:
                raise type(exc)(f"{labels[k] if labels else f'structure {k}'}: {exc}") from None
        results: list[Result | None] = [None] * len(checked)
        free = [k for k, b in enumerate(boxes) if b is None]
        for k, b in enumerate(boxes):
            if b is not None:
                results[k] = self._evaluate_packed([checked[k]], forces, box=b)[0][0]
        start = 0
        while start < len(free):
            stop, atoms = start, 0
            while stop < len(free) and (stop == start or atoms + len(checked[free[stop]][0]) <= max_batch_atoms):
                atoms += len(checked[free[stop]][0])
                stop += 1
            chunk = free[start:stop]
            for k, res in zip(chunk, self._evaluate_packed([checked[k] for k in chunk], forces)[0]):
                results[k] = res
            start = stop
        return results

    def _box_of(self, structure, checked) -> np.ndarray | None:
        """The cell (``[3, 3]``, lattice vectors as columns, Å) of a periodic ``ase.Atoms``,
        checked (all-periodic, large enough, no overlapping images); ``None`` if free."""
        pbc = getattr(structure, "pbc", None)
        if pbc is None or not np.any(pbc):
            return None
        if not np.all(pbc):
            raise InputError(f"pbc={list(map(bool, pbc))}: {self.name} handles molecules (pbc all False) or "
                             f"cells periodic in all three directions, not slabs or wires")
        return self._checked_box(checked[0], checked[1], np.asarray(structure.cell.array))

    def _checked_box(self, numbers, positions, cell) -> np.ndarray:
        from .geometry import periodic_neighbor_pairs
        from .geometry.cell import box_from_cell, check_cell
        from .structures import MIN_DISTANCE

        box = check_cell(box_from_cell(cell), self.cutoff, model=self.name)
        i, j, d = periodic_neighbor_pairs(positions, MIN_DISTANCE, box)
        if len(i):
            raise InputError(f"atoms {i[0]} ({SYMBOLS[numbers[i[0]]]}) and {j[0]} ({SYMBOLS[numbers[j[0]]]}) are "
                             f"{d[0]:.3g} Å apart through the periodic cell, closer than {MIN_DISTANCE} Å")
        return box

    def _evaluate_packed(self, chunk, forces: bool, box: np.ndarray | None = None,
                         stress: bool = False) -> tuple[list[Result], np.ndarray | None]:
        if box is not None:
            # wrap into the cell: the host search wants it, the energy does not care
            z, r = chunk[0]
            s = np.linalg.solve(box, r.T).T
            chunk = [(z, (s - np.floor(s)) @ box.T)]
        packed = self.pack(chunk, box=box)
        e, f, g = self._run(packed, forces or stress, box=box, stress=stress)
        out = []
        for k, (z, _) in enumerate(chunk):
            sae = float(np.sum(self.sae[self.species_indices(z)]))
            member = (e[:, k] + sae) * HARTREE_TO_EV
            std = float(np.std(e[:, k], ddof=1) * HARTREE_TO_EV) if self.members > 1 else 0.0
            fk = None if f is None else f[packed.offsets[k]:packed.offsets[k + 1]] * HARTREE_TO_EV
            out.append(Result(float((np.mean(e[:, k]) + sae) * HARTREE_TO_EV), fk, std, member, len(z)))
        sigma = None if g is None else g * HARTREE_TO_EV / abs(float(np.linalg.det(box)))
        return out, sigma

    def _one(self, numbers, positions, charge, cell=None, periodic_ok: bool = False):
        """Validated ``(numbers, positions)`` of one structure given in any accepted form,
        and its checked box (``None`` in free space). ``cell`` (rows = lattice vectors,
        Å) makes ``(numbers, positions)`` periodic in all directions."""
        structure = None
        if positions is None:
            if not hasattr(numbers, "get_positions"):
                raise InputError("pass an ase.Atoms, or atomic numbers and positions (Å)")
            structure = numbers
            charge = numbers.info.get("charge", 0) if charge == 0 else charge
            numbers, positions = numbers.get_atomic_numbers(), numbers.get_positions()
        checked = self._validate(numbers, positions, charge)
        if cell is not None:
            box = self._checked_box(checked[0], checked[1], np.asarray(cell, dtype=np.float64))
        else:
            box = self._box_of(structure, checked) if structure is not None else None
        if box is not None and not periodic_ok:
            raise InputError(f"{self.name}: this property is available for molecules only, not periodic cells "
                             f"(set atoms.pbc = False for a molecule)")
        return checked, box

    def __call__(self, numbers, positions=None, *, forces: bool = True, charge=0, cell=None) -> Result:
        """Evaluate one structure: ``pot(atoms)`` or ``pot(numbers, positions)``.

        A periodic ``ase.Atoms`` (``pbc`` all True), or ``cell=`` (``[3, 3]``, rows = lattice
        vectors, Å) with ``(numbers, positions)``, is evaluated with minimum-image neighbors.
        """
        checked, box = self._one(numbers, positions, charge, cell, periodic_ok=True)
        return self._evaluate_packed([checked], forces, box=box)[0][0]

    def stress(self, numbers, positions=None, *, cell=None) -> tuple[Result, np.ndarray]:
        """Energy, forces and stress of a periodic structure.

        Returns ``(Result, stress [3, 3] eV/Å^3)`` with ASE's sign convention: the stress is
        ``(1/V) dE/d(strain)``, the derivative with respect to a homogeneous deformation of
        the cell and the positions together (exact autodiff, minimum-image displacements).
        """
        checked, box = self._one(numbers, positions, 0, cell, periodic_ok=True)
        if box is None:
            raise InputError("stress needs a periodic cell (ase.Atoms with pbc all True, or cell=)")
        out, sigma = self._evaluate_packed([checked], True, box=box, stress=True)
        return out[0], sigma

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
        (z, r), _ = self._one(numbers, positions, charge)
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
        return self.aevs([self._one(numbers, positions, 0)[0]])[0]

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
