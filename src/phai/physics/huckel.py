r"""Extended Hückel theory (EHT) with Hoffmann's parameters, as YAeHMOP and RDKit compute it.

**Model.** A minimal valence basis of Slater-type orbitals (:mod:`phai.physics.sto`): H 1s;
B, C, N, O, F 2s 2p; P, S, Cl 3s 3p. The Hamiltonian is

* ``H_uu = alpha_u`` (the Coulomb integral, eV; Hoffmann's ``H_ii``),
* unweighted Wolfsberg-Helmholz (the ML-EHM review's eq 5):
  ``H_uv = K/2 (alpha_u + alpha_v) S_uv``,
* weighted Wolfsberg-Helmholz (Ammeter, Bürgi, Thibeault and Hoffmann, *JACS* 100, 3686
  (1978); YAeHMOP's and RDKit's default, ``weighted_Hij = 1``):
  ``H_uv = 1/2 [K + D^2 + D^4 (1 - K)] (alpha_u + alpha_v) S_uv`` with
  ``D = (alpha_u - alpha_v)/(alpha_u + alpha_v)``,

with ``K = 1.75``, and orbital energies solve ``H C = S C diag(E)``
(:func:`phai.physics.eigen.generalized_eigh`). Electrons fill the lowest orbitals in pairs:
``homo_index = n_electrons/2 - 1`` with ``n_electrons = sum(valence electrons) - charge``.

**Parity with RDKit** (``rdkit.Chem.rdEHTTools.RunMol``, YAeHMOP 3.x): same parameters (the
table below, read from YAeHMOP's ``eht_parms`` and confirmed against RDKit's matrices: e.g. C
uses one exponent 1.625 for 2s and 2p), same orbital order (atoms in input order; per atom s,
then p_x, p_y, p_z), same Å-to-bohr constant (:data:`~phai.physics.sto.YAEHMOP_ANGSTROM_TO_BOHR`).
In float64 phai's ``S`` is exact to ~1e-15 while RDKit's carries errors of ~1e-8 (YAeHMOP's
``abfns`` truncates its B-function series at a relative term of 1e-7 when the two exponents
differ), so ``S`` agrees to ~1e-8, ``H`` to ~4e-7 eV and orbital energies to ~1e-6 eV (the
~1e-8 overlap error amplified by the conditioning of ``S``). YAeHMOP drops overlaps
between atoms more than 10 Å apart; phai keeps them (they are below 1e-7) unless
``cutoff=10.0`` is passed. Only closed-shell molecules are handled (an even electron count).

**Padding convention** (for ``vmap`` over molecules of different sizes). A
:class:`HuckelSystem` has ``O`` orbital slots; slots with ``basis.mask`` False are padding and
always sit after the real orbitals. Padded orbitals get ``S`` = identity rows/columns, ``H``
zero off the diagonal and ``H_uu = pad_energy`` (default :data:`PAD_ENERGY` = 1000 eV, far
above any valence level). ``H`` and ``S`` are then exactly block diagonal, so the real
orbital energies are unchanged and come first in the ascending spectrum: ``energies[:n]``
with ``n = n_orbitals`` are the molecule's, ``energies[n:]`` equal ``pad_energy``. Padded
atoms (no orbitals) may hold any finite position.

Units: Å and eV at every boundary; exponents in bohr^-1. Shapes: ``A`` atoms, ``O`` orbitals,
``B`` molecules.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, UnsupportedElementError
from ..structures import SYMBOLS, atomic_numbers, bucket, validate_structure
from .eigen import check_finite, generalized_eigh
from .sto import MAX_N, STOBasis, overlap_matrix

WOLFSBERG_HELMHOLZ_K: float = 1.75
"""Hoffmann's Wolfsberg-Helmholz constant (YAeHMOP ``THE_CONST``)."""

PAD_ENERGY: float = 1000.0
"""eV, diagonal of ``H`` on padded orbital slots."""


class OddElectronCountError(InputError):
    """The electron count is odd (or impossible) for a closed-shell method."""


