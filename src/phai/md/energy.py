"""jax-md energy functions for phai potentials (ANI), free and periodic.

Named after jax-md's own scheme (``energy.lennard_jones_pair`` /
``energy.lennard_jones_neighbor_list``)::

    energy_fn = ani_energy(potential, displacement_fn, numbers)            # all pairs
    neighbor_fn, energy_fn = ani_neighbor_list(potential, displacement_fn, box, numbers)

``energy_fn(R, ...)`` returns the ensemble-mean energy in eV (self energies included) of
positions ``R [A, 3]`` in Å (or fractional coordinates, if the space uses them). It is a
pure JAX function: use it under ``jit``, ``grad``, ``lax.scan`` and with jax-md's
integrators (``simulate.nve``, ``nvt_nose_hoover``, ``nvt_langevin``) and minimisers
(``minimize.fire_descent``). The dtype follows ``R``: float32 by default, float64 when
x64 is enabled and ``R`` is float64 (the weights are cast to ``R``'s dtype).

Periodic spaces (``space.periodic``, ``space.periodic_general``) must have every
perpendicular cell width at least twice the radial cutoff (:mod:`phai.geometry.cell`); a
smaller cell is an :class:`phai.errors.InputError` (replicate it yourself).

A combined potential with ``parts`` (:class:`phai.train.DeltaPotential`, base + Δ) gives
the sum of its parts' energy functions on one set of lists, built for the largest radial
and angular cutoffs of the parts (entries beyond a part's own cutoffs contribute zero to it).

Other phai potentials follow the same path: a function of ``(R, pairs, triples,
displacement_fn)`` (flat lists with sentinel ``A``, see :mod:`phai.geometry`) returning
eV is wrapped by :func:`energy_from_lists` builders below.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import dataclasses as jmd_dataclasses
from jax_md import partition

from ..errors import InputError
from ..geometry import neighbor_vectors, pair_vectors, triples_from_dense
from ..geometry.cell import box_matrix, check_cell, wrap_positions
from ..models.ani import ani_member_energies
from ..units import HARTREE_TO_EV

# --------------------------------------------------------------------------- core


def _species_layout(potential, numbers):
    """Validated species indices ``[A]``, per-species slots and the self energy (eV)."""
    z = np.asarray(numbers)
    if z.ndim != 1 or z.size == 0:
        raise InputError(f"numbers must be a non-empty 1-D array of atomic numbers, got shape {z.shape}")
    from ..structures import atomic_numbers

    z = atomic_numbers(z)
    unknown = sorted(set(z.tolist()) - set(potential.atomic_numbers))
    if unknown:
        from ..errors import UnsupportedElementError
        from ..structures import SYMBOLS

        raise UnsupportedElementError(
            f"{potential.name} does not support {', '.join(SYMBOLS[u] for u in unknown)} "
            f"(supported: {', '.join(potential.species)})")
    species = potential.species_indices(z).astype(np.int32)
    slots = tuple(np.nonzero(species == s)[0].astype(np.int32) for s in range(len(potential.species)))
    sae_ev = float(np.sum(potential.sae[species]) * HARTREE_TO_EV)
    return species, slots, sae_ev


def ani_energy_from_lists(potential, numbers) -> Callable:
    """``f(R, pairs, triples, displacement_fn) -> energy (eV)`` for a fixed composition.

    Args:
      potential: :class:`phai.potential.ANIPotential`.
      numbers: ``[A]`` atomic numbers (or symbols), fixed along a trajectory.

    The returned function takes ``R [A, 3]``, flat ``pairs [2, P]`` (``i < j`` within the
    radial cutoff, sentinel ``A``), ``triples [3, T]`` (centre, j, k, both within the
    angular cutoff) and a jax-md displacement (``None`` = free space). Pairs or triples
    beyond the cutoffs contribute exactly zero, so lists may hold extra entries.

    A potential with ``parts`` (:class:`phai.train.DeltaPotential`) gives the sum of the
    parts' functions (each part an ANI potential, with its own AEV and self energies).
    """
    parts = getattr(potential, "parts", None)
    if parts is not None:
        for part in parts:
            if not hasattr(getattr(part, "config", None), "aev"):
                raise InputError(f"{potential.name}: MD of a combined potential needs ANI parts, not "
                                 f"{type(part).__name__}")
        cores = [ani_energy_from_lists(part, numbers) for part in parts]

        def total(R, pairs, triples, displacement_fn=None):
            return sum(core(R, pairs, triples, displacement_fn) for core in cores)

        return total
    species, slots, sae_ev = _species_layout(potential, numbers)
    n = len(species)
    params = potential.params
    aev_params, acts = potential.config.aev, potential.config.activations
    atom_mask = np.ones(n, dtype=bool)
    mol_index = np.zeros(n, dtype=np.int32)

    def energy(R, pairs, triples, displacement_fn=None):
        if R.shape != (n, 3):
            raise InputError(f"positions must have shape ({n}, 3) for this energy function, got {R.shape}")
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, R.dtype), params)
        e = ani_member_energies(p, aev_params, acts, R, species, atom_mask, mol_index, pairs, triples,
                                slots, 1, displacement_fn)
        return jnp.mean(e[:, 0]) * HARTREE_TO_EV + sae_ev

    return energy


def _bind(displacement_fn, kwargs):
    """The displacement with a jax-md ``box`` keyword bound (NPT / strained cells)."""
    if displacement_fn is None:
        return None
    dkw = {k: kwargs[k] for k in ("box", "new_box") if k in kwargs}
    if not dkw:
        return displacement_fn
    return lambda Ra, Rb: displacement_fn(Ra, Rb, **dkw)


def _is_periodic(displacement_fn, box, fractional_coordinates: bool) -> bool:
    """True if the displacement maps a full lattice vector to ~0 (a periodic space)."""
    if box is None:
        return False
    a = np.eye(3)[0] if fractional_coordinates else box_matrix(box)[:, 0]
    d = np.asarray(displacement_fn(jnp.zeros(3), jnp.asarray(a, jnp.float32)))
    return bool(np.linalg.norm(d) < 1e-3 * max(np.linalg.norm(a), 1.0))


def list_cutoffs(potential) -> tuple[float, float]:
    """``(radial, angular)`` cutoffs (Å) the pair and triple lists of ``potential`` need:
    its AEV's ``Rcr`` and ``Rca``, or the largest over a combined potential's ``parts``."""
    parts = getattr(potential, "parts", None)
    if parts is not None:
        cuts = [list_cutoffs(p) for p in parts]
        return max(c[0] for c in cuts), max(c[1] for c in cuts)
    aevp = potential.config.aev
    return float(aevp.Rcr), float(aevp.Rca)


# --------------------------------------------------------------------------- all pairs


ALL_PAIRS_MAX_ATOMS = 400


def all_pair_lists(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair ``[2, A(A-1)/2]`` and every triple ``[3, A (A-1)(A-2)/2]``."""
    i, j = np.triu_indices(n, 1)
    pairs = np.stack([i, j]).astype(np.int32)
    c, tj, tk = [], [], []
    for centre in range(n):
        others = np.delete(np.arange(n), centre)
        p, q = np.triu_indices(len(others), 1)
        c.append(np.full(len(p), centre))
        tj.append(others[p])
        tk.append(others[q])
    triples = np.stack([np.concatenate(c), np.concatenate(tj), np.concatenate(tk)]).astype(np.int32) \
        if n >= 3 else np.full((3, 1), n, dtype=np.int32)
    return pairs, triples


