"""Extended-Hückel orbital energies of many molecules: validated, grouped, padded, batched.

:func:`run_batched` is the host-side engine behind ``phai ehm`` and the ML-EHM model's
``predict``: it validates each structure (elements, electron count), groups molecules by
the size buckets of their atom and orbital counts (:func:`phai.structures.bucket`), pads each
group to a bucketed batch size (repeating its first molecule) and calls one jitted, vmapped
kernel per (batch, atoms, orbitals) shape, so a stream of molecules compiles a handful of
kernels, not one per molecule. Padding is exact (see :mod:`phai.physics.huckel`), and every
result is stripped of it and checked for non-finite entries.

Units: Å in, eV out. Computation in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from ..structures import bucket, validate_structure
from .eigen import check_finite
from .huckel import (
    HOFFMANN,
    WOLFSBERG_HELMHOLZ_K,
    ElementParameters,
    huckel_orbitals_batch,
    huckel_system,
    stack_systems,
)

MAX_BATCH = 64
"""Largest number of molecules per kernel call."""


class Orbitals(NamedTuple):
    """Result for one molecule (NumPy, no padding).

    Attributes:
      energies: ``[O]`` orbital energies, eV, ascending.
      homo_index: 0-based index of the highest occupied orbital.
      hamiltonian, overlap: ``[O, O]`` (eV; dimensionless) in RDKit's orbital order, or None.
    """

    energies: np.ndarray
    homo_index: int
    hamiltonian: np.ndarray | None = None
    overlap: np.ndarray | None = None


Kernel = Callable[..., tuple]
"""``kernel(numbers [B, A] int32, positions [B, A, 3] f64, system) -> (energies [B, O], H, S)``."""


@functools.partial(jax.jit, static_argnames=("weighted",))
def _plain_kernel(numbers, positions, system, K, weighted):
    del numbers
    out = huckel_orbitals_batch(positions, system, K=K, weighted=weighted)
    return out.energies, out.hamiltonian, out.overlap


def plain_kernel(*, K: float = WOLFSBERG_HELMHOLZ_K, weighted: bool = True) -> Kernel:
    """Kernel of fixed-parameter extended Hückel (Hoffmann's alpha and exponents)."""
    return lambda numbers, positions, system: _plain_kernel(numbers, positions, system,
                                                             jnp.asarray(K, jnp.float64), weighted)


def _sym(m: np.ndarray) -> np.ndarray:
    return 0.5 * (m + m.T)


def _batch_size(n: int) -> int:
    b = 1
    while b < min(n, MAX_BATCH):
        b *= 2
    return b


def run_batched(structures: Sequence, *, kernel: Kernel | None = None, matrices: bool = False,
                labels: Sequence[str] | None = None,
                parameters: Mapping[int, ElementParameters] = HOFFMANN) -> list[Orbitals]:
    """Orbital energies of every structure, in input order.

    Args:
      structures: ``(numbers, positions, charge)`` triples (see
        :func:`phai.structures.as_structure_list`); positions in Å.
      kernel: the batched model (default: plain EHM, weighted Wolfsberg-Helmholz, as RDKit).
      matrices: also return ``H`` and ``S``.
      labels: names used in error messages (default ``"structure k"``).
      parameters: element table that decides the basis (Hoffmann's).

    Raises:
      UnsupportedElementError, OddElectronCountError, InputError: naming the structure.
      NonFiniteMatrixError: a matrix or orbital energy is NaN or inf (names the structure).
    """
    kernel = plain_kernel() if kernel is None else kernel
    labels = [f"structure {k}" for k in range(len(structures))] if labels is None else list(labels)
    mols = []
    for k, (z, r, q) in enumerate(structures):
        try:
            z, r = validate_structure(z, r)
            system = huckel_system(z, charge=q, parameters=parameters)
        except InputError as err:
            raise type(err)(f"{labels[k]}: {err}") from None
        mols.append((z, r, system, int(system.n_orbitals)))
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (z, _, _, n_orb) in enumerate(mols):
        groups.setdefault((bucket(len(z)), bucket(n_orb)), []).append(k)
    out: list[Orbitals | None] = [None] * len(mols)
    with jax.enable_x64(True):
        for (a_slots, o_slots), idx in groups.items():
            for start in range(0, len(idx), MAX_BATCH):
                chunk = idx[start:start + MAX_BATCH]
                rows = chunk + [chunk[0]] * (_batch_size(len(chunk)) - len(chunk))
                numbers = np.zeros((len(rows), a_slots), np.int32)
                pos = np.zeros((len(rows), a_slots, 3))
                for b, k in enumerate(rows):
                    z, r, _, _ = mols[k]
                    numbers[b, :len(z)] = z
                    pos[b, :len(z)] = r
                systems = [mols[k][2] for k in rows]
                system = jax.tree.map(jnp.asarray, stack_systems(systems, o_slots))
                w, H, S = kernel(jnp.asarray(numbers), jnp.asarray(pos), system)
                w, H, S = np.asarray(w), np.asarray(H), np.asarray(S)
                all_finite = np.isfinite(w).all() and np.isfinite(H).all() and np.isfinite(S).all()
                for b, k in enumerate(chunk):
                    n = mols[k][3]
                    if not all_finite:  # name the structure and the first bad array
                        try:
                            check_finite(hamiltonian=H[b, :n, :n], overlap=S[b, :n, :n],
                                         orbital_energies=w[b, :n])
                        except InputError as err:
                            raise type(err)(f"{labels[k]}: {err}") from None
                    h, s = (_sym(H[b, :n, :n]), _sym(S[b, :n, :n])) if matrices else (None, None)
                    out[k] = Orbitals(w[b, :n], int(systems[b].n_electrons) // 2 - 1, h, s)
    return out