@dataclasses.dataclass(frozen=True)
class ElementParameters:
    """Extended-Hückel parameters of one element (one s and at most one p shell).

    Attributes:
      symbol: chemical symbol.
      valence_electrons: electrons the neutral atom contributes.
      n: principal quantum number of the valence shell.
      alpha_s, alpha_p: Coulomb integrals ``H_ii`` (eV); ``alpha_p`` None if no p shell.
      zeta_s, zeta_p: Slater exponents (bohr^-1); ``zeta_p`` None if no p shell.
    """

    symbol: str
    valence_electrons: int
    n: int
    alpha_s: float
    zeta_s: float
    alpha_p: float | None = None
    zeta_p: float | None = None

    def __post_init__(self):
        if not 1 <= self.n <= MAX_N:
            raise InputError(f"{self.symbol}: principal quantum number {self.n} outside 1..{MAX_N}, "
                             f"the range of phai's STO overlaps")
        if (self.alpha_p is None) != (self.zeta_p is None) or (self.alpha_p is not None and self.n < 2):
            raise InputError(f"{self.symbol}: a p shell needs both alpha_p and zeta_p and n >= 2")
        if not (self.zeta_s > 0 and (self.zeta_p is None or self.zeta_p > 0)):
            raise InputError(f"{self.symbol}: Slater exponents must be > 0")

    @property
    def n_orbitals(self) -> int:
        return 1 if self.alpha_p is None else 4


def _table(*rows: ElementParameters) -> Mapping[int, ElementParameters]:
    return types.MappingProxyType({SYMBOLS.index(r.symbol): r for r in rows})


HOFFMANN: Mapping[int, ElementParameters] = _table(
    ElementParameters("H", 1, 1, -13.6, 1.3),
    ElementParameters("B", 3, 2, -15.2, 1.3, -8.5, 1.3),
    ElementParameters("C", 4, 2, -21.4, 1.625, -11.4, 1.625),
    ElementParameters("N", 5, 2, -26.0, 1.95, -13.4, 1.95),
    ElementParameters("O", 6, 2, -32.3, 2.275, -14.8, 2.275),
    ElementParameters("F", 7, 2, -40.0, 2.425, -18.1, 2.425),
    ElementParameters("P", 5, 3, -18.6, 1.75, -14.0, 1.3),
    ElementParameters("S", 6, 3, -20.0, 2.122, -11.0, 1.827),
    ElementParameters("Cl", 7, 3, -26.3, 2.183, -14.2, 1.733),
)
"""Hoffmann/YAeHMOP default parameters by atomic number (read-only), as RDKit uses them."""


class HuckelSystem(NamedTuple):
    """Basis and default parameters of one molecule (a batch stacks a leading ``B`` axis).

    Attributes:
      basis: :class:`~phai.physics.sto.STOBasis`, ``[O]`` fields.
      alpha: ``[O]`` Coulomb integrals, eV (0 on padding).
      zeta: ``[O]`` Slater exponents, bohr^-1 (1 on padding).
      n_electrons: ``[]`` int32, even.
      n_orbitals: ``[]`` int32, number of real (unpadded) orbitals.
    """

    basis: STOBasis
    alpha: jax.Array
    zeta: jax.Array
    n_electrons: jax.Array
    n_orbitals: jax.Array


class HuckelResult(NamedTuple):
    """Output of :func:`huckel_orbitals` (a batch has a leading ``B`` axis everywhere).

    Attributes:
      energies: ``[O]`` orbital energies, eV, ascending; padded slots at ``pad_energy`` last.
      coefficients: ``[O, O]`` MO coefficients in the columns, ``C^T S C = 1``.
      homo_index: ``[]`` int32 index of the highest occupied orbital.
      hamiltonian: ``[O, O]`` eV.
      overlap: ``[O, O]``.
    """

    energies: jax.Array
    coefficients: jax.Array
    homo_index: jax.Array
    hamiltonian: jax.Array
    overlap: jax.Array


def _check_elements(z: np.ndarray, parameters: Mapping[int, ElementParameters]) -> None:
    unknown = [int(u) for u in np.unique(z) if int(u) not in parameters]
    if unknown:
        names = ", ".join(SYMBOLS[u] for u in unknown)
        first = int(np.nonzero(z == unknown[0])[0][0])
        allowed = ", ".join(SYMBOLS[k] for k in sorted(parameters))
        raise UnsupportedElementError(
            f"extended Hückel has no parameters for element(s) {names} (first at atom {first}); "
            f"parameters exist for {allowed}")


