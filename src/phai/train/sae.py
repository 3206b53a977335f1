"""Self-atomic energies (SAE) by linear least squares on element counts.

ANI models predict ``E = sum_i [NN_{Z_i}(G_i) + SAE_{Z_i}]``; the SAE are fitted once per
level of theory (NeuroChem's ``sae_linfit.dat``; ANI-1ccx refitted them to its CCSD(T)
energies) so that the networks learn only the remaining, much smaller part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..structures import SYMBOLS


def element_counts(numbers_list: Sequence[np.ndarray], species: Sequence[str]) -> np.ndarray:
    """``[C, S]`` float64 count of each species (symbols in model order) per conformation.

    Raises :class:`InputError` naming a conformation with an element outside ``species``."""
    z = [SYMBOLS.index(s) for s in species]
    out = np.zeros((len(numbers_list), len(species)))
    for c, numbers in enumerate(numbers_list):
        numbers = np.asarray(numbers)
        bad = np.setdiff1d(numbers, z)
        if bad.size:
            raise InputError(f"conformation {c} holds {', '.join(SYMBOLS[b] for b in bad)}, outside the "
                             f"model's elements {' '.join(species)}")
        out[c] = [np.count_nonzero(numbers == zz) for zz in z]
    return out


def fit_self_energies(numbers_list: Sequence[np.ndarray], energies, species: Sequence[str]) -> np.ndarray:
    """SAE ``[S]`` (unit of ``energies``) minimising ``sum_c (E_c - counts_c . SAE)^2``.

    Solved with an SVD (``numpy.linalg.lstsq``): elements that never occur get 0, and
    compositions that do not determine every SAE (all molecules with the same C:H ratio,
    say) give the minimum-norm solution, which still fits the data equally well.
    """
    counts = element_counts(numbers_list, species)
    e = np.asarray(energies, np.float64).reshape(-1)
    if e.shape[0] != counts.shape[0]:
        raise InputError(f"{counts.shape[0]} conformations but {e.shape[0]} energies")
    present = counts.sum(axis=0) > 0
    sae = np.zeros(len(species))
    if present.any():
        sae[present] = np.linalg.lstsq(counts[:, present], e, rcond=None)[0]
    return sae
