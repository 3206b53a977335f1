"""A trained AIMNet-ME model folder as a charge-aware potential (``phai.load(DIR)``).

The folder (written by :mod:`phai.train.aimnet_me`) holds ``config.json`` (``kind``
``"aimnet-me"``, the :class:`~phai.models.aimnet.AIMNetConfig` under ``aimnet``) and
``arrays.npz``: the flax weights as ``params/<module>/<layer>/<kernel|bias>``, the self
energies ``sae [S]`` (eV per atom of each element) and ``state_shift [C]`` (eV per charge
state) or ``[C, M_max]`` (per charge and multiplicity). Energy = network (float32 or float64) +
``counts . sae + state_shift[Q]`` (or ``state_shift[Q, M - 1]``), in float64.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from ..structures import bucket
from .aimnet import AIMNet, check_state


@functools.lru_cache(maxsize=16)
def _state_fn(config_json: str):
    """Jitted ``(params, R, species, nb, mask, Q, M) -> (energy, forces, q_alpha, q_beta)`` of one
    padded molecule, shared by every potential of one architecture (compiled once per shape)."""
    from ..train.aimnet_me import config_from_json

    model = AIMNet(config_from_json(json.loads(config_json)))

    def one(params, R, species, nb, mask, Q, M):
        def energy(r):
            out = model.apply(params, r, species, nb, mask, Q, M)
            return out["energy"], out

        (e, out), g = jax.value_and_grad(energy, has_aux=True)(R)
        return e, -g, out["charges_alpha"], out["charges_beta"]

    return jax.jit(one)


class AIMNetMEResult(NamedTuple):
    """One state of one molecule (NumPy). The first five fields are those of ANI's
    :class:`phai.potential.Result` (a single model: ``energy_std`` is 0).

    Attributes:
      energy: eV (float64, self energies included); forces ``[A, 3]`` eV/Å.
      charges, charges_alpha, charges_beta: ``[A]`` e (NSE: they sum to ``Q``, ``Q^alpha``, ``Q^beta``).
    """

    energy: float
    forces: np.ndarray
    energy_std: float
    member_energies: np.ndarray
    num_atoms: int
    charges: np.ndarray
    charges_alpha: np.ndarray
    charges_beta: np.ndarray


class AIMNetMEPotential:
    """``(numbers, positions Å, charge, multiplicity) -> energy (eV), forces, spin-resolved charges``.

    Precision: ``"float32"`` or ``"float64"`` (the latter computes inside ``jax.enable_x64``).
    Elements, charges outside the model's charge states and impossible multiplicities are
    refused on the host (:class:`~phai.errors.InputError`). The multiplicity defaults to the
    lowest that fits the electron count.
    """

    charge_aware = True

    def __init__(self, arrays: dict, config: dict, precision: str = "float32"):
        from ..train.aimnet_me import config_from_json, unflatten_flax

        if config.get("kind") != "aimnet-me":
            raise InputError(f"not an AIMNet-ME model folder (kind {config.get('kind')!r})")
        if precision not in ("float32", "float64"):
            raise InputError(f"precision must be 'float32' or 'float64', got {precision!r}")
        self.cfg = config_from_json(config["aimnet"])
        self.name = config.get("name", "aimnet-me")
        self.config = config
        self.precision = precision
        self.dtype = np.float32 if precision == "float32" else np.float64
        self.sae = np.asarray(arrays["sae"], np.float64)
        self.state_shift = np.asarray(arrays["state_shift"], np.float64)
        self._params = unflatten_flax(arrays)
        self.model = AIMNet(self.cfg)
        self._fn = _state_fn(json.dumps(config["aimnet"], sort_keys=True))

    @classmethod
    def from_folder(cls, folder, precision: str = "float32") -> AIMNetMEPotential:
        from ..pretrained import store

        arrays, config = store.load(Path(folder))
        return cls(arrays, config, precision)

    @property
    def atomic_numbers(self) -> tuple[int, ...]:
        return tuple(self.cfg.elements)

    def __call__(self, numbers, positions=None, charge=None, multiplicity=None) -> AIMNetMEResult:
        """Energy, forces and charges of one molecule in one charge/spin state (see the class)."""
        from ..physics.cdft import lowest_multiplicity
        from ..train.aimnet_me import pad_structure, reference_energy

        if positions is None:
            if not hasattr(numbers, "get_positions"):
                raise InputError("positions are missing: pass (numbers, positions in Å) or an ase.Atoms")
            charge = numbers.info.get("charge", 0) if charge is None else charge
            multiplicity = numbers.info.get("multiplicity", multiplicity)
            numbers, positions = numbers.get_atomic_numbers(), numbers.get_positions()
        z = np.asarray(numbers, np.int64).reshape(-1)
        r = np.asarray(positions, np.float64)
        if r.shape != (len(z), 3):
            raise InputError(f"positions have shape {r.shape}, expected ({len(z)}, 3)")
        if not np.all(np.isfinite(r)):
            raise InputError("positions contain NaN or inf")
        q = 0 if charge is None else charge
        check_state(self.cfg, z, q, multiplicity)
        q = int(q)
        m = lowest_multiplicity(z, q) if multiplicity is None else int(multiplicity)
        R, species, nb, mask = pad_structure(z, r, self.cfg, bucket(len(z)))
        with jax.enable_x64(self.precision == "float64"):
            p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, self.dtype), self._params)
            e, f, qa, qb = self._fn(p, jnp.asarray(R, self.dtype), jnp.asarray(species), jnp.asarray(nb),
                                    jnp.asarray(mask), jnp.asarray(q, self.dtype), jnp.asarray(m, jnp.int32))
            e, f, qa, qb = float(e), np.asarray(f), np.asarray(qa), np.asarray(qb)
        a = len(z)
        energy = e + float(reference_energy([z], [q], self.cfg.elements, self.cfg.charge_states, self.sae,
                                            self.state_shift, [m])[0])
        return AIMNetMEResult(energy, f[:a], 0.0, np.array([energy]), a, qa[:a] + qb[:a], qa[:a], qb[:a])

    def evaluate(self, structures, charges=None, multiplicities=None) -> list[AIMNetMEResult]:
        """:meth:`__call__` over ``[(numbers, positions), ...]`` or ``ase.Atoms``."""
        out = []
        for k, s in enumerate(structures):
            q = None if charges is None else charges[k]
            m = None if multiplicities is None else multiplicities[k]
            out.append(self(s, charge=q, multiplicity=m) if hasattr(s, "get_positions") else self(*s, charge=q,
                                                                                                   multiplicity=m))
        return out


def load_aimnet_me(folder, precision: str = "float32") -> AIMNetMEPotential:
    """:meth:`AIMNetMEPotential.from_folder`."""
    return AIMNetMEPotential.from_folder(folder, precision)