@functools.lru_cache(maxsize=32)
def _orbital_table(items: tuple) -> tuple[np.ndarray, ...]:
    """Per-element orbital rows of a parameter table, as lookup arrays indexed by ``Z``.

    Returns ``(count [Zmax+1], n, l, axis [Zmax+1, 4] int32, alpha, zeta [Zmax+1, 4] float64,
    valence [Zmax+1])``: element ``Z`` owns rows ``0..count[Z]-1`` (s, then p_x, p_y, p_z).
    """
    zmax = max(z for z, _ in items)
    count = np.zeros(zmax + 1, np.int64)
    valence = np.zeros(zmax + 1, np.int64)
    n, l, axis = (np.zeros((zmax + 1, 4), np.int32) for _ in range(3))
    alpha, zeta = np.zeros((zmax + 1, 4)), np.ones((zmax + 1, 4))
    for z, p in items:
        count[z], valence[z] = p.n_orbitals, p.valence_electrons
        n[z] = p.n
        alpha[z, 0], zeta[z, 0] = p.alpha_s, p.zeta_s
        if p.alpha_p is not None:
            l[z, 1:], axis[z, 1:] = 1, (0, 1, 2)
            alpha[z, 1:], zeta[z, 1:] = p.alpha_p, p.zeta_p
    return count, n, l, axis, alpha, zeta, valence


def _as_numbers(numbers) -> np.ndarray:
    """``atomic_numbers``, with a fast path for a 1-D integer array already in range."""
    if (isinstance(numbers, np.ndarray) and numbers.ndim == 1 and numbers.dtype.kind in "iu"
            and numbers.size and 1 <= numbers.min() and numbers.max() < len(SYMBOLS)):
        return numbers.astype(np.int64, copy=False)
    return atomic_numbers(numbers)


def huckel_system(numbers, *, charge: int = 0, n_orbitals: int | None = None,
                  parameters: Mapping[int, ElementParameters] = HOFFMANN) -> HuckelSystem:
    """Build the basis and default parameters of one molecule, on the host (NumPy).

    Args:
      numbers: ``[A]`` atomic numbers or symbols.
      charge: total charge (e); electrons = sum of valence electrons - charge.
      n_orbitals: orbital slots to pad to (``None``: exactly the molecule's count).
      parameters: element table, :data:`HOFFMANN` by default.

    Raises:
      UnsupportedElementError: an element without parameters.
      OddElectronCountError: odd, negative or too many electrons for a closed shell.
      InputError: ``n_orbitals`` smaller than the molecule needs.
    """
    z = _as_numbers(numbers)
    if z.size == 0:
        raise InputError("the structure is empty: it has no atoms")
    _check_elements(z, parameters)
    count, n, l, axis, alpha, zeta, valence = _orbital_table(tuple(sorted(parameters.items())))
    keep = np.arange(4)[None, :] < count[z][:, None]  # [A, 4] real orbital rows, atom by atom
    n_real = int(keep.sum())
    size = n_real if n_orbitals is None else int(n_orbitals)
    if size < n_real:
        raise InputError(f"the molecule has {n_real} orbitals but n_orbitals={size}: "
                         f"raise n_orbitals to at least {n_real}")
    if charge != int(charge):
        raise InputError(f"charge must be an integer, got {charge}")
    n_el = int(valence[z].sum()) - int(charge)
    if n_el % 2 or n_el <= 0 or n_el > 2 * n_real:
        raise OddElectronCountError(
            f"{n_el} valence electrons (charge {int(charge)}) cannot fill {n_real} orbitals "
            f"in pairs: closed-shell extended Hückel needs an even count between 2 and "
            f"{2 * n_real}; check the charge")

    def rows(table, pad_value):
        out = np.full(size, pad_value, table.dtype)
        out[:n_real] = table[z][keep]
        return out

    atom = np.zeros(size, np.int32)
    atom[:n_real] = np.broadcast_to(np.arange(len(z), dtype=np.int32)[:, None], keep.shape)[keep]
    basis = STOBasis(atom=atom, n=rows(n, 1), l=rows(l, 0), axis=rows(axis, 0),
                     mask=np.arange(size) < n_real)
    return HuckelSystem(basis, rows(alpha, 0.0), rows(zeta, 1.0), np.int32(n_el), np.int32(n_real))


