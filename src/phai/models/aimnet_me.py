"""Trained AIMNet-ME model folders as charge-aware potentials (``phai.load(DIR)``).

**One model** (written by :mod:`phai.train.aimnet_me`): ``config.json`` (``kind``
``"aimnet-me"``, the :class:`~phai.models.aimnet.AIMNetConfig` under ``aimnet``) and
``arrays.npz``: the flax weights as ``params/<module>/<layer>/<kernel|bias>``, the self
energies ``sae [S]`` (eV per atom of each element) and ``state_shift [C]`` (eV per charge
state) or ``[C, M_max]`` (per charge and multiplicity). Energy = network (float32 or float64) +
``counts . sae + state_shift[Q]`` (or ``state_shift[Q, M - 1]``), in float64.

**Δ on a base model** (``phai train-aimnet --base aimnet2-wb97m-d3``): the same folder with a
``"delta"`` record in ``config.json`` (:func:`phai.train.delta.delta_record`) naming a
charge-aware base. Energy and forces are the base's (at the same total charge; the base gets
the multiplicity too, which the 2023 AIMNet2 models only check) plus the network's; atomic
charges are the network's own (it was trained on the labels' charges, not on corrections).
With ``charge_terms`` in the record (``phai train-aimnet --base-charge-terms``) the base is
AIMNet2 plus a fitted energy in AIMNet2's own atomic charges, ``sum_i a q_i + b q_i^2`` per
element and kind of state (:meth:`phai.models.aimnet2.AIMNet2.with_charge_terms`), and with
``--base-diffuse-term [BASIS]`` also a term in the diffuse-basis orbital energy (the labels'
basis, 6-31+G(d) by default) for the anions of closed-shell molecules (:mod:`phai.physics.diffuse`).
With ``"atom_inputs": "base_charges"`` in the record (``phai train-aimnet --base-charge-inputs``)
the network also reads the base's atomic charges of the same state; the base then runs first,
and the forces include the term through those charges, ``-(dE/dq_base) . dq_base/dR``
(:meth:`phai.models.aimnet2.AIMNet2.charges_vjp`), so they stay ``-dE/dR`` of the total energy.

**Ensemble** (``phai train-aimnet --members K``, :func:`save_ensemble`): ``config.json`` with
``kind`` ``"aimnet-me-ensemble"``, ``members`` (sub-folder names, each a one-model folder
above) and, if the members are Δ models, their common ``"delta"`` record. ``phai.load(DIR)``
gives one :class:`AIMNetMEEnsemble`: energy = (base +) the mean of the members, forces and
charges the member means, ``energy_std`` their spread.
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
from .aimnet import AIMNet, check_state, state_outputs


@functools.lru_cache(maxsize=16)
def _state_fn(config_json: str):
    """Jitted ``(params, R, species, nb, mask, Q, M, x) -> (energy, forces, q_alpha, q_beta, dE/dx)``
    of one padded molecule (:func:`phai.models.aimnet.state_outputs`), shared by every potential
    of one architecture (compiled once per shape)."""
    from ..train.aimnet_me import config_from_json

    return jax.jit(functools.partial(state_outputs, AIMNet(config_from_json(json.loads(config_json)))))


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

    def __init__(self, arrays: dict, config: dict, precision: str = "float32", base=None, folder=None):
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
        self.record = config.get("delta")
        """The Δ record (``{"base": {"kind": "model", "model": ...}, ...}``) or None (from scratch)."""
        if self.record is not None and base is None:
            base = resolve_base(self.record, folder, precision)
        self.base = base if self.record is not None else None
        """The base model whose energies and forces add (None: from scratch, or ``base=False``)."""
        if self.base is False:
            self.base = None
        if self.cfg.atom_inputs and (self.record or {}).get("atom_inputs") != "base_charges":
            raise InputError(f"{folder or self.name}: the network takes {self.cfg.atom_inputs} per-atom input(s) "
                             f"but its Δ record does not say they are its base's charges")

    @classmethod
    def from_folder(cls, folder, precision: str = "float32", base=None) -> AIMNetMEPotential:
        """Load a one-model folder. ``base``: the base model object to share (a Δ folder; None
        loads the recorded one, False leaves it out: :meth:`__call__` is then the Δ part alone)."""
        from ..pretrained import store

        arrays, config = store.load(Path(folder))
        return cls(arrays, config, precision, base=base, folder=folder)

    @property
    def members(self) -> int:
        return 1

    @property
    def atomic_numbers(self) -> tuple[int, ...]:
        return tuple(self.cfg.elements)

    def __call__(self, numbers, positions=None, charge=None, multiplicity=None) -> AIMNetMEResult:
        """Energy, forces and charges of one molecule in one charge/spin state (see the class):
        the network (with its self energies) plus, for a Δ model, the base model."""
        z, r, q, m = self.state(numbers, positions, charge, multiplicity)
        if self.cfg.atom_inputs:
            return evaluate_on_base_charges([self], self.base, z, r, q, m)
        res = self.network(z, r, q, m)
        return res if self.base is None else add_base(self.base(z, r, charge=q, multiplicity=m), res)

    def state(self, numbers, positions=None, charge=None, multiplicity=None):
        """Checked ``(numbers [A] int, positions [A, 3] Å float64, charge int, multiplicity int)`` of
        one call (``ase.Atoms``: ``info["charge"]``, ``info["multiplicity"]``); the multiplicity
        defaults to the lowest that fits."""
        from ..physics.cdft import lowest_multiplicity

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
        return z, r, q, m

    def network(self, z, r, q: int, m: int, atom_inputs=None) -> AIMNetMEResult:
        """The network and its self energies alone (no base) on a checked state (:meth:`state`);
        ``atom_inputs [A, P]``: the per-atom inputs of a model that takes them (forces at fixed inputs)."""
        return self.network_with_inputs(z, r, q, m, atom_inputs)[0]

    def network_with_inputs(self, z, r, q: int, m: int, atom_inputs=None) -> tuple[AIMNetMEResult, np.ndarray]:
        """:meth:`network` and ``dE/d atom_inputs [A, P]`` (eV per input unit; ``[A, 0]`` without inputs)."""
        from ..train.aimnet_me import pad_structure, reference_energy

        a, p_in = len(z), self.cfg.atom_inputs
        if p_in and atom_inputs is None:
            raise InputError(f"{self.name}: this network reads {p_in} per-atom input(s) (its base's charges): "
                             f"evaluate it with its base")
        R, species, nb, mask = pad_structure(z, r, self.cfg, bucket(a))
        x = np.zeros((len(R), p_in))
        if p_in:
            x[:a] = np.asarray(atom_inputs, np.float64).reshape(a, p_in)
        with jax.enable_x64(self.precision == "float64"):
            p = jax.tree_util.tree_map(lambda v: jnp.asarray(v, self.dtype), self._params)
            e, f, qa, qb, gx = self._fn(p, jnp.asarray(R, self.dtype), jnp.asarray(species), jnp.asarray(nb),
                                        jnp.asarray(mask), jnp.asarray(q, self.dtype), jnp.asarray(m, jnp.int32),
                                        jnp.asarray(x, self.dtype))
            e, f, qa, qb, gx = float(e), np.asarray(f), np.asarray(qa), np.asarray(qb), np.asarray(gx, np.float64)
        energy = e + float(reference_energy([z], [q], self.cfg.elements, self.cfg.charge_states, self.sae,
                                            self.state_shift, [m])[0])
        res = AIMNetMEResult(energy, f[:a], 0.0, np.array([energy]), a, qa[:a] + qb[:a], qa[:a], qb[:a])
        return res, gx[:a]

    def evaluate(self, structures, charges=None, multiplicities=None, *, forces: bool = True, labels=None,
                 multiplicity=None) -> list[AIMNetMEResult]:
        """:meth:`__call__` over ``ase.Atoms`` (``info["charge"]``, ``info["multiplicity"]``),
        ``(numbers, positions)`` pairs or ``(numbers, positions, charge)`` triples (the interface of
        :meth:`phai.models.aimnet2.AIMNet2.evaluate`, which ``phai energy`` calls).

        Args:
          charges, multiplicities: per structure (None entries or None: from the structure, else
            0 and the lowest multiplicity).
          forces: accepted for compatibility (forces are always computed).
          labels: names of the structures for error messages.
          multiplicity: one ``2S+1`` for every structure (when ``multiplicities`` is None).
        """
        out = []
        for k, s in enumerate(structures):
            q = None if charges is None else charges[k]
            m = multiplicity if multiplicities is None else multiplicities[k]
            try:
                if hasattr(s, "get_positions"):
                    out.append(self(s, charge=q, multiplicity=m))
                else:
                    z, r, *rest = s
                    out.append(self(z, r, charge=q if q is not None or not rest else rest[0], multiplicity=m))
            except InputError as exc:
                raise type(exc)(f"{labels[k] if labels else f'structure {k}'}: {exc}") from None
        return out


def resolve_base(record: dict, folder=None, precision: str = "float32"):
    """The base model named by a Δ record (a registry name, or a model folder: as given,
    relative to ``folder``, or the recorded absolute path), at ``precision``; charge-aware.
    A record with ``charge_terms`` (fitted by a ``base_charge_terms`` run) gives the base with
    that correction (:meth:`phai.models.aimnet2.AIMNet2.with_charge_terms`)."""
    base = _load_recorded_base(record, folder, precision)
    terms = record.get("charge_terms")
    if terms is None:
        return base
    if not hasattr(base, "with_charge_terms"):
        raise InputError(f"{folder}: this Δ model has charge terms for its base, but the base "
                         f"{record['base']['model']!r} is not an AIMNet2 model that can take them")
    return base.with_charge_terms(terms)


def _load_recorded_base(record: dict, folder, precision: str):
    from ..train.aimnet_me import load_base

    b = record["base"]
    if b.get("kind") != "model":
        raise InputError(f"{folder}: an AIMNet-ME Δ folder needs a base model, not {b}")
    name = b["model"]
    for cand in ([Path(folder) / name] if folder is not None and not Path(name).is_absolute() else []) + \
            [Path(name), Path(b.get("path") or name)]:
        if cand.is_dir():
            return load_base(str(cand), precision)
    try:
        return load_base(name, precision)
    except (KeyError, OSError, ValueError) as exc:
        raise InputError(f"{folder}: the base model {name!r} of this Δ model cannot be loaded ({exc})") from None


def evaluate_on_base_charges(members: list, base, z, r, q: int, m: int) -> AIMNetMEResult:
    """Base + the mean of ``members`` (networks that read the base's atomic charges of the state,
    ``atom_inputs = "base_charges"``) on one checked state, with the complete forces.

    The base runs first; each member gets its charges ``q_b [A]`` (e) as inputs and returns
    ``dE/dq_b``; the forces get ``-(mean dE/dq_b) . dq_b/dR`` (``base.charges_vjp``: a second
    forward and one reverse pass through the base) beside the members' forces at fixed ``q_b``.
    """
    if base is None:
        raise InputError("this AIMNet-ME Δ model reads its base model's charges: it cannot run without the base")
    b = base(z, r, charge=q, multiplicity=m)
    x = np.asarray(b.charges, np.float64)[:, None]
    outs = [p.network_with_inputs(z, r, q, m, x) for p in members]
    res = member_mean([o[0] for o in outs])
    gq = np.mean([o[1][:, 0] for o in outs], axis=0)                        # [A] eV/e
    return add_base(b, res._replace(forces=res.forces - base.charges_vjp(z, r, q, gq)))


def member_mean(rs: list) -> AIMNetMEResult:
    """One result from the members' results ``rs`` (one state): energy, forces and the three
    charge fields are the member means, ``member_energies`` each member's energy and
    ``energy_std`` their spread (ddof 1; 0 for one member)."""
    e = np.asarray([x.energy for x in rs], np.float64)

    def mean(name):
        return np.mean([getattr(x, name) for x in rs], axis=0)

    return AIMNetMEResult(float(e.mean()), mean("forces"), float(e.std(ddof=1)) if len(e) > 1 else 0.0, e,
                          rs[0].num_atoms, mean("charges"), mean("charges_alpha"), mean("charges_beta"))


def add_base(b, d: AIMNetMEResult) -> AIMNetMEResult:
    """Base result ``b`` (energy, forces) plus Δ result ``d``: energies and forces add; the
    charges are ``d``'s; ``member_energies`` are ``d``'s plus the base energy; ``energy_std``
    is the two spreads added in quadrature (as :class:`phai.train.DeltaPotential`)."""
    return d._replace(energy=float(b.energy) + d.energy, forces=np.asarray(b.forces, np.float64) + d.forces,
                      energy_std=float(np.hypot(getattr(b, "energy_std", 0.0), d.energy_std)),
                      member_energies=np.asarray(d.member_energies) + float(b.energy))


class AIMNetMEEnsemble:
    """Several AIMNet-ME models (seeds) as one charge-aware potential, optionally on one base.

    ``energy`` = base (if any) + the mean of the members' energies; ``forces``, ``charges``,
    ``charges_alpha``, ``charges_beta`` the member means (so the NSE sums still hold);
    ``member_energies [K]`` each member's energy (base included); ``energy_std`` the members'
    standard deviation (ddof 1; 0 for one member), added in quadrature to the base's own
    spread for a Δ ensemble. :func:`phai.physics.cdft.cdft` takes the IP, EA, ... of each member
    too (``CDFTResult.std``). The base is evaluated once per call, not once per member.

    Args:
      members: :class:`AIMNetMEPotential` objects (their own ``base`` is ignored).
      base: the base model (None: from scratch).
      record: the Δ record (stored by :func:`save_ensemble`).
    """

    charge_aware = True

    def __init__(self, members: list, base=None, record: dict | None = None, name: str = "aimnet-me-ensemble"):
        if not members:
            raise InputError("an ensemble needs at least one member")
        if (base is None) != (record is None):
            raise InputError("give a Δ ensemble both its base model and its record")
        precisions = {m.precision for m in members}
        if len(precisions) != 1:
            raise InputError(f"ensemble members at several precisions: {sorted(precisions)}")
        self.members_list = list(members)
        self.base, self.record, self.name = base, record, name
        self.precision = members[0].precision

    @property
    def members(self) -> int:
        return len(self.members_list)

    @property
    def atomic_numbers(self) -> tuple[int, ...]:
        return tuple(sorted(set.intersection(*(set(m.atomic_numbers) for m in self.members_list))))

    def __call__(self, numbers, positions=None, charge=None, multiplicity=None) -> AIMNetMEResult:
        """One molecule in one charge/spin state (as :meth:`AIMNetMEPotential.__call__`)."""
        z, r, q, m = self.members_list[0].state(numbers, positions, charge, multiplicity)
        for p in self.members_list[1:]:
            check_state(p.cfg, z, q, m)
        if any(p.cfg.atom_inputs for p in self.members_list):
            return evaluate_on_base_charges(self.members_list, self.base, z, r, q, m)
        res = member_mean([p.network(z, r, q, m) for p in self.members_list])
        return res if self.base is None else add_base(self.base(z, r, charge=q, multiplicity=m), res)

    evaluate = AIMNetMEPotential.evaluate


def save_ensemble(folder, members, name: str = "aimnet-me-ensemble") -> Path:
    """Write ``folder/config.json`` of an ensemble whose members are the one-model folders
    ``members`` (paths inside ``folder``; written before, e.g. by ``phai train-aimnet``). Their
    Δ records must agree (all from scratch, or all on one base). Returns ``folder``."""
    from ..train.checkpoint import write_text_atomic

    folder = Path(folder)
    names, records = [], []
    for mdir in members:
        rel = Path(mdir).resolve().relative_to(folder.resolve())
        cfg = json.loads((folder / rel / "config.json").read_text())
        if cfg.get("kind") != "aimnet-me":
            raise InputError(f"{folder / rel}: not an AIMNet-ME model folder (kind {cfg.get('kind')!r})")
        names.append(str(rel))
        records.append(cfg.get("delta"))
    if any(r != records[0] for r in records):
        raise InputError(f"{folder}: the members have different bases: {records}")
    config = {"kind": "aimnet-me-ensemble", "name": name, "members": names,
              "description": f"AIMNet-ME ensemble of {len(names)} members"
                             + (f" on {records[0]['base']['model']} (base + mean Δ)" if records[0] else "")}
    if records[0]:
        config["delta"] = records[0]
    write_text_atomic(folder / "config.json", json.dumps(config, indent=1, sort_keys=True))
    return folder


def load_aimnet_me(folder, precision: str = "float32"):
    """What ``phai.load(folder)`` returns for an AIMNet-ME folder: an :class:`AIMNetMEPotential`
    (one model, possibly Δ on a base) or an :class:`AIMNetMEEnsemble` (``kind``
    ``"aimnet-me-ensemble"``; the base loaded once)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("kind") != "aimnet-me-ensemble":
        return AIMNetMEPotential.from_folder(folder, precision)
    if not config.get("members"):
        raise InputError(f"{folder}: an AIMNet-ME ensemble folder without members")
    record = config.get("delta")
    base = resolve_base(record, folder, precision) if record else None
    members = []
    for name in config["members"]:
        mdir = folder / name
        if not (mdir / "config.json").is_file():
            raise InputError(f"{folder}: member folder {name!r} is missing")
        p = AIMNetMEPotential.from_folder(mdir, precision, base=False)
        if p.record != record:
            raise InputError(f"{mdir}: its base {p.record} is not the ensemble's {record}")
        members.append(p)
    return AIMNetMEEnsemble(members, base, record, config.get("name", "aimnet-me-ensemble"))
