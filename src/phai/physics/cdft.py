r"""Conceptual-DFT reactivity indices from the energies of three charge states (vertical).

For a structure with ``N`` electrons at total charge ``Q`` and the same geometry with one
electron removed (charge ``Q + 1``, ``N - 1`` electrons) and added (charge ``Q - 1``,
``N + 1`` electrons), finite differences of the energy give (Parr and Yang's definitions,
in the conventions of the AIMNet-NSE authors' evaluation code, isayevlab/aimnetnse
``eval.py``):

.. math::

   \mathrm{IP} = E(N-1) - E(N), \qquad \mathrm{EA} = E(N) - E(N+1) \\
   \chi = \frac{\mathrm{IP} + \mathrm{EA}}{2}, \qquad
   \eta = \frac{\mathrm{IP} - \mathrm{EA}}{2}, \qquad
   \omega = \frac{\chi^2}{2 \eta}

``chi`` is the Mulliken electronegativity (minus the chemical potential), ``eta`` the chemical
hardness *with* the factor 1/2 (some texts define ``eta = IP - EA``; then ``omega`` would be
``chi^2 / eta``, the same number), ``omega`` Parr's electrophilicity. All in eV. The indices are
vertical: the three energies are taken at one geometry.

Condensed Fukui functions, from atomic charges ``q`` of the three states, as that code
computes them: ``f_el = q(Q+1) - q(Q)`` (electrophilic attack, the atoms that lose the
electron) and ``f_nuc = q(Q-1) - q(Q)`` (nucleophilic attack; note the sign: it is the
negative of the population-based ``f+``), ``f_rad = (f_el + f_nuc) / 2``.

:func:`cdft_indices` is pure (floats or arrays, NumPy or JAX); :func:`cdft` evaluates a
charge-aware model (``model.charge_aware``, e.g. :class:`phai.models.aimnet2.AIMNet2`) at the
three charges.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InputError


def ionization_potential(e_removed, e_reference):
    """``IP = E(N-1) - E(N)`` (eV): energy of the structure with one electron fewer
    (charge ``Q + 1``) minus that of the reference (charge ``Q``)."""
    return e_removed - e_reference


def electron_affinity(e_reference, e_added):
    """``EA = E(N) - E(N+1)`` (eV): reference energy minus the energy with one electron more
    (charge ``Q - 1``). Positive when the anion is bound."""
    return e_reference - e_added


def electronegativity(ip, ea):
    """Mulliken electronegativity ``chi = (IP + EA) / 2`` (eV)."""
    return 0.5 * (ip + ea)


def hardness(ip, ea):
    """Chemical hardness ``eta = (IP - EA) / 2`` (eV), with the factor 1/2."""
    return 0.5 * (ip - ea)


def electrophilicity(chi, eta):
    """Parr's electrophilicity ``omega = chi^2 / (2 eta)`` (eV); infinite or negative when
    ``eta <= 0`` (a structure whose EA exceeds its IP, which real molecules do not have)."""
    return chi * chi / (2.0 * eta)


class CDFTIndices(NamedTuple):
    """Vertical conceptual-DFT indices (eV each)."""

    ip: float
    ea: float
    chi: float
    eta: float
    omega: float


def cdft_indices(e_removed, e_reference, e_added) -> CDFTIndices:
    """IP, EA, chi, eta and omega from ``E(N-1)``, ``E(N)``, ``E(N+1)`` (eV, one geometry).

    Args:
      e_removed: energy at charge ``Q + 1`` (one electron removed).
      e_reference: energy at charge ``Q``.
      e_added: energy at charge ``Q - 1`` (one electron added).
    """
    ip = ionization_potential(e_removed, e_reference)
    ea = electron_affinity(e_reference, e_added)
    chi, eta = electronegativity(ip, ea), hardness(ip, ea)
    return CDFTIndices(ip, ea, chi, eta, electrophilicity(chi, eta))


def lowest_multiplicity(numbers, charge: int) -> int:
    """``2S + 1`` of the lowest spin state of ``sum(Z) - charge`` electrons: 1 if even, else 2."""
    return 1 + (int(np.sum(np.asarray(numbers, dtype=np.int64))) - int(charge)) % 2


class CDFTResult(NamedTuple):
    """Conceptual-DFT indices of one structure, and what they were computed from.

    Attributes:
      ip, ea, chi, eta, omega: eV (see the module docstring).
      charges_of_states: total charges ``(Q + 1, Q, Q - 1)``, i.e. ``N - 1``, ``N``, ``N + 1``
        electrons.
      multiplicities: ``2S + 1`` used for each state (same order).
      energies: ``[3]`` eV, same order.
      atomic_charges: ``[3, A]`` e, same order, or None for a model without atomic charges.
      std: the spread of each index over an ensemble's members (:class:`CDFTIndices`, eV; standard
        deviation, ddof 1, of the indices of each member's three energies), or None for a single
        model.
    """

    ip: float
    ea: float
    chi: float
    eta: float
    omega: float
    charges_of_states: tuple[int, int, int]
    multiplicities: tuple[int, int, int]
    energies: np.ndarray
    atomic_charges: np.ndarray | None
    std: CDFTIndices | None = None

    @property
    def fukui(self) -> dict[str, np.ndarray] | None:
        """Condensed Fukui functions ``{"electrophilic", "nucleophilic", "radical"}`` (``[A]`` e each,
        signs as the AIMNet-NSE code), or None without atomic charges."""
        if self.atomic_charges is None:
            return None
        q = self.atomic_charges
        f_el, f_nuc = q[0] - q[1], q[2] - q[1]
        return {"electrophilic": f_el, "nucleophilic": f_nuc, "radical": 0.5 * (f_el + f_nuc)}


def cdft(model, numbers, positions=None, charge=None, multiplicities=None, **model_kwargs) -> CDFTResult:
    """Vertical conceptual-DFT indices of one structure from a charge-aware model.

    Args:
      model: a model with ``charge_aware = True`` called as
        ``model(numbers, positions, charge=, multiplicity=)`` (e.g. :func:`phai.load`
        ``("aimnet2-wb97m-d3")``).
      numbers: ``[A]`` atomic numbers, or an ``ase.Atoms`` (then ``positions`` is None).
      positions: ``[A, 3]`` Å.
      charge: total charge ``Q`` of the reference state (None: ``atoms.info["charge"]`` or 0).
      multiplicities: ``(M(Q+1), M(Q), M(Q-1))``; None (or None entries) take the lowest that fits
        each electron count (:func:`lowest_multiplicity`: singlet for an even count, doublet for
        an odd one). Each is checked against its electron count. The 2023 AIMNet2 models have no
        spin input, so for them the choice changes nothing but the check.
      model_kwargs: passed to every model call (e.g. ``capacity=`` for AIMNet2).

    Returns:
      :class:`CDFTResult`.

    Raises:
      InputError: a charge-blind model, or a charge/multiplicity that does not fit a state
        (e.g. ``Q + 1`` leaves no electron to remove).
    """
    if not getattr(model, "charge_aware", False):
        raise InputError(f"{getattr(model, 'name', type(model).__name__)} is charge-blind: conceptual-DFT "
                         f"indices need energies at charges Q+1, Q and Q-1; use a charge-aware model such "
                         f"as aimnet2-wb97m-d3")
    if positions is None:
        if not hasattr(numbers, "get_positions"):
            raise InputError("positions are missing: pass (numbers, positions in Å) or an ase.Atoms")
        charge = numbers.info.get("charge", 0) if charge is None else charge
        numbers, positions = numbers.get_atomic_numbers(), numbers.get_positions()
    charge = 0 if charge is None else charge
    try:
        qf = float(charge)
    except (TypeError, ValueError):
        raise InputError(f"total charge {charge!r} is not a number") from None
    if not np.isfinite(qf) or not qf.is_integer():
        raise InputError(f"total charge {charge!r} is not an integer")
    q = int(qf)
    states = (q + 1, q, q - 1)
    given = (None, None, None) if multiplicities is None else tuple(multiplicities)
    if len(given) != 3:
        raise InputError(f"give three multiplicities (for charges {states}), got {len(given)}")
    mults = tuple(lowest_multiplicity(numbers, s) if m is None else m for s, m in zip(states, given))
    results = []
    for s, m, what in zip(states, mults, ("N-1 electrons (one removed)", "N electrons", "N+1 electrons (one added)")):
        try:
            results.append(model(numbers, positions, charge=s, multiplicity=m, **model_kwargs))
        except InputError as exc:
            raise type(exc)(f"state with {what}, charge {s:+d}: {exc}") from None
    energies = np.array([r.energy for r in results], dtype=np.float64)
    atomic = [getattr(r, "charges", None) for r in results]
    atomic = None if any(a is None for a in atomic) else np.stack([np.asarray(a) for a in atomic])
    idx = cdft_indices(*energies)
    return CDFTResult(*(float(x) for x in idx), charges_of_states=states, multiplicities=tuple(int(m) for m in mults),
                      energies=energies, atomic_charges=atomic, std=member_spread(results))


def member_spread(results) -> CDFTIndices | None:
    """Standard deviation (ddof 1) over ensemble members of each index, from the three states'
    ``member_energies`` (``[M]`` eV each; member ``k`` of every state is one model); None when
    the results carry no such field or fewer than two members."""
    me = [getattr(r, "member_energies", None) for r in results]
    if any(m is None for m in me):
        return None
    me = [np.asarray(m, np.float64).reshape(-1) for m in me]
    if len({len(m) for m in me}) != 1 or len(me[0]) < 2:
        return None
    per_member = cdft_indices(*me)
    return CDFTIndices(*(float(np.std(v, ddof=1)) for v in per_member))