def stack_systems(systems: Sequence[HuckelSystem], n_orbitals: int) -> HuckelSystem:
    """Pad unbatched :class:`HuckelSystem` s (NumPy) to ``n_orbitals`` slots and stack them.

    Equal to stacking ``huckel_system(numbers_b, ..., n_orbitals=n_orbitals)`` over the
    molecules, without rebuilding any of them. Returns NumPy fields with a leading ``B`` axis.
    """
    size, count = int(n_orbitals), len(systems)
    atom, l, axis = (np.zeros((count, size), np.int32) for _ in range(3))
    n = np.ones((count, size), np.int32)
    mask = np.zeros((count, size), bool)
    alpha, zeta = np.zeros((count, size)), np.ones((count, size))
    for b, system in enumerate(systems):
        k = len(system.alpha)
        if k > size:
            raise InputError(f"molecule {b} has {k} orbital slots, more than n_orbitals={size}")
        sb = system.basis
        atom[b, :k], n[b, :k], l[b, :k], axis[b, :k], mask[b, :k] = sb.atom, sb.n, sb.l, sb.axis, sb.mask
        alpha[b, :k], zeta[b, :k] = system.alpha, system.zeta
    return HuckelSystem(STOBasis(atom, n, l, axis, mask), alpha, zeta,
                        np.asarray([s.n_electrons for s in systems], np.int32),
                        np.asarray([s.n_orbitals for s in systems], np.int32))


def huckel_batch(numbers_list: Sequence, positions_list: Sequence, *,
                 charges: Sequence[int] | None = None, n_atoms: int | None = None,
                 n_orbitals: int | None = None,
                 parameters: Mapping[int, ElementParameters] = HOFFMANN):
    """Validate and pad several molecules into one batch, on the host (NumPy).

    Args:
      numbers_list: ``B`` sequences of atomic numbers or symbols.
      positions_list: ``B`` arrays ``[A_b, 3]`` Å.
      charges: ``B`` total charges (default all 0).
      n_atoms, n_orbitals: slots to pad to (default the largest molecule's counts).

    Returns:
      ``(positions [B, A, 3] float64 Å, system)`` with a :class:`HuckelSystem` whose fields
      have a leading ``B`` axis; padded atoms sit at the origin and own no orbitals.
    """
    if len(numbers_list) != len(positions_list):
        raise InputError(f"{len(numbers_list)} atom lists but {len(positions_list)} position arrays")
    if len(numbers_list) == 0:
        raise InputError("the batch is empty")
    charges = [0] * len(numbers_list) if charges is None else list(charges)
    if len(charges) != len(numbers_list):
        raise InputError(f"{len(charges)} charges for {len(numbers_list)} molecules")
    mols = []
    for b, (z, r) in enumerate(zip(numbers_list, positions_list)):
        try:
            z, r = validate_structure(z, r)
            huckel_system(z, charge=charges[b], parameters=parameters)  # checks, raises early
        except InputError as err:
            raise type(err)(f"molecule {b}: {err}") from None
        mols.append((z, r))
    a_max = max(len(z) for z, _ in mols) if n_atoms is None else int(n_atoms)
    o_need = [sum(parameters[int(x)].n_orbitals for x in z) for z, _ in mols]
    o_max = max(o_need) if n_orbitals is None else int(n_orbitals)
    if a_max < max(len(z) for z, _ in mols):
        raise InputError(f"n_atoms={a_max} is smaller than the largest molecule")
    pos = np.zeros((len(mols), a_max, 3))
    systems = []
    for b, (z, r) in enumerate(mols):
        pos[b, :len(z)] = r
        systems.append(huckel_system(z, charge=charges[b], n_orbitals=o_max, parameters=parameters))
    return pos, jax.tree.map(lambda *xs: np.stack(xs), *systems)