def ani_energy(potential, displacement_fn, numbers, *, box=None, fractional_coordinates: bool = False) -> Callable:
    """jax-md energy function over all pairs and triples (molecules, small periodic cells).

    Args:
      potential: :class:`phai.potential.ANIPotential` (``phai.load("ani-1x")``).
      displacement_fn: from ``jax_md.space`` (``free()``, ``periodic(side)``,
        ``periodic_general(box)``).
      numbers: ``[A]`` atomic numbers of the atoms, in the order of ``R``.
      box: the cell if the space is periodic (checked: every width >= 2 x cutoff).
      fractional_coordinates: as the space was built (only used for the check).

    Returns:
      ``energy_fn(R, **kwargs) -> eV``; a ``box=`` keyword is passed on to the
      displacement. Cost grows as ``A^3`` (all triples): up to
      ``ALL_PAIRS_MAX_ATOMS`` atoms; use :func:`ani_neighbor_list` beyond.
    """
    core = ani_energy_from_lists(potential, numbers)
    n = len(np.asarray(numbers))
    if n > ALL_PAIRS_MAX_ATOMS:
        raise InputError(f"ani_energy evaluates all {n}^3/2 atom triples; above {ALL_PAIRS_MAX_ATOMS} atoms "
                         f"use phai.md.ani_neighbor_list")
    if box is not None and _is_periodic(displacement_fn, box, fractional_coordinates):
        check_cell(box, potential.cutoff, model=potential.name)
    pairs, triples = all_pair_lists(n)

    def energy_fn(R, **kwargs):
        return core(R, pairs, triples, _bind(displacement_fn, kwargs))

    return energy_fn


