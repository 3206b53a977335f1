"""Validation of structures on the host, and padding into size buckets.

Everything here runs in NumPy before any jitted code sees the data: inside ``jit`` a -1
index wraps and an out-of-range gather clamps, so an unsupported element or a NaN must be
caught here, with a message that names it. This module is also the only place where
array sizes are chosen (:func:`bucket`), so the number of compilations stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import InputError, UnsupportedElementError

SYMBOLS: tuple[str, ...] = (
    "X", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
    "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge",
    "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd",
    "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd",
    "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn",
    "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)
"""Chemical symbols indexed by atomic number (index 0 is a placeholder, never an element)."""

_SYMBOL_TO_Z = {s: z for z, s in enumerate(SYMBOLS) if z > 0}

MIN_DISTANCE: float = 0.1
"""Å. Two atoms closer than this are reported as overlapping: no potential in phai is
trained anywhere near such distances, and exactly coincident atoms make gradients undefined."""


def atomic_numbers(numbers) -> np.ndarray:
    """Atomic numbers ``[A] int64`` from atomic numbers or chemical symbols.

    Accepts a sequence of ints (``[6, 1, 1, 1, 1]``) or of symbols (``["C", "H", ...]``).
    A single string such as ``"CH4"`` is refused, because splitting it is ambiguous
    (``"CO"`` vs ``"Co"``).
    """
    if isinstance(numbers, str):
        raise InputError(
            f"atomic numbers were given as one string {numbers!r}; pass a list of symbols "
            f"(['C', 'H', ...]) or of atomic numbers ([6, 1, ...])")
    seq = list(np.asarray(numbers, dtype=object).reshape(-1)) if not isinstance(numbers, np.ndarray) \
        else list(numbers.reshape(-1))
    out = np.empty(len(seq), dtype=np.int64)
    for i, item in enumerate(seq):
        if isinstance(item, (str, np.str_)):
            z = _SYMBOL_TO_Z.get(str(item).strip().capitalize())
            if z is None:
                raise InputError(f"atom {i}: {item!r} is not a chemical symbol")
            out[i] = z
        else:
            try:
                f = float(item)
            except (TypeError, ValueError):
                raise InputError(f"atom {i}: {item!r} is neither an atomic number nor a symbol") from None
            if not f.is_integer() or not 1 <= f < len(SYMBOLS):
                raise InputError(f"atom {i}: {item!r} is not an atomic number (1-{len(SYMBOLS) - 1})")
            out[i] = int(f)
    if isinstance(numbers, np.ndarray) and numbers.ndim != 1:
        raise InputError(f"atomic numbers must be a 1-D sequence, got shape {numbers.shape}")
    return out


def validate_structure(numbers, positions, *, supported: Sequence[int] | None = None,
                       model: str = "this model") -> tuple[np.ndarray, np.ndarray]:
    """Check one structure and return ``(numbers [A] int64, positions [A, 3] float64, Å)``.

    Raises :class:`InputError` for an empty structure, wrong shapes, non-finite coordinates
    or overlapping atoms (closer than :data:`MIN_DISTANCE`), and
    :class:`UnsupportedElementError` for an element outside ``supported`` (atomic numbers).
    """
    z = atomic_numbers(numbers)
    try:
        r = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("positions must be a numeric array of shape (atoms, 3) in Å") from None
    if z.size == 0:
        raise InputError("the structure is empty: it has no atoms")
    if r.ndim != 2 or r.shape[1] != 3:
        raise InputError(f"positions must have shape (atoms, 3) in Å, got shape {r.shape}")
    if r.shape[0] != z.shape[0]:
        raise InputError(
            f"{z.shape[0]} atomic numbers but {r.shape[0]} positions: the two must match")
    bad = ~np.isfinite(r)
    if bad.any():
        atom, axis = np.argwhere(bad)[0]
        raise InputError(
            f"atom {atom} ({SYMBOLS[z[atom]]}) has a non-finite coordinate "
            f"{'xyz'[axis]} = {r[atom, axis]}: positions must be finite numbers in Å")
    if supported is not None:
        unknown = sorted(set(z.tolist()) - {int(s) for s in supported})
        if unknown:
            names = ", ".join(SYMBOLS[u] for u in unknown)
            first = int(np.nonzero(z == unknown[0])[0][0])
            allowed = ", ".join(SYMBOLS[s] for s in supported)
            raise UnsupportedElementError(
                f"{model} does not support element(s) {names} (first at atom {first}); "
                f"it covers only {allowed}")
    check_overlaps(z, r)
    return z, r


def check_overlaps(numbers: np.ndarray, positions: np.ndarray, *,
                   cell: np.ndarray | None = None) -> None:
    """Raise :class:`InputError` if two atoms are closer than :data:`MIN_DISTANCE` Å."""
    from scipy.spatial import cKDTree

    if len(positions) < 2:
        return
    tree = cKDTree(positions)
    pairs = tree.query_pairs(MIN_DISTANCE, output_type="ndarray")
    if len(pairs):
        i, j = sorted(pairs[0].tolist())
        d = float(np.linalg.norm(positions[i] - positions[j]))
        raise InputError(
            f"atoms {i} ({SYMBOLS[numbers[i]]}) and {j} ({SYMBOLS[numbers[j]]}) are {d:.3g} Å apart, "
            f"closer than {MIN_DISTANCE} Å: two atoms on top of each other (duplicated line "
            f"in the input file?)")


_LADDER_BASE = (8, 12)


def bucket(n: int, minimum: int = 8) -> int:
    """The smallest size of the ladder 8, 12, 16, 24, 32, 48, 64, ... that holds ``n``.

    Consecutive sizes differ by at most 1.5x, so padding wastes at most a third, and a
    stream of sizes up to ``n`` visits about ``2 log2(n)`` distinct shapes.
    """
    n = max(int(n), int(minimum), 1)
    size = 8
    while True:
        for mult in (1.0, 1.5):
            cand = int(size * mult)
            if cand >= n:
                return cand
        size *= 2


def as_structure_list(structures: Iterable) -> list:
    """Normalise structures to a list of ``(numbers, positions, charge)``.

    Accepts ``ase.Atoms`` (charge from ``atoms.info["charge"]``, default 0),
    ``(numbers, positions)`` pairs (charge 0) and ``(numbers, positions, charge)`` triples.
    """
    out = []
    for k, s in enumerate(structures):
        if hasattr(s, "get_atomic_numbers") and hasattr(s, "get_positions"):
            out.append((s.get_atomic_numbers(), s.get_positions(), s.info.get("charge", 0)))
        elif isinstance(s, (tuple, list)) and len(s) in (2, 3):
            out.append((s[0], s[1], s[2] if len(s) == 3 else 0))
        else:
            raise InputError(f"structure {k}: expected an ase.Atoms, a (numbers, positions) pair or a "
                             f"(numbers, positions, charge) triple, got {type(s).__name__}")
    return out