def wolfsberg_helmholz(alpha, S, K=WOLFSBERG_HELMHOLZ_K, *, weighted: bool = True):
    """Extended-Hückel Hamiltonian from Coulomb integrals and overlaps.

    Args:
      alpha: ``[O]`` Coulomb integrals ``H_uu``, eV.
      S: ``[O, O]`` overlap matrix.
      K: Wolfsberg-Helmholz constant, a scalar or a symmetric ``[O, O]`` per orbital pair.
      weighted: the weighted formula (YAeHMOP/RDKit default) or the plain one (ML-EHM eq 5).

    Returns:
      ``H [O, O]``, eV: ``alpha`` on the diagonal; off the diagonal
      ``K/2 (a_u + a_v) S_uv`` (plain) or ``1/2 [K + D^2 + D^4 (1-K)] (a_u + a_v) S_uv``,
      ``D = (a_u - a_v)/(a_u + a_v)`` (weighted). The weighted form is singular where
      ``a_u + a_v = 0``; such pairs (only padding in practice) get ``D = 0``.
    """
    alpha = jnp.asarray(alpha)
    total = alpha[:, None] + alpha[None, :]
    if weighted:
        ok = total != 0
        safe = jnp.where(ok, total, jnp.ones_like(total))
        d2 = jnp.where(ok, ((alpha[:, None] - alpha[None, :]) / safe) ** 2, jnp.zeros_like(total))
        factor = 0.5 * (K + d2 + d2 * d2 * (1.0 - K))
    else:
        factor = 0.5 * K * jnp.ones_like(total)
    off = factor * total * S
    eye = jnp.eye(alpha.shape[0], dtype=bool)
    return jnp.where(eye, jnp.diag(alpha), off)


def huckel_matrices(positions, system: HuckelSystem, *, K=WOLFSBERG_HELMHOLZ_K,
                    weighted: bool = True, alpha=None, zeta=None,
                    pad_energy: float = PAD_ENERGY, cutoff: float | None = None):
    """Hamiltonian and overlap matrix of one molecule (pure; ``jit``/``vmap``/``grad``).

    Args:
      positions: ``[A, 3]`` Å.
      system: :class:`HuckelSystem` with ``[O]`` fields.
      K: Wolfsberg-Helmholz constant: a scalar or a symmetric ``[A, A]`` per atom pair.
      weighted: weighted (default, RDKit) or plain Wolfsberg-Helmholz formula.
      alpha: ``[O]`` Coulomb integrals (eV) replacing ``system.alpha`` (e.g. predicted).
      zeta: ``[O]`` Slater exponents (bohr^-1) replacing ``system.zeta``.
      pad_energy: ``H_uu`` of padded orbital slots, eV.
      cutoff: optional Å overlap cutoff (see :func:`~phai.physics.sto.overlap_matrix`).

    Returns:
      ``(H [O, O] eV, S [O, O])`` with the padding convention of the module docstring.
    """
    basis = system.basis
    alpha = system.alpha if alpha is None else alpha
    zeta = system.zeta if zeta is None else zeta
    dtype = jnp.result_type(positions, alpha, zeta, K)
    alpha = jnp.asarray(alpha, dtype)
    S = overlap_matrix(jnp.asarray(positions, dtype), basis, jnp.asarray(zeta, dtype), cutoff=cutoff)
    K = jnp.asarray(K, dtype)
    if K.ndim == 2:
        K = K[basis.atom[:, None], basis.atom[None, :]]
    elif K.ndim != 0:
        raise InputError(f"K must be a scalar or an [A, A] per-atom-pair matrix, got shape {K.shape}")
    mask = jnp.asarray(basis.mask)
    a = jnp.where(mask, alpha, jnp.zeros_like(alpha))
    H = wolfsberg_helmholz(a, S, K, weighted=weighted)
    both = mask[:, None] & mask[None, :]
    pad_diag = jnp.diag(jnp.where(mask, jnp.zeros_like(a), jnp.full_like(a, pad_energy)))
    H = jnp.where(both, H, pad_diag)
    return H, S


def huckel_orbitals(positions, system: HuckelSystem, *, K=WOLFSBERG_HELMHOLZ_K,
                    weighted: bool = True, alpha=None, zeta=None,
                    pad_energy: float = PAD_ENERGY, cutoff: float | None = None,
                    broadening: float | None = None) -> HuckelResult:
    """Orbital energies of one molecule by extended Hückel (pure; ``jit``/``vmap``/``grad``).

    Arguments as :func:`huckel_matrices`, plus ``broadening`` for the eigensolver's
    derivative (:func:`~phai.physics.eigen.generalized_eigh`). Differentiable with respect to
    ``positions``, ``alpha``, ``zeta`` and ``K``; gradients of the energies stay finite and
    correct at degenerate levels when the loss is symmetric within each degenerate set.

    Returns:
      :class:`HuckelResult`: energies ``[O]`` eV ascending (real orbitals first, padding at
      ``pad_energy`` after them), coefficients, ``homo_index``, ``H`` and ``S``.
    """
    H, S = huckel_matrices(positions, system, K=K, weighted=weighted, alpha=alpha, zeta=zeta,
                           pad_energy=pad_energy, cutoff=cutoff)
    w, C = generalized_eigh(H, S, broadening=broadening)
    homo = jnp.asarray(system.n_electrons, jnp.int32) // 2 - 1
    return HuckelResult(w, C, homo, H, S)