# --------------------------------------------------------------------------- neighbor lists


@jmd_dataclasses.dataclass
class ANINeighborList:
    """A jax-md Dense radial list plus the flat pair and triple lists derived from it.

    A pytree: carry it through ``jit`` and ``lax.scan``. At every update the radial list
    (``Rcr`` + skin, jax-md's cell list) is refreshed, and from it, at the same positions,
    the unordered pairs ``[2, P]`` (``i < j``) and the angular triples ``[3, T]`` (both
    neighbors within ``Rca`` + skin) are compacted into flat arrays of fixed capacity,
    so the energy does no work on empty slots. ``did_buffer_overflow`` (a traced bool,
    sticky) is True when any of the three capacities was exceeded; energies computed with
    such a list may be wrong and it must be re-allocated (:func:`safe_update`,
    :func:`run_chunked`).
    """

    radial: partition.NeighborList
    pairs: jnp.ndarray
    triples: jnp.ndarray
    overflow: jnp.ndarray
    angular_capacity: int = jmd_dataclasses.static_field()
    exact_capacity: int = jmd_dataclasses.static_field()

    @property
    def did_buffer_overflow(self):
        return self.radial.did_buffer_overflow | self.overflow

    @property
    def idx(self):
        """The radial list's ``[A, K]`` indices (jax-md's attribute)."""
        return self.radial.idx

    @property
    def capacities(self) -> dict:
        """Capacities: radial slots per atom, angular slots per atom, pairs, triples."""
        return {"radial_per_atom": int(self.radial.idx.shape[1]), "angular_per_atom": self.angular_capacity,
                "pairs": int(self.pairs.shape[1]), "triples": int(self.triples.shape[1]),
                "exact_triples": self.exact_capacity}


def _compact(keep, columns, fill, size: int):
    """Rows of ``columns`` (each ``[M]``) where ``keep [M]``, packed into ``size`` slots
    (padding ``fill``); returns ``([len(columns), size], count)``."""
    m = keep.shape[0]
    sel = jnp.nonzero(keep, size=size, fill_value=m)[0]
    out = [jnp.concatenate([c, jnp.full((1,), fill, c.dtype)])[sel] for c in columns]
    return jnp.stack(out), jnp.sum(keep)


def _exact_triples(R, triples, displacement_fn, cutoff: float, capacity: int):
    """The triples whose two neighbors are both within ``cutoff`` at ``R``, compacted into
    ``capacity`` slots; returns ``(triples [3, capacity], count)``."""
    n = R.shape[0]
    _, dj, ok = pair_vectors(R, triples[0], triples[1], displacement_fn)
    _, dk, _ = pair_vectors(R, triples[0], triples[2], displacement_fn)
    return _compact(ok & (dj <= cutoff) & (dk <= cutoff), tuple(triples), n, capacity)


