"""jax-md energy functions for AIMNet2 (``phai.load("aimnet2-wb97m-d3")``), free space.

Same scheme as the ANI functions of :mod:`phai.md.energy`::

    energy_fn = aimnet2_energy(model, displacement_fn, numbers, charge=0)          # all pairs
    neighbor_fn, energy_fn = aimnet2_neighbor_list(model, displacement_fn, box, numbers, charge=0)

``energy_fn(R, ...)`` returns the ensemble-mean energy (eV, atomic shifts included) of
positions ``R [A, 3]`` (Å) for a total charge fixed when the function is built; it equals
:class:`phai.models.aimnet2.AIMNet2`'s own evaluation (the same member code). It is a pure
JAX function for ``jit``, ``grad``, ``lax.scan``, ``simulate.nve`` / ``nvt_*`` and
``minimize.fire_descent``. The dtype follows ``R`` (float64 needs x64 enabled).

AIMNet2's local terms (the AEV within 5 Å and the message passing) run on a dense neighbor
list: every other atom (:func:`aimnet2_energy`) or a jax-md ``Dense`` list with a skin
(:func:`aimnet2_neighbor_list`: pairs beyond 5 Å contribute exactly 0). Its long-range
terms, the Coulomb energy of the predicted charges and the D3(BJ) dispersion, run over all
pairs without cutoff in either case (row blocks: ``O(block A)`` memory, ``O(A^2)`` time).

**Free space only.** A periodic cell would need an Ewald (or similar) sum for the Coulomb
term and a lattice sum for D3, which phai does not implement: a periodic displacement
function is refused with :class:`phai.errors.InputError`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition

from ..errors import InputError, UnsupportedElementError
from ..models.aimnet2 import (
    VMAP_MEMBERS_UP_TO,
    check_charge_multiplicity,
    diffuse_term_energy,
    local_geometry,
    member_energy,
    member_energy_local,
)
from ..physics.dispersion import d3bj_energy

ALL_PAIRS_MAX_ATOMS = 1000
""":func:`aimnet2_energy` lists every other atom as a neighbor (``A^2`` slots); beyond this,
use :func:`aimnet2_neighbor_list`."""

_PROBES = ((1000.0, 0.0, 0.0), (0.0, 1000.0, 0.0), (0.0, 0.0, 1000.0), (13.37, -21.91, 7.73), (3.1, 2.7, -4.2))


def check_free_space(displacement_fn, model_name: str = "AIMNet2") -> None:
    """Raise :class:`InputError` unless ``displacement_fn(Ra, Rb) == Ra - Rb`` (free space).

    Probed with a few vectors (up to 1000 Å): a periodic space maps some of them to their
    minimum image and is refused (AIMNet2's Coulomb term would need Ewald summation)."""
    for v in _PROBES:
        v = np.asarray(v)
        try:
            d = np.asarray(displacement_fn(jnp.zeros(3, jnp.float32), jnp.asarray(v, jnp.float32)), np.float64)
        except Exception as exc:  # noqa: BLE001 (a space that cannot take plain 3-vectors)
            raise InputError(f"{model_name}: the displacement function could not be probed ({exc}); "
                             f"use jax_md.space.free()") from None
        if d.shape != (3,) or not np.allclose(d, -v, rtol=1e-5, atol=1e-4):
            raise InputError(
                f"{model_name} runs in free space only (displacement from jax_md.space.free()): its Coulomb "
                f"and D3 terms sum over all pairs without cutoff, and a periodic cell would need Ewald "
                f"summation, which phai does not implement")


def _layout(model, numbers, charge, multiplicity):
    """Species indices ``[A]``, the checked total charge and the mean atomic-shift sum (eV)."""
    z = np.asarray(numbers)
    if z.ndim != 1 or z.size == 0:
        raise InputError(f"numbers must be a non-empty 1-D array of atomic numbers, got shape {z.shape}")
    from ..structures import SYMBOLS, atomic_numbers

    z = atomic_numbers(z)
    unknown = sorted(set(z.tolist()) - set(model.elements))
    if unknown:
        raise UnsupportedElementError(
            f"{model.name} does not support {', '.join(SYMBOLS[u] for u in unknown)} "
            f"(supported: {', '.join(model.symbols)})")
    q, _ = check_charge_multiplicity(z, charge, multiplicity)
    species = model._species_of[z].astype(np.int32)
    shift = float(model._shift64[:, species].sum(axis=1).mean())  # float64 on the host, as AIMNet2 does
    return species, q, shift


def aimnet2_energy_from_neighbors(model, numbers, *, charge=0, multiplicity=None, fast: bool = True) -> Callable:
    """``f(R [A, 3], neighbors [A, K]) -> energy (eV)`` for a fixed composition and charge.

    Args:
      model: :class:`phai.models.aimnet2.AIMNet2`.
      numbers: ``[A]`` atomic numbers (or symbols).
      charge: total charge (integer, e), checked against the electron count.
      multiplicity: optional ``2S+1``, only checked (AIMNet2 does not take it).
      fast: the scatter-free contraction with a hand-written reverse pass (needs a symmetric
        list; first derivatives only, what MD and minimisers use); False for Hessians
        (forward-over-reverse).

    ``neighbors`` is a dense list with sentinel ``A`` holding every pair within 5 Å (extra
    entries are harmless). The members run one after the other (``lax.map``) unless the
    model's ``member_batch`` is None and ``A`` is small.
    """
    species, q, shift = _layout(model, numbers, charge, multiplicity)
    table = model.state_charge_terms(np.asarray(model.elements)[species], q)   # None: the model as shipped
    n = len(species)
    species_j = jnp.asarray(species)
    mask = jnp.ones(n, dtype=bool)
    cfg, block = model.cfg, model.block_size
    batch = model.member_batch if model.member_batch is not None else (model.members if n <= VMAP_MEMBERS_UP_TO else 1)

    def energy(R, neighbors):
        if R.shape != (n, 3):
            raise InputError(f"positions must have shape ({n}, 3) for this energy function, got {R.shape}")
        with jax.ensure_compile_time_eval():  # the model caches concrete arrays per dtype, never tracers
            member, shared = model.params(R.dtype)
        terms = None if table is None else jnp.asarray(table, R.dtype)   # a fitted correction (with_charge_terms)

        if not fast:
            def one(p):
                return member_energy(p, shared, R, species_j, neighbors, mask, q, cfg=cfg, include_shifts=False,
                                     block_size=block, fast=False, charge_terms=terms)[0]

            return jnp.mean(jax.lax.map(one, member, batch_size=batch)) + shift
        # what does not depend on the member (pair basis, D3) once, and its VJP once, for the mean
        geometry = local_geometry(R, species_j, neighbors, mask, shared, cfg=cfg)

        def local(p):
            return member_energy_local(p, shared, geometry, R, species_j, neighbors, mask, q, cfg=cfg,
                                       include_shifts=False, block_size=block, charge_terms=terms)[0]

        e_disp = d3bj_energy(R, species_j, mask, shared, shared["d3"], block_size=block)
        e_disp = e_disp + diffuse_term_energy(R, species_j, mask, terms)   # 0 unless a diffuse-term table
        return jnp.mean(jax.lax.map(local, member, batch_size=batch)) + e_disp + shift

    return energy


def all_neighbors(n: int) -> np.ndarray:
    """``[A, A - 1]`` int32: every other atom as a neighbor of each atom (symmetric)."""
    if n == 1:
        return np.full((1, 1), 1, dtype=np.int32)
    idx = np.tile(np.arange(n, dtype=np.int32), (n, 1))
    keep = ~np.eye(n, dtype=bool)
    return idx[keep].reshape(n, n - 1)


def aimnet2_energy(model, displacement_fn, numbers, *, charge=0, multiplicity=None, fast: bool = True) -> Callable:
    """jax-md energy function of AIMNet2 over all pairs (molecules), free space.

    Args:
      model: :class:`phai.models.aimnet2.AIMNet2` (``phai.load("aimnet2-wb97m-d3")``).
      displacement_fn: from ``jax_md.space.free()`` (a periodic one is an :class:`InputError`).
      numbers: ``[A]`` atomic numbers, in the order of ``R``.
      charge: total charge (e), fixed; multiplicity: checked only.
      fast: see :func:`aimnet2_energy_from_neighbors` (False for Hessians).

    Returns:
      ``energy_fn(R, **kwargs) -> eV`` (keywords from jax-md integrators are ignored).
      Up to :data:`ALL_PAIRS_MAX_ATOMS` atoms; use :func:`aimnet2_neighbor_list` beyond.
    """
    check_free_space(displacement_fn, model.name)
    n = len(np.asarray(numbers))
    if n > ALL_PAIRS_MAX_ATOMS:
        raise InputError(f"aimnet2_energy lists all {n} x {n - 1} neighbor slots; above {ALL_PAIRS_MAX_ATOMS} "
                         f"atoms use phai.md.aimnet2_neighbor_list")
    core = aimnet2_energy_from_neighbors(model, numbers, charge=charge, multiplicity=multiplicity, fast=fast)
    nbrs = all_neighbors(n)

    def energy_fn(R, **kwargs):
        return core(R, jnp.asarray(nbrs))

    return energy_fn


def aimnet2_neighbor_list(model, displacement_fn, box, numbers, *, charge=0, multiplicity=None,
                          dr_threshold: float = 0.5, capacity_multiplier: float = 1.25,
                          disable_cell_list: bool = False, fast: bool = True
                          ) -> tuple[partition.NeighborListFns, Callable]:
    """jax-md neighbor-list energy function of AIMNet2 (local terms on a list), free space.

    Args:
      model: :class:`phai.models.aimnet2.AIMNet2`.
      displacement_fn: from ``jax_md.space.free()`` (periodic: :class:`InputError`).
      box: sizes jax-md's cell list (positions in ``[0, box)``); with
        ``disable_cell_list=True`` (an ``A^2`` candidate search) any span of the molecule.
      numbers: ``[A]`` atomic numbers.
      charge: total charge (e), fixed; multiplicity: checked only.
      dr_threshold: skin (Å); capacity_multiplier, disable_cell_list: passed to jax-md.
      fast: see :func:`aimnet2_energy_from_neighbors`.

    Returns:
      ``(neighbor_fn, energy_fn)``: jax-md's ``Dense`` neighbor-list functions (cutoff 5 Å)
      and ``energy_fn(R, neighbor, **kwargs) -> eV``. The energy is NaN when
      ``neighbor.did_buffer_overflow`` (never a silently wrong energy): re-allocate the list
      (:func:`phai.md.run_chunked` works with these lists too). The long-range terms stay
      all-pairs, so the cost grows as ``A^2`` in time (memory ``O(A)``, row blocks).
    """
    check_free_space(displacement_fn, model.name)
    core = aimnet2_energy_from_neighbors(model, numbers, charge=charge, multiplicity=multiplicity, fast=fast)
    neighbor_fn = partition.neighbor_list(displacement_fn, box, float(model.cfg.cutoff), dr_threshold=dr_threshold,
                                          capacity_multiplier=capacity_multiplier,
                                          disable_cell_list=disable_cell_list, format=partition.Dense)

    def energy_fn(R, neighbor, **kwargs):
        e = core(R, neighbor.idx)
        return jnp.where(neighbor.did_buffer_overflow, jnp.nan, e)

    return neighbor_fn, energy_fn


def is_aimnet2(potential) -> bool:
    """True for an AIMNet2 ensemble (:class:`phai.models.aimnet2.AIMNet2`)."""
    from ..models.aimnet2 import AIMNet2

    return isinstance(potential, AIMNet2)


__all__ = ["ALL_PAIRS_MAX_ATOMS", "aimnet2_energy", "aimnet2_energy_from_neighbors", "aimnet2_neighbor_list",
           "all_neighbors", "check_free_space", "is_aimnet2"]