def huckel_orbitals_batch(positions, system: HuckelSystem, *, K=WOLFSBERG_HELMHOLZ_K,
                          weighted: bool = True, alpha=None, zeta=None,
                          pad_energy: float = PAD_ENERGY, cutoff: float | None = None,
                          broadening: float | None = None) -> HuckelResult:
    """:func:`huckel_orbitals` over a padded batch (``vmap``); every array has a leading ``B``.

    Args:
      positions: ``[B, A, 3]`` Å; system: batched :class:`HuckelSystem` (:func:`huckel_batch`).
      K: scalar, ``[B]``, or ``[B, A, A]``; alpha, zeta: ``None`` or ``[B, O]``.
    """
    K = jnp.asarray(K)
    k_axis = None if K.ndim == 0 else 0

    def one(r, s, k, a, z):
        return huckel_orbitals(r, s, K=k, weighted=weighted, alpha=a, zeta=z,
                               pad_energy=pad_energy, cutoff=cutoff, broadening=broadening)

    a_axis = None if alpha is None else 0
    z_axis = None if zeta is None else 0
    return jax.vmap(one, (0, 0, k_axis, a_axis, z_axis))(positions, system, K, alpha, zeta)


@functools.partial(jax.jit, static_argnames=("weighted", "cutoff"))
def _huckel_jit(positions, system, K, weighted, cutoff):
    return huckel_orbitals(positions, system, K=K, weighted=weighted, cutoff=cutoff)


def extended_huckel(numbers, positions, *, charge: int = 0, K: float = WOLFSBERG_HELMHOLZ_K,
                    weighted: bool = True, parameters: Mapping[int, ElementParameters] = HOFFMANN,
                    cutoff: float | None = None) -> HuckelResult:
    """Validated extended-Hückel calculation of one molecule, on the host (NumPy results).

    The convenient entry point: checks the structure (shapes, finite coordinates, no
    coincident atoms), the elements and the electron count, computes in float64 whatever
    the global precision, and checks that ``H``, ``S`` and the eigen-decomposition are finite.
    Atoms and orbitals are padded to size buckets (:func:`phai.structures.bucket`) and one
    jitted kernel is compiled per bucket pair, not per molecule size; padding is exact (see
    the module docstring) and stripped from the result.

    Args:
      numbers: ``[A]`` atomic numbers or symbols; positions: ``[A, 3]`` Å.
      charge: total charge (e). K, weighted, parameters, cutoff: as :func:`huckel_matrices`.

    Returns:
      :class:`HuckelResult` of NumPy arrays (no padding): energies ``[O]`` eV ascending,
      coefficients ``[O, O]``, ``homo_index``, hamiltonian and overlap ``[O, O]`` in RDKit's
      orbital order.

    Raises:
      UnsupportedElementError, OddElectronCountError, InputError,
      NonFiniteMatrixError (:mod:`phai.physics.eigen`).
    """
    z, r = validate_structure(numbers, positions)
    n_orb = int(huckel_system(z, charge=charge, parameters=parameters).n_orbitals)
    system = huckel_system(z, charge=charge, n_orbitals=bucket(n_orb), parameters=parameters)
    pos = np.zeros((bucket(len(z)), 3))
    pos[:len(z)] = r
    with jax.enable_x64(True):
        out = _huckel_jit(jnp.asarray(pos, jnp.float64), jax.tree.map(jnp.asarray, system),
                          jnp.asarray(K, jnp.float64), weighted, cutoff)
        out = HuckelResult(np.asarray(out.energies[:n_orb]),
                           np.asarray(out.coefficients[:n_orb, :n_orb]),
                           np.asarray(out.homo_index),
                           np.asarray(out.hamiltonian[:n_orb, :n_orb]),
                           np.asarray(out.overlap[:n_orb, :n_orb]))
    check_finite(hamiltonian=out.hamiltonian, overlap=out.overlap)
    check_finite(orbital_energies=out.energies, coefficients=out.coefficients)
    return out