def _flat_lists(R, idx, displacement_fn, angular_cutoff: float, angular_capacity: int, pair_capacity: int,
                triple_capacity: int, exact_cutoff: float = 0.0, exact_capacity: int = 1):
    """Flat pairs and triples (and overflow flag, counts) from a Dense radial list."""
    n, k = idx.shape
    _, d, valid = neighbor_vectors(R, idx, displacement_fn)
    row = jnp.broadcast_to(jnp.arange(n, dtype=idx.dtype)[:, None], (n, k))
    pairs, n_pairs = _compact((valid & (row < idx)).reshape(-1), (row.reshape(-1), idx.reshape(-1)), n,
                              pair_capacity)
    close = valid & (d <= angular_cutoff)
    per_atom = jnp.sum(close, axis=1)
    order = jnp.argsort(jnp.logical_not(close), axis=1, stable=True)[:, :angular_capacity]
    ang = jnp.where(jnp.take_along_axis(close, order, axis=1), jnp.take_along_axis(idx, order, axis=1), n)
    cand = triples_from_dense(ang)
    triples, n_triples = _compact(cand[0] < n, tuple(cand), n, triple_capacity)
    _, n_exact = _exact_triples(R, triples, displacement_fn, exact_cutoff, exact_capacity)
    overflow = ((n_pairs > pair_capacity) | (jnp.max(per_atom) > angular_capacity) | (n_triples > triple_capacity)
                | (n_exact > exact_capacity))
    return pairs, triples, overflow, (n_pairs, jnp.max(per_atom), n_triples, n_exact)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _counts(R, idx, displacement_fn, angular_cutoff: float):
    """Pairs (``i < j``), largest angular neighbor count and candidate triples of a list."""
    n = idx.shape[0]
    _, d, valid = neighbor_vectors(R, idx, displacement_fn)
    row = jnp.arange(n, dtype=idx.dtype)[:, None]
    per_atom = jnp.sum(valid & (d <= angular_cutoff), axis=1)
    return jnp.sum(valid & (row < idx)), jnp.max(per_atom), jnp.sum(per_atom * (per_atom - 1) // 2)


@jmd_dataclasses.dataclass
class ANINeighborListFns:
    """``allocate(R, extra_capacity=0)`` (host, not jittable) and ``update(R, nbrs)`` (jittable),
    like jax-md's ``NeighborListFns``. Periodic positions are wrapped into the cell first
    (for the cell list; energies use minimum-image displacements and do not change)."""

    radial_fn: partition.NeighborListFns = jmd_dataclasses.static_field()
    displacement_fn: Callable = jmd_dataclasses.static_field()
    wrap: Callable = jmd_dataclasses.static_field()
    angular_cutoff: float = jmd_dataclasses.static_field()
    skin: float = jmd_dataclasses.static_field()
    capacity_multiplier: float = jmd_dataclasses.static_field()

    def allocate(self, R, extra_capacity: int = 0, **kwargs) -> ANINeighborList:
        """A new list sized for ``R``: each capacity is the count at ``R`` times the
        capacity multiplier, plus ``extra_capacity`` slots per atom (host only)."""
        R = jnp.asarray(R)
        Rw = self.wrap(R)
        radial = self.radial_fn.allocate(Rw, extra_capacity, **kwargs)
        disp = _bind(self.displacement_fn, kwargs)
        k = radial.idx.shape[1]
        cut = self.angular_cutoff + self.skin
        mult = self.capacity_multiplier
        flat = 1.0 + 0.5 * (mult - 1.0)  # totals over many atoms fluctuate less than per-atom counts
        n_p, per_atom, n_t = (int(x) for x in _counts(R, radial.idx, disp, cut))
        _, _, n_e = (int(x) for x in _counts(R, radial.idx, disp, self.angular_cutoff))
        ka = max(2, min(k, int(np.ceil(per_atom * mult)) + extra_capacity))
        p_cap = max(8, int(np.ceil(n_p * flat)) + 8 * extra_capacity)
        t_cap = max(8, int(np.ceil(n_t * flat)) + 64 * extra_capacity + 64)
        e_cap = max(8, int(np.ceil(n_e * flat)) + 64 * extra_capacity + 64)
        pairs, triples, overflow, _ = jax.jit(_flat_lists, static_argnums=(2, 3, 4, 5, 6, 7, 8))(
            R, radial.idx, disp, cut, ka, p_cap, t_cap, self.angular_cutoff, e_cap)
        return ANINeighborList(radial, pairs, triples, overflow, ka, e_cap)

    def update(self, R, nbrs: ANINeighborList, **kwargs) -> ANINeighborList:
        """The list for new positions ``R`` (jittable); ``did_buffer_overflow`` is sticky."""
        disp = _bind(self.displacement_fn, kwargs)
        radial = self.radial_fn.update(self.wrap(R), nbrs.radial, **kwargs)
        rebuilt = jnp.any(radial.reference_position != nbrs.radial.reference_position)

        def rebuild(_):
            pairs, triples, overflow, _ = _flat_lists(
                R, radial.idx, disp, self.angular_cutoff + self.skin, nbrs.angular_capacity,
                nbrs.pairs.shape[1], nbrs.triples.shape[1], self.angular_cutoff, nbrs.exact_capacity)
            return pairs, triples, overflow

        def keep(_):
            _, n_exact = _exact_triples(R, nbrs.triples, disp, self.angular_cutoff, nbrs.exact_capacity)
            return nbrs.pairs, nbrs.triples, n_exact > nbrs.exact_capacity

        # the flat lists follow the radial list (rebuilt only when an atom moved > skin / 2);
        # the count of triples within Rca is checked at every update
        pairs, triples, overflow = jax.lax.cond(rebuilt, rebuild, keep, None)
        return ANINeighborList(radial, pairs, triples, nbrs.overflow | overflow, nbrs.angular_capacity,
                               nbrs.exact_capacity)


def ani_neighbor_list(potential, displacement_fn, box, numbers, *, fractional_coordinates: bool = False,
                      dr_threshold: float = 0.5, capacity_multiplier: float = 1.25,
                      disable_cell_list: bool = False) -> tuple[ANINeighborListFns, Callable]:
    """jax-md neighbor-list energy function (linear cost; large and periodic systems).

    Args:
      potential: :class:`phai.potential.ANIPotential`.
      displacement_fn: from ``jax_md.space`` (free, ``periodic``, ``periodic_general``).
      box: the jax-md box (scalar, ``[3]`` sides, or ``[3, 3]`` with lattice vectors as
        columns; ``phai.md.box_from_cell(atoms.cell)``). Periodic cells need every width
        >= 2 x the radial cutoff (else :class:`InputError`). In free space it only sizes
        jax-md's cell list.
      numbers: ``[A]`` atomic numbers.
      fractional_coordinates: positions in ``[0, 1)^3`` (needed by jax-md's cell list in
        triclinic cells; with Cartesian triclinic positions jax-md falls back to an
        ``A^2`` candidate search).
      dr_threshold: skin (Å): lists are rebuilt when an atom moved more than half of it.
      capacity_multiplier: spare room in every capacity at allocation.
      disable_cell_list: passed to jax-md.

    Returns:
      ``(neighbor_fn, energy_fn)``: ``neighbor_fn.allocate(R)`` / ``neighbor_fn.update(R,
      nbrs)`` give an :class:`ANINeighborList`; ``energy_fn(R, neighbor, **kwargs) -> eV``.
      Update the list after every step (it only rebuilds when atoms moved more than half
      the skin) and check ``nbrs.did_buffer_overflow`` (:func:`safe_update`,
      :func:`run_chunked`).
    """
    rcr, rca = list_cutoffs(potential)
    periodic = _is_periodic(displacement_fn, box, fractional_coordinates)
    if periodic:
        check_cell(box, rcr, model=potential.name)
    core = ani_energy_from_lists(potential, numbers)
    radial_fn = partition.neighbor_list(displacement_fn, box, rcr, dr_threshold=dr_threshold,
                                        capacity_multiplier=capacity_multiplier,
                                        disable_cell_list=disable_cell_list,
                                        fractional_coordinates=fractional_coordinates, format=partition.Dense)
    if periodic:
        wrap = functools.partial(wrap_positions, box=box, fractional_coordinates=fractional_coordinates)
    else:
        wrap = _identity
    fns = ANINeighborListFns(radial_fn, displacement_fn, wrap, rca, float(dr_threshold),
                             float(capacity_multiplier))

    def energy_fn(R, neighbor: ANINeighborList, **kwargs):
        disp = _bind(displacement_fn, kwargs)
        triples, count = _exact_triples(R, neighbor.triples, disp, rca, neighbor.exact_capacity)
        e = core(R, neighbor.pairs, triples, disp)
        # more triples within Rca than the list holds: a loud NaN, never a silently wrong energy
        return jnp.where(count > neighbor.exact_capacity, jnp.nan, e)

    return fns, energy_fn


def _identity(R):
    return R


# --------------------------------------------------------------------------- overflow


class NeighborListOverflow(RuntimeError):
    """Raised when a neighbor list still overflows after the allowed re-allocations."""


def safe_update(neighbor_fn: ANINeighborListFns, R, nbrs: ANINeighborList, *, max_tries: int = 4
                ) -> tuple[ANINeighborList, bool]:
    """Host-side update that never returns an overflowed list.

    Updates ``nbrs`` for positions ``R``; if the list overflowed, re-allocates it from
    ``R`` (jax-md sizes it to the current neighbor counts times the capacity multiplier,
    plus extra slots on repeated overflow). Returns ``(nbrs, reallocated)``: when
    ``reallocated`` is True the shapes changed, so jitted functions recompile and any
    work done with the old list since its last good state must be redone.
    """
    new = neighbor_fn.update(R, nbrs)
    if not bool(new.did_buffer_overflow):
        return new, False
    extra = 0
    for _ in range(max_tries):
        new = neighbor_fn.allocate(R, extra_capacity=extra)
        if not bool(new.did_buffer_overflow):
            return new, True
        extra = max(8, 2 * extra)
    raise NeighborListOverflow("the neighbor list kept overflowing after re-allocation: atoms are "
                               "probably collapsing onto each other (diverging trajectory)")


def run_chunked(step_chunk: Callable, state, nbrs: ANINeighborList, neighbor_fn: ANINeighborListFns,
                num_chunks: int, *, position=lambda s: s.position, callback=None, max_redo: int = 4):
    """Drive ``lax.scan`` chunks safely: run a chunk, check overflow, redo it bigger.

    Args:
      step_chunk: jitted ``(state, nbrs) -> (state, nbrs, outputs)`` running several
        steps in ``lax.scan``, updating ``nbrs`` with ``neighbor_fn.update`` each step.
      state, nbrs: initial integrator state and neighbor list.
      num_chunks: chunks to run.
      position: how to read positions from ``state`` (for re-allocation).
      callback: ``callback(k, state, outputs)`` after each accepted chunk (logging).

    Returns:
      ``(state, nbrs)`` after the last chunk. A chunk whose final list overflowed is
      discarded and rerun from its starting state with a list re-allocated (larger) from
      the starting positions, so no step ever used an overflowed list.
    """
    for k in range(num_chunks):
        for attempt in range(max_redo + 1):
            new_state, new_nbrs, out = step_chunk(state, nbrs)
            if not bool(new_nbrs.did_buffer_overflow):
                break
            if attempt == max_redo:
                raise NeighborListOverflow(f"chunk {k}: the neighbor list overflowed {max_redo + 1} times")
            extra = 8 * (attempt + 1)
            nbrs = neighbor_fn.allocate(position(state), extra_capacity=extra)
        state, nbrs = new_state, new_nbrs
        if callback is not None:
            callback(k, state, out)
    return state, nbrs
