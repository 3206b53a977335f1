r"""Training AIMNet-ME over charge states: data, padding, self energies, the loss, the loop.

The model is :class:`phai.models.aimnet.AIMNet` with ``charge_spin=True`` (charge-state
AFV tables, spin embedding, neural spin-charge equilibration). One training example is one
*state*: a geometry with its total charge ``Q``, multiplicity ``M``, energy (eV), optionally
forces (eV/Å) and spin-resolved atomic charges ``q^alpha``, ``q^beta`` (e; with ``Q^alpha =
(Q - M + 1)/2``, i.e. ``q^sigma_i = Z_i/2 - n^sigma_i`` for the population ``n^sigma_i`` of
spin ``sigma`` on atom ``i``).

Loss of a batch (the per-state losses averaged, as AIMNet-ME):

.. math::

   L = \frac{1}{|S_b|} \sum_{s \in S_b} \frac{1}{n_s} \sum_{m \in s} \Big[
        \frac{(E_m - E^\mathrm{ref}_m)^2}{A_m}
      + w_q \frac{\sum_i (q^\alpha_i - q^{\alpha,\mathrm{ref}}_i)^2 + (q^\beta_i - q^{\beta,\mathrm{ref}}_i)^2}{A_m}
      + w_F \frac{\sum_i |F_i - F^\mathrm{ref}_i|^2}{3 A_m} \Big]

over the charge states ``S_b`` present in the batch (``n_s`` molecules of state ``s``,
``A_m`` atoms): eV², e², (eV/Å)². The charges that enter are the NSE-re-balanced ones
(``q_i = q~_i + (Q - sum q~) k_i^2 / sum k^2`` per spin channel, inside the model), so they sum
to the state's ``Q^alpha``, ``Q^beta`` by construction.

Optional state-difference term (phai's choice, ``diff_weight`` ``w_D`` > 0; the AIMNet-ME and
AIMNet-NSE papers average the per-state losses only): over the charged states ``m`` of the
batch whose neutral state ``n(m)`` at the same geometry is in the batch too,

.. math::

   L_D = \frac{w_D}{|P_b|} \sum_{m \in P_b} \big[(E_m - E_{n(m)}) - (E^\mathrm{ref}_m - E^\mathrm{ref}_{n(m)})\big]^2

(eV²): the squared errors of the vertical IP (cation) and EA (anion) themselves, the
quantities the conceptual-DFT indices are made of. Per-state errors of a few tenths of an eV
that are common to the states of one geometry cancel in the indices; this term trains the
differences to be right even when the totals are not. It is intensive (no division by the
atom count). Batches then hold whole geometries.

Self energies: ``E ~ sum_Z n_Z SAE_Z + c_Q`` by least squares over the training states,
with one offset ``c_Q`` per charge state and ``c_0 = 0``. Why per charge state: the gap
between charge states is an ionisation potential or an electron affinity, 5-12 eV and
*intensive*; a per-element shift scales with the molecule's size and cannot represent it,
so without ``c_Q`` the network would have to learn a ~10 eV constant as a sum of atomic
terms (hard, and size-dependent errors). The network then fits the residual. Optionally
(``spin_state_shifts``) one offset per charge *and* multiplicity: the cation of a radical (a
singlet) and of a closed-shell molecule (a doublet) differ by ~2 eV in mean vertical IP and
EA in the charge data set (IP 9.1 vs 11.0 eV), a difference that is again intensive. The self
energies are added in float64 on the host (as for ANI), so float32 networks lose no precision
on totals of thousands of eV.

Δ on a base model (``MEConfig.base``, e.g. ``"aimnet2-wb97m-d3"``; the ANI-1ccx Δ recipe): the
energies and forces of every training and validation state become ``E - E_base`` and ``F -
F_base`` (:func:`subtract_base`; the base evaluated once per label in float64 and cached,
:func:`base_state_predictions`), the self energies and the network fit those residuals, and the
saved folder records the base (``"delta"`` in ``config.json``) so that ``phai.load`` adds it
back. The charges stay the labels' own. With a base that has no spin input (the 2023
AIMNet2), the per-(charge, multiplicity) offsets (``spin_state_shifts``) carry its different
errors on the ions of radicals and of closed-shell molecules.

Resume: the batch order of epoch ``e`` is ``default_rng([seed, e]).permutation``; the
checkpoint (written atomically at every epoch end: :mod:`phai.train.checkpoint`) holds the
weights, best weights, optimizer state, epoch and history, so a resumed run continues
exactly where the last completed epoch left it. It also records the settings and
:meth:`ChargeSet.fingerprint` of the training and validation states: a folder written with
other settings or other data is refused, never resumed. Learning rate: cosine from ``lr`` to
``lr * final_lr_fraction`` over ``epochs`` (set per epoch, so resume needs no extra state).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ..errors import InputError
from ..geometry import dense_from_pairs, neighbor_pairs
from ..models.aimnet import AIMNet, AIMNetConfig, check_state, state_outputs
from ..models.aimnet2 import state_kind
from ..structures import bucket
from ..units import HARTREE_TO_EV, HARTREE_TO_KCALMOL
from . import checkpoint as ckpt

EV_TO_KCALMOL = HARTREE_TO_KCALMOL / HARTREE_TO_EV
KIND = "aimnet-me"
BASE_PRECISION = "float64"
"""Precision of the base model's predictions that Δ runs subtract (cached once per state)."""

BASE_CACHE_TERM_TABLES = 16
"""Fitted charge-term tables whose base predictions the base cache keeps (the most recently
written): each fold of each run fits its own, so older ones are dropped when the file is
rewritten. The plain base's predictions are always kept."""

_TERM_ORDER = "__term_tags__"     # the cache's term tags, oldest first


# ----------------------------------------------------------------------------------- data
@dataclasses.dataclass
class ChargeSet:
    """Labelled states (one per geometry x charge/multiplicity).

    Attributes:
      numbers: ``C`` arrays ``[A]`` of atomic numbers.
      positions: ``C`` arrays ``[A, 3]`` (Å).
      charge: ``[C]`` int total charges; multiplicity: ``[C]`` int ``2S + 1``.
      energy: ``[C]`` eV.
      forces: ``C`` arrays ``[A, 3]`` eV/Å, or None.
      q_alpha, q_beta: ``C`` arrays ``[A]`` (e), or None.
      molecule: ``[C]`` str, molecule id (splits keep a molecule in one part).
      geometry: ``[C]`` str, geometry id (the states of one geometry share it: CDFT triples).
      split: ``[C]`` str, the data set's own split label ("train", "test", ...), or None.
    """

    numbers: list
    positions: list
    charge: np.ndarray
    multiplicity: np.ndarray
    energy: np.ndarray
    forces: list | None = None
    q_alpha: list | None = None
    q_beta: list | None = None
    molecule: np.ndarray | None = None
    geometry: np.ndarray | None = None
    split: np.ndarray | None = None

    def __post_init__(self):
        c = len(self.numbers)
        self.numbers = [np.asarray(z, np.int64) for z in self.numbers]
        self.positions = [np.asarray(r, np.float64).reshape(-1, 3) for r in self.positions]
        self.charge = np.asarray(self.charge, np.int64).reshape(c)
        self.multiplicity = np.asarray(self.multiplicity, np.int64).reshape(c)
        self.energy = np.asarray(self.energy, np.float64).reshape(c)
        for name in ("forces", "q_alpha", "q_beta"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, [np.asarray(x, np.float64) for x in v])
        self.molecule = np.asarray([str(i) for i in range(c)] if self.molecule is None else self.molecule).astype(str)
        self.geometry = self.molecule.copy() if self.geometry is None else np.asarray(self.geometry).astype(str)
        if self.split is not None:
            self.split = np.asarray(self.split).astype(str).reshape(c)
        for k in range(c):
            a = len(self.numbers[k])
            if self.positions[k].shape != (a, 3):
                raise InputError(f"state {k}: positions {self.positions[k].shape} for {a} atoms")
            if self.forces is not None and self.forces[k].shape != (a, 3):
                raise InputError(f"state {k}: forces {self.forces[k].shape} for {a} atoms")
            for name in ("q_alpha", "q_beta"):
                v = getattr(self, name)
                if v is not None and v[k].shape != (a,):
                    raise InputError(f"state {k}: {name} {v[k].shape} for {a} atoms")
        if not np.all(np.isfinite(self.energy)):
            raise InputError("energies contain NaN or inf")

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def has_charges(self) -> bool:
        return self.q_alpha is not None and self.q_beta is not None

    def subset(self, idx) -> ChargeSet:
        idx = np.asarray(idx, np.int64)

        def pick(v):
            return None if v is None else [v[i] for i in idx]

        return ChargeSet(pick(self.numbers), pick(self.positions), self.charge[idx], self.multiplicity[idx],
                         self.energy[idx], pick(self.forces), pick(self.q_alpha), pick(self.q_beta),
                         self.molecule[idx], self.geometry[idx], None if self.split is None else self.split[idx])

    def split_by_molecule(self, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> list[ChargeSet]:
        """Parts with disjoint molecules (shuffled by ``seed``), sizes by molecule count."""
        mols = np.unique(self.molecule)
        order = np.random.default_rng(seed).permutation(len(mols))
        cuts = np.round(np.cumsum(fractions) / np.sum(fractions) * len(mols)).astype(int)
        parts, start = [], 0
        for c in cuts:
            names = set(mols[order[start:c]].tolist())
            parts.append(self.subset(np.flatnonzero([m in names for m in self.molecule])))
            start = c
        return parts

    def fingerprint(self) -> str:
        """A short hash of the states and their labels (atomic numbers, positions to 1e-6 Å,
        charge, multiplicity, energy to 1e-6 eV, α/β charges to 1e-6 e, molecule ids): a
        checkpoint records it, so a run is never resumed on other data."""
        import hashlib

        h = hashlib.sha256()
        h.update("".join(geometry_id(z, r) for z, r in zip(self.numbers, self.positions)).encode())
        h.update(self.charge.astype(np.int64).tobytes() + self.multiplicity.astype(np.int64).tobytes())
        h.update(np.round(self.energy, 6).tobytes())
        for q in (self.q_alpha or []) + (self.q_beta or []):
            h.update(np.round(np.asarray(q, np.float64), 6).tobytes())
        h.update("\n".join(map(str, self.molecule)).encode())
        return h.hexdigest()[:16]


def read_charge_h5(path, prefix: str | None = None) -> ChargeSet:
    """Read the charge/spin data set (layout of ``tests/data/charge_labels``, its recipe).

    ``/<molecule>/<state>`` groups (state attrs ``charge``, ``multiplicity``) holding
    ``atomic_numbers [A]``, ``coordinates [C, A, 3]`` Å (the same geometries, same order, in
    every state of a molecule), ``<prefix>.energy [C]`` and ``<prefix>.forces [C, A, 3]``
    (unit attr ``units``: Hartree(/Å) or eV(/Å), converted to eV, eV/Å), ``<prefix>.q_alpha``,
    ``<prefix>.q_beta [C, A]`` (e). ``prefix`` None: the one prefix with an ``.energy``
    dataset. NaN energies (not computed yet) are dropped. ``geometry`` is
    ``"<molecule>/<c>"`` (so the states of one geometry pair up), ``split`` the molecule
    group's ``split`` attribute.
    """
    import h5py

    cols = {k: [] for k in ("numbers", "positions", "charge", "multiplicity", "energy", "forces", "q_alpha",
                            "q_beta", "molecule", "geometry", "split")}

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    with h5py.File(path, "r") as f:
        for mol in f:
            mg = f[mol]
            if not isinstance(mg, h5py.Group):
                continue
            for state in mg:
                g = mg[state]
                if not isinstance(g, h5py.Group) or "coordinates" not in g:
                    continue
                pre = prefix
                if pre is None:
                    found = sorted(k[:-len(".energy")] for k in g if k.endswith(".energy"))
                    if len(found) != 1:
                        raise InputError(f"{path}: {g.name} has energy datasets {found}; pass prefix=")
                    pre = found[0]
                e = g[f"{pre}.energy"][()] * _unit_factor(g[f"{pre}.energy"], "hartree")
                z = g["atomic_numbers"][()].astype(np.int64)
                R = g["coordinates"][()]
                F = (g[f"{pre}.forces"][()] * _unit_factor(g[f"{pre}.forces"], "hartree/a")
                     if f"{pre}.forces" in g else None)
                qa = g[f"{pre}.q_alpha"][()] if f"{pre}.q_alpha" in g else None
                qb = g[f"{pre}.q_beta"][()] if f"{pre}.q_beta" in g else None
                q, m = int(g.attrs["charge"]), int(g.attrs["multiplicity"])
                for c in np.flatnonzero(np.isfinite(e)):
                    cols["numbers"].append(z)
                    cols["positions"].append(R[c])
                    cols["charge"].append(q)
                    cols["multiplicity"].append(m)
                    cols["energy"].append(e[c])
                    cols["forces"].append(None if F is None else F[c])
                    cols["q_alpha"].append(None if qa is None else qa[c])
                    cols["q_beta"].append(None if qb is None else qb[c])
                    cols["molecule"].append(text(mol))
                    cols["geometry"].append(f"{mol}/{c}")
                    cols["split"].append(text(mg.attrs.get("split", "")))
    if not cols["numbers"]:
        raise InputError(f"{path}: no labelled states found")
    opt = {k: None if any(x is None for x in cols[k]) else cols[k] for k in ("forces", "q_alpha", "q_beta")}
    return ChargeSet(cols["numbers"], cols["positions"], cols["charge"], cols["multiplicity"], cols["energy"],
                     opt["forces"], opt["q_alpha"], opt["q_beta"], np.asarray(cols["molecule"]),
                     np.asarray(cols["geometry"]), np.asarray(cols["split"]))


def read_charge_extxyz(path) -> ChargeSet:
    """Read states from an extended XYZ file (any file ASE reads): per frame
    ``info["charge"]``, ``info["multiplicity"]`` (default: the lowest that fits),
    ``info["energy"]`` (eV), optional ``info["molecule"]`` and ``info["geometry"]``, and arrays
    ``forces`` (eV/Å), ``q_alpha``, ``q_beta`` (e). :func:`write_charge_extxyz` writes it."""
    from ase.io import read

    from ..physics.cdft import lowest_multiplicity

    frames = read(str(path), index=":")
    if not frames:
        raise InputError(f"{path}: no frames")
    recs = []
    for k, a in enumerate(frames):
        calc = getattr(a, "calc", None)   # ASE moves energy/forces into a SinglePointCalculator
        results = getattr(calc, "results", {}) if calc is not None else {}
        energy = a.info.get("energy", results.get("energy"))
        if energy is None:
            raise InputError(f"{path} frame {k}: no energy (info['energy'], eV)")
        forces = a.arrays.get("forces", results.get("forces"))
        z = a.get_atomic_numbers()
        q = int(a.info.get("charge", 0))
        m = int(a.info.get("multiplicity", lowest_multiplicity(z, q)))
        recs.append((z, a.get_positions(), q, m, float(energy), forces,
                     a.arrays.get("q_alpha"), a.arrays.get("q_beta"), str(a.info.get("molecule", a.get_chemical_formula())),
                     str(a.info.get("geometry", f"{a.info.get('molecule', a.get_chemical_formula())}/{k}"))))
    cols = list(zip(*recs))
    opt = [None if any(x is None for x in cols[i]) else list(cols[i]) for i in (5, 6, 7)]
    return ChargeSet(list(cols[0]), list(cols[1]), cols[2], cols[3], cols[4], opt[0], opt[1], opt[2],
                     np.asarray(cols[8]), np.asarray(cols[9]))


def write_charge_extxyz(path, cs: ChargeSet) -> None:
    """Write a :class:`ChargeSet` as extended XYZ (atomically; read back by :func:`read_charge_extxyz`)."""
    from ase import Atoms
    from ase.io import write

    frames = []
    for k in range(len(cs)):
        a = Atoms(numbers=cs.numbers[k], positions=cs.positions[k])
        a.info.update(charge=int(cs.charge[k]), multiplicity=int(cs.multiplicity[k]), energy=float(cs.energy[k]),
                      molecule=str(cs.molecule[k]), geometry=str(cs.geometry[k]))
        if cs.forces is not None:
            a.arrays["forces"] = cs.forces[k]
        if cs.has_charges:
            a.arrays["q_alpha"], a.arrays["q_beta"] = cs.q_alpha[k], cs.q_beta[k]
        frames.append(a)
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    ckpt.write_text_atomic(path, buf.getvalue())


def geometry_id(numbers, positions) -> str:
    """A short id of a geometry (atomic numbers and positions rounded to 1e-6 Å): the states
    of one geometry share it."""
    import hashlib

    h = hashlib.sha1(np.asarray(numbers, np.int64).tobytes() + np.round(np.asarray(positions, np.float64), 6).tobytes())
    return h.hexdigest()[:16]


def read_label_store(folder, level: str | None = None) -> ChargeSet:
    """States from a :mod:`phai.labels.store` folder labelled by
    :class:`phai.labels.labellers.PySCFUKSLabeller` (records with ``status == "ok"``; energies
    eV, forces eV/Å, extras ``q_alpha``/``q_beta`` e). ``molecule`` is the record's name,
    ``geometry`` :func:`geometry_id`; a record's ``info["split"]`` is kept in
    :attr:`ChargeSet.split` when present."""
    from ..labels.store import load_records

    recs = [r for r in load_records(folder, level) if "q_alpha" in (r.get("extras") or {})]
    if not recs:
        raise InputError(f"{folder}: no finished UKS labels with spin-resolved charges")
    z = [np.asarray(r["numbers"]) for r in recs]
    pos = [np.asarray(r["positions"]) for r in recs]
    has_f = all(r.get("forces") is not None for r in recs)
    cs = ChargeSet(z, pos, [r["charge"] for r in recs], [r["multiplicity"] for r in recs],
                   [r["energy"] for r in recs], [np.asarray(r["forces"]) for r in recs] if has_f else None,
                   [np.asarray(r["extras"]["q_alpha"]) for r in recs], [np.asarray(r["extras"]["q_beta"]) for r in recs],
                   np.asarray([r.get("name") or geometry_id(a, b) for r, a, b in zip(recs, z, pos)]),
                   np.asarray([geometry_id(a, b) for a, b in zip(z, pos)]))
    cs.split = np.asarray([str((r.get("info") or {}).get("split", "")) for r in recs])
    return cs


def read_charge_data(path) -> ChargeSet:
    """:func:`read_label_store` for a folder, :func:`read_charge_h5` for ``.h5``/``.hdf5`` files,
    else :func:`read_charge_extxyz`."""
    if Path(path).is_dir():
        return read_label_store(path)
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    if str(path).lower().endswith((".h5", ".hdf5")):
        return read_charge_h5(path)
    return read_charge_extxyz(path)


# ------------------------------------------------------------------ Δ on a base model
def load_base(name: str, precision: str = "float64"):
    """The base model of a Δ run: ``phai.load(name, precision)``, refused unless charge-aware."""
    import phai

    base = phai.load(str(name), precision=precision)
    if not getattr(base, "charge_aware", False):
        raise InputError(f"base model {name!r} is charge-blind: AIMNet-ME needs a base that takes a total charge "
                         f"(e.g. aimnet2-wb97m-d3)")
    return base


def code_fingerprint(obj) -> str:
    """12 hex digits of a SHA-1 over the source files of the phai modules that compute ``obj``:
    the module that defines its class and every phai module whose names it imports. Part of the
    base-prediction cache key, so that predictions made by other (older, or uncommitted) code are
    never reused."""
    import hashlib
    import inspect
    import sys

    mod = sys.modules[type(obj).__module__]
    names = {mod.__name__}
    for v in vars(mod).values():
        m = v.__name__ if inspect.ismodule(v) else getattr(v, "__module__", None)
        if isinstance(m, str) and m.split(".")[0] == "phai":
            names.add(m)
    h = hashlib.sha1()
    for n in sorted(names):
        f = getattr(sys.modules.get(n), "__file__", None)
        if f:
            h.update(n.encode() + Path(f).read_bytes())
    return h.hexdigest()[:12]


def _state_key(tag: str, numbers, positions, charge: int, multiplicity: int) -> str:
    import hashlib

    h = hashlib.sha1(tag.encode() + np.asarray(numbers, np.int64).tobytes()
                     + np.ascontiguousarray(positions, np.float64).tobytes()
                     + np.asarray([charge, multiplicity], np.int64).tobytes())
    return h.hexdigest()


def base_cache_path(name: str, precision: str) -> Path:
    """Default cache of a base model's predictions on labelled states:
    ``<phai cache>/aimnet_me_base/<name>-<precision>.npz`` (a folder base: its absolute path, hashed)."""
    import hashlib

    from ..pretrained.store import cache_dir

    tag = str(name)
    if Path(tag).is_dir():
        tag = "folder-" + hashlib.sha1(str(Path(tag).resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "aimnet_me_base" / f"{tag}-{precision}.npz"


def base_state_predictions(cs: ChargeSet, base, cache=None, tag: str | None = None,
                           progress=None) -> tuple[np.ndarray, list]:
    """``(E [C] eV, F: C arrays [A, 3] eV/Å)``: a charge-aware model's energies and forces on every
    state of ``cs`` (its charge and multiplicity; a model without a spin input only checks the
    multiplicity).

    ``cache``: an ``.npz`` file of earlier predictions, keyed by the :func:`code_fingerprint` of
    ``base`` and a hash of ``tag`` (default the model's name and precision, and its fitted
    charge terms if it has any), the atomic numbers, the positions (their exact float64 bits:
    positions that differ at all, e.g. the same geometry rounded by a text format, are
    different states), the charge and the multiplicity; states not in it are evaluated and the
    file is rewritten atomically, without the entries of other code versions and keeping the
    predictions of only the :data:`BASE_CACHE_TERM_TABLES` most recently written charge-term
    tables (a tag with ``/terms-``). Each label is evaluated once however many runs (folds,
    seeds) use it. Two processes writing one file lose entries, never correctness: a cache.
    """
    got = _base_states(cs, base, cache, tag, progress)
    return np.asarray([g["e"] for g in got], np.float64), [g["f"] for g in got]


def base_state_charges(cs: ChargeSet, base, cache=None, tag: str | None = None,
                       progress=None) -> tuple[list, list]:
    """``(q, q2)``: per state, ``[A]`` arrays of a charge-aware base ensemble's atomic charges
    (member mean, e) and of the member mean of the squared charges (e²), cached with
    :func:`base_state_predictions` (same keys). The inputs of :func:`fit_base_charge_terms`."""
    got = _base_states(cs, base, cache, tag, progress)
    return [g["q"] for g in got], [g["q2"] for g in got]


def _base_tag(base) -> str:
    import hashlib

    tag = f"{getattr(base, 'name', type(base).__name__)}/{getattr(base, 'precision', None)}"
    terms = getattr(base, "charge_terms", None)
    if terms:
        tag += "/terms-" + hashlib.sha1(json.dumps(terms, sort_keys=True).encode()).hexdigest()[:16]
    return tag


def _base_states(cs: ChargeSet, base, cache, tag, progress) -> list[dict]:
    """Per state ``{"e", "f", "q", "q2"}`` of ``base`` (see :func:`base_state_predictions`)."""
    import hashlib

    from ..atomic import atomic_output

    tag = tag or _base_tag(base)
    version = code_fingerprint(base) + "-"
    # "t" + 12 hex digits for a tag with fitted terms (capped, see BASE_CACHE_TERM_TABLES), "p" else
    tag_id = ("t" if "/terms-" in tag else "p") + hashlib.sha1(tag.encode()).hexdigest()[:12]
    keys = [version + tag_id + "-" + _state_key(tag, cs.numbers[k], cs.positions[k], int(cs.charge[k]),
                                                int(cs.multiplicity[k]))
            for k in range(len(cs))]
    fields = ("e", "f", "q", "q2")
    stored, order = _read_base_cache(cache, version)
    missing = [k for k in range(len(cs)) if any(f"{keys[k]}/{x}" not in stored for x in fields)]
    for n, k in enumerate(missing):
        r = base(cs.numbers[k], cs.positions[k], charge=int(cs.charge[k]), multiplicity=int(cs.multiplicity[k]))
        q = np.asarray(getattr(r, "charges", None) if getattr(r, "charges", None) is not None
                       else np.full(len(cs.numbers[k]), np.nan), np.float64)
        std = getattr(r, "charges_std", None)
        m = int(getattr(base, "members", 1))
        # member mean of q^2 from the mean and the (ddof 1) spread: exact for an ensemble of m members
        q2 = q * q + (0.0 if std is None or m < 2 else np.asarray(std, np.float64) ** 2 * (m - 1) / m)
        stored[keys[k] + "/e"] = np.asarray(r.energy, np.float64)
        stored[keys[k] + "/f"] = np.asarray(r.forces, np.float64)
        stored[keys[k] + "/q"] = q
        stored[keys[k] + "/q2"] = np.asarray(q2, np.float64)
        if progress is not None and (n + 1) % 100 == 0:
            progress(f"base model: {n + 1}/{len(missing)} states")
    got = [{x: stored[f"{key}/{x}"] for x in fields} for key in keys]
    if missing and cache is not None:
        if tag_id.startswith("t"):
            order = [t for t in order if t != tag_id] + [tag_id]
        order = order[-BASE_CACHE_TERM_TABLES:]
        keep = set(order)
        n = len(version)
        out = {k: v for k, v in stored.items() if k[n] == "p" or k[n:n + 13] in keep}
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **out, **{_TERM_ORDER: np.asarray(order, dtype="U13")})
        _remember_base_cache(cache, version, out, order)
    return got


# the last read or written content of each cache file, by path: reused while the file's size and
# modification time are unchanged (one Δ run reads its cache several times: every set, then charges)
_BASE_CACHE_MEMO: dict = {}


def _cache_signature(path: Path):
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _read_base_cache(cache, version: str) -> tuple[dict, list]:
    """``(entries of this code version, term-tag order)`` of a base cache file (empty if none)."""
    if cache is None or not Path(cache).is_file():
        return {}, []
    path = Path(cache).resolve()
    sig = _cache_signature(path)
    hit = _BASE_CACHE_MEMO.get(str(path))
    if hit is not None and hit[0] == sig and hit[1] == version:
        return dict(hit[2]), list(hit[3])
    with np.load(path, allow_pickle=False) as f:
        stored = {k: f[k] for k in f.files if k.startswith(version)}
        order = [str(t) for t in f[_TERM_ORDER]] if _TERM_ORDER in f.files else []
    _BASE_CACHE_MEMO[str(path)] = (sig, version, dict(stored), list(order))
    return stored, order


def _remember_base_cache(cache, version: str, stored: dict, order: list) -> None:
    path = Path(cache).resolve()
    _BASE_CACHE_MEMO[str(path)] = (_cache_signature(path), version, dict(stored), list(order))


def fit_base_charge_terms(sets: list, q_sets: list, elements, ridge: float = 1e-6,
                          diffuse: dict | None = None, diffuse_kinds=((-1, "odd"),)) -> list[dict]:
    """Least squares of a Δ residual on the base model's own atomic charges: for the states of
    ``sets`` (:class:`ChargeSet` whose ``energy`` is already ``E - E_base``, eV) and their base
    charges ``q_sets`` (per set, the ``(q, q2)`` of :func:`base_state_charges`),

    ``E - E_base ~ counts . s + c_kind + sum_Z (a_{kind,Z} sum_{i in Z} q_i + b_{kind,Z} sum_{i in Z} q_i^2)``

    with one ``kind`` per total charge and electron parity (:func:`state_kind`; the offsets
    ``c_kind`` relative to the first neutral kind). A ridge of ``ridge`` times the mean diagonal
    of the normal matrix keeps rarely seen kinds finite. Returns the ``a, b`` tables in the
    form of :meth:`phai.models.aimnet2.AIMNet2.with_charge_terms` (elements absent from a kind:
    0). The offset of a charged kind is folded into its ``a`` (``a_Z + c / Q`` for every
    element: the base's charges sum to ``Q``), so the tables carry the fitted mean IP and EA
    shifts themselves; ``s`` and the neutral kinds' offsets are not returned (the Δ model's own
    self energies refit them).

    ``diffuse``: optionally ``{Z: exponent bohr^-2}`` of the labels' diffuse s functions (e.g.
    :data:`phai.physics.diffuse.DIFFUSE_S_631PLUS` for 6-31+G(d) labels): each kind of
    ``diffuse_kinds`` (default the anions of closed-shell molecules, charge -1 with an odd
    electron count) gets one more column, ``d_kind`` times the kinetic energy of the most
    diffuse orbital of those functions (:func:`phai.physics.diffuse.diffuse_orbital_energy`),
    returned as ``"diffuse": d`` and ``"diffuse_alpha"`` (per element) in that kind's table.

    Why: the base's ions carry errors a sum of atomic terms cannot represent (a vertical IP is
    intensive), but its charges say where the hole or the extra electron sits; an
    electronegativity and hardness shift per element in those charges (a charge-equilibration
    energy) corrects them. On the 254-molecule set it lifts the no-network floor's χ, η, ω R²
    (benchmarks/README.md). The anions of closed-shell molecules are mostly unbound at the
    labels' level; their extra electron sits in whatever diffuse functions the basis offers,
    an energy the diffuse term models (:mod:`phai.physics.diffuse`).
    """
    elements = [int(z) for z in elements]
    rows_n, rows_kind, rows_q, rows_q2, y = [], [], [], [], []
    for cs, (qs, q2s) in zip(sets, q_sets):
        for k in range(len(cs)):
            z = np.asarray(cs.numbers[k])
            rows_n.append([np.sum(z == e) for e in elements])
            rows_kind.append(state_kind(z, cs.charge[k]))
            rows_q.append([np.sum(np.asarray(qs[k])[z == e]) for e in elements])
            rows_q2.append([np.sum(np.asarray(q2s[k])[z == e]) for e in elements])
            y.append(float(cs.energy[k]))
    if not y:
        raise InputError("no states to fit charge terms on")
    if not np.all(np.isfinite(rows_q)):
        raise InputError("the base model gives no atomic charges: charge terms need a base such as AIMNet2")
    kinds = sorted(set(rows_kind), key=lambda t: (t[0], t[1]))
    dkinds = [t for t in kinds if diffuse is not None and t in {(int(q), str(p)) for q, p in diffuse_kinds}]
    alpha_of, eps = None, None
    if dkinds:
        from ..physics.diffuse import diffuse_exponents, diffuse_state_energies

        alpha_of = diffuse_exponents(elements, diffuse)
        eps = np.concatenate([diffuse_state_energies(cs.numbers, cs.positions, diffuse,
                                                     [state_kind(z, c) in dkinds for z, c in zip(cs.numbers, cs.charge)])
                              for cs in sets])
    neutral = [t for t in kinds if t[0] == 0]
    offsets = [t for t in kinds if not neutral or t != neutral[0]]
    kind_of = np.asarray([kinds.index(t) for t in rows_kind])
    E = len(elements)
    cols = [np.asarray(rows_n, float)]
    cols.append(np.stack([kind_of == kinds.index(t) for t in offsets], axis=1).astype(float) if offsets
                else np.zeros((len(y), 0)))
    for t in range(len(kinds)):
        on = (kind_of == t)[:, None]
        cols += [np.asarray(rows_q) * on, np.asarray(rows_q2) * on]
    for t in dkinds:
        cols.append((np.asarray(eps) * (kind_of == kinds.index(t)))[:, None])
    A = np.concatenate(cols, axis=1)
    keep = np.flatnonzero(np.abs(A).sum(axis=0) > 0)
    ata = A[:, keep].T @ A[:, keep]
    coef = np.zeros(A.shape[1])
    coef[keep] = np.linalg.solve(ata + ridge * np.trace(ata) / len(keep) * np.eye(len(keep)),
                                 A[:, keep].T @ np.asarray(y))
    start = E + len(offsets)
    out = []
    for t, (q, parity) in enumerate(kinds):
        c = coef[start + 2 * E * t: start + 2 * E * (t + 1)]
        shift = coef[E + offsets.index((q, parity))] / q if q != 0 and (q, parity) in offsets else 0.0
        out.append({"charge": q, "electrons": parity, "elements": elements,
                    "a": [float(x + shift) for x in c[:E]], "b": [float(x) for x in c[E:]]})
        if (q, parity) in dkinds:
            out[-1]["diffuse"] = float(coef[start + 2 * E * len(kinds) + dkinds.index((q, parity))])
            out[-1]["diffuse_alpha"] = [float(x) for x in alpha_of]
    return out


def subtract_base(cs: ChargeSet, base, cache=None, tag: str | None = None) -> ChargeSet:
    """``cs`` with energies ``E - E_base`` (eV) and forces ``F - F_base`` (eV/Å) of the same
    states (:func:`base_state_predictions`): the targets of a Δ model on top of ``base``. The
    atomic charges stay the labels' own (the Δ model predicts charges, not charge corrections)."""
    e, f = base_state_predictions(cs, base, cache, tag)
    out = cs.subset(np.arange(len(cs)))
    out.energy = cs.energy - e
    if cs.forces is not None:
        out.forces = [a - b for a, b in zip(cs.forces, f)]
    return out


def _unit_factor(ds, default: str) -> float:
    u = ds.attrs.get("units", default)
    u = u.decode() if isinstance(u, bytes) else str(u)
    u = u.lower().replace("angstrom", "a").replace("å", "a").replace(" ", "")
    if u in ("hartree", "ha", "hartree/a", "ha/a"):
        return HARTREE_TO_EV
    if u in ("ev", "ev/a"):
        return 1.0
    raise InputError(f"{ds.name}: unknown units {u!r}")


# ------------------------------------------------------------------------------ padding
@dataclasses.dataclass
class Padded:
    """A :class:`ChargeSet` padded to one shape ``[C, N, ...]`` (NumPy; see :func:`pad_set`)."""

    R: np.ndarray           # [C, N, 3] Å
    species: np.ndarray     # [C, N] int32
    neighbors: np.ndarray   # [C, N, K] int32, sentinel N
    atom_mask: np.ndarray   # [C, N] bool
    charge: np.ndarray      # [C] int32
    multiplicity: np.ndarray  # [C] int32
    state: np.ndarray       # [C] int32 index into charge_states
    num_atoms: np.ndarray   # [C] int32
    E: np.ndarray           # [C] eV, self energies subtracted
    F: np.ndarray           # [C, N, 3] eV/Å (0 without forces)
    qa: np.ndarray          # [C, N] e
    qb: np.ndarray          # [C, N] e
    geometry: np.ndarray    # [C] int32 geometry group (the states of one geometry share it)
    x: np.ndarray           # [C, N, P] per-atom model inputs (AIMNetConfig.atom_inputs; P = 0: none)

    def take(self, idx) -> dict:
        return {k: v[idx] for k, v in dataclasses.asdict(self).items()}


def element_counts(numbers: list, elements) -> np.ndarray:
    """``[C, S]`` count of each element of ``elements`` per structure."""
    pos = {z: s for s, z in enumerate(elements)}
    out = np.zeros((len(numbers), len(elements)))
    for k, z in enumerate(numbers):
        for x in z:
            out[k, pos[int(x)]] += 1
    return out


def fit_self_energies(cs: ChargeSet, elements, charge_states, max_multiplicity: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(sae [S] eV, state_shift)``: least squares of ``E ~ counts . sae + c_state`` over the
    states of ``cs`` (see the module docstring for why a per-state offset).

    ``max_multiplicity`` None: one offset per charge, ``state_shift [len(charge_states)]``,
    ``c_0 = 0``. Else one per charge *and* multiplicity, ``state_shift [len(charge_states),
    max_multiplicity]`` (``[q, M - 1]``), zero for the neutral of the lowest multiplicity
    present: a radical's cation (a singlet) then gets its own offset, apart from a closed-shell
    molecule's cation (a doublet), so the offsets carry the mean vertical IP and EA of each kind.
    Cells without training states get the mean of their charge's fitted cells (0 if none).
    """
    X = element_counts(cs.numbers, elements)
    qs = list(charge_states)
    if max_multiplicity is None:
        cells = [(q, None) for q in qs if q != 0]
        hit = [(cs.charge == q) for q, _ in cells]
    else:
        seen = sorted({(int(q), int(m)) for q, m in zip(cs.charge, cs.multiplicity)})
        neutral = [c for c in seen if c[0] == 0]
        cells = [c for c in seen if not neutral or c != neutral[0]]
        hit = [(cs.charge == q) & (cs.multiplicity == m) for q, m in cells]
    onehot = np.stack(hit, axis=1).astype(float) if cells else np.zeros((len(cs), 0))
    A = np.concatenate([X, onehot], axis=1)
    keep = np.flatnonzero(A.any(axis=0))
    coef = np.zeros(A.shape[1])
    coef[keep] = np.linalg.lstsq(A[:, keep], cs.energy, rcond=None)[0]
    if max_multiplicity is None:
        shift = np.zeros(len(qs))
        for c, (q, _) in zip(coef[len(elements):], cells):
            shift[qs.index(q)] = c
        return coef[:len(elements)], shift
    shift = np.full((len(qs), max_multiplicity), np.nan)
    if neutral:
        shift[qs.index(0), neutral[0][1] - 1] = 0.0
    for c, (q, m) in zip(coef[len(elements):], cells):
        if q in qs and m <= max_multiplicity:
            shift[qs.index(q), m - 1] = c
    for k in range(len(qs)):
        row = shift[k]
        row[np.isnan(row)] = np.nanmean(row) if np.isfinite(row).any() else 0.0
    return coef[:len(elements)], shift


def reference_energy(numbers: list, charge, elements, charge_states, sae, state_shift, multiplicity=None) -> np.ndarray:
    """``[C]`` eV: ``counts . sae + c_state`` (float64); ``state_shift`` per charge ``[len(charge_states)]``
    or per charge and multiplicity ``[len(charge_states), M_max]`` (then ``multiplicity [C]`` is needed)."""
    idx = np.asarray([list(charge_states).index(int(q)) for q in np.atleast_1d(charge)])
    shift = np.asarray(state_shift, np.float64)
    if shift.ndim == 2:
        if multiplicity is None:
            raise InputError("per-multiplicity state offsets need the multiplicities")
        m = np.clip(np.atleast_1d(np.asarray(multiplicity, np.int64)) - 1, 0, shift.shape[1] - 1)
        offset = shift[idx, m]
    else:
        offset = shift[idx]
    return element_counts(numbers, elements) @ np.asarray(sae) + offset


def pad_structure(numbers, positions, cfg: AIMNetConfig, n_slots: int, k_slots: int | None = None):
    """``(R [N,3], species [N], neighbors [N,K], mask [N])`` of one structure (NumPy).
    ``k_slots`` None: ``bucket`` of the largest neighbor count."""
    z = np.asarray(numbers)
    a = len(z)
    i, j, _ = neighbor_pairs(np.asarray(positions, np.float64), cfg.radial_cutoff)
    nb = dense_from_pairs(i, j, n_slots, k_slots)
    R = np.zeros((n_slots, 3))
    R[:a] = positions
    species = np.zeros(n_slots, np.int32)
    species[:a] = [cfg.elements.index(int(x)) for x in z]
    return R, species, nb, np.arange(n_slots) < a


def max_neighbors(cs: ChargeSet, cutoff: float) -> int:
    out = 0
    for r in cs.positions:
        i, _, _ = neighbor_pairs(r, cutoff)
        if len(i):
            out = max(out, int(np.bincount(i).max()))
    return out


def pad_set(cs: ChargeSet, cfg: AIMNetConfig, sae, state_shift, n_slots: int | None = None,
            k_slots: int | None = None, atom_inputs: list | None = None) -> Padded:
    """Pad every state of ``cs`` to ``[N, K]`` (default: buckets of the largest) and subtract
    the self energies. Checks elements, charges and multiplicities (:func:`check_state`).
    ``atom_inputs``: per state an ``[A, P]`` array (``P = cfg.atom_inputs``; required when
    ``P > 0``), e.g. a base model's atomic charges (:func:`base_state_charges`)."""
    for k in range(len(cs)):
        try:
            check_state(cfg, cs.numbers[k], int(cs.charge[k]), int(cs.multiplicity[k]))
        except InputError as exc:
            raise InputError(f"state {k} ({cs.molecule[k]}): {exc}") from None
    n_slots = n_slots or bucket(max(len(z) for z in cs.numbers))
    k_slots = k_slots or bucket(max(max_neighbors(cs, cfg.radial_cutoff), 1))
    c = len(cs)
    R = np.zeros((c, n_slots, 3))
    species = np.zeros((c, n_slots), np.int32)
    nb = np.zeros((c, n_slots, k_slots), np.int32)
    mask = np.zeros((c, n_slots), bool)
    F = np.zeros((c, n_slots, 3))
    qa = np.zeros((c, n_slots))
    qb = np.zeros((c, n_slots))
    p_in = cfg.atom_inputs
    if p_in and (atom_inputs is None or len(atom_inputs) != c):
        raise InputError(f"this model takes {p_in} per-atom input(s) per state: give atom_inputs for all {c} states")
    x = np.zeros((c, n_slots, p_in))
    for k in range(c):
        a = len(cs.numbers[k])
        R[k], species[k], nb[k], mask[k] = pad_structure(cs.numbers[k], cs.positions[k], cfg, n_slots, k_slots)
        if p_in:
            x[k, :a] = np.asarray(atom_inputs[k], np.float64).reshape(a, p_in)
        if cs.forces is not None:
            F[k, :a] = cs.forces[k]
        if cs.has_charges:
            qa[k, :a], qb[k, :a] = cs.q_alpha[k], cs.q_beta[k]
    E = cs.energy - reference_energy(cs.numbers, cs.charge, cfg.elements, cfg.charge_states, sae, state_shift,
                                     cs.multiplicity)
    state = np.asarray([cfg.charge_states.index(int(q)) for q in cs.charge], np.int32)
    geometry = np.unique(cs.geometry, return_inverse=True)[1].astype(np.int32)
    return Padded(R, species, nb, mask, cs.charge.astype(np.int32), cs.multiplicity.astype(np.int32), state,
                  np.asarray([len(z) for z in cs.numbers], np.int32), E, F, qa, qb, geometry, x)


# --------------------------------------------------------------------------------- loss
@dataclasses.dataclass
class MEConfig:
    """Settings of an AIMNet-ME run (plain data; saved in checkpoints and model folders).

    Attributes:
      model: the :class:`AIMNetConfig` as a dict (None: defaults with ``elements``).
      elements: atomic numbers the model covers (used when ``model`` is None).
      epochs, batch_size, seed, lr, weight_decay: AdamW (via :func:`phai.train.make_optimizer`).
      final_lr_fraction: cosine schedule end (``lr * final_lr_fraction``).
      energy_weight (1/eV²·atom), charge_weight ``w_q`` (1/e²), force_weight ``w_F`` (Å²/eV²):
        loss weights; forces enter only if the data have them and ``force_weight > 0``.
      diff_weight ``w_D`` (1/eV²): weight of the within-geometry state-difference term (the
        vertical IP and EA directly; module docstring); 0 leaves it out. With ``w_D > 0`` a
        batch holds whole geometries (all their states), ``batch_size`` states at most.
      spin_state_shifts: self-energy offsets per charge *and* multiplicity (:func:`fit_self_energies`)
        instead of per charge.
      train_eval_every: with a validation set, evaluate the whole training set only every this
        many epochs (and at the first and last; 0 never) to save time; model selection uses the
        validation loss (without one: the training loss, evaluated every epoch).
      valid_fraction: held-out molecules when no validation set is given.
      name: stored in the model folder.
      base: a charge-aware model (registry name such as ``"aimnet2-wb97m-d3"``, or a model
        folder) to learn on top of (Δ-learning, :func:`subtract_base`): the network and self
        energies fit ``E - E_base`` and ``F - F_base``; the charges stay the labels' own. None:
        from scratch.
      base_charge_terms: with a base (an AIMNet2): first fit an energy in the base's own
        atomic charges (:func:`fit_base_charge_terms`, least squares on all the states given,
        training and validation: the same for every seed, so the members of an ensemble share
        one corrected base), then learn on top of base + that term; the folder records the
        terms and ``phai.load`` rebuilds the corrected base
        (:meth:`phai.models.aimnet2.AIMNet2.with_charge_terms`).
      zero_energy_head: start the energy head's last layer at zero (kernel and bias), so that
        the untrained model is exactly its self energies (on a base: the Δ run's floor) and the
        network learns only the residual structure it finds; the default is flax's initializer.
        On phai's charge set it changed the held-out CDFT R² by less than 0.005 (benchmarks/README.md).
      base_diffuse_term: with ``base_charge_terms``: the fit also gets the diffuse-basis term
        of the anions of closed-shell molecules (``fit_base_charge_terms(diffuse=...)``) with
        the diffuse s exponents of the labels' basis: ``True`` for 6-31+G(d) (the basis of
        phai's charge labels, :data:`phai.physics.diffuse.DIFFUSE_S_631PLUS`), or the basis
        name (``"aug-cc-pVDZ"``, ``"ma-def2-SVP"``, ...; :func:`phai.physics.diffuse.diffuse_s_table`).
      base_charge_inputs: with a base: the network also reads the base's atomic charges of the
        same state (``AIMNetConfig.atom_inputs = 1``; the ensemble mean, e). The saved model
        then evaluates the base first and adds the chain-rule term of those charges to its forces
        (:class:`phai.models.aimnet_me.AIMNetMEPotential`).
        On phai's charge set it lowered the held-out charge MAE by 10-15 % and left the CDFT R²
        where they were (benchmarks/README.md).
    """

    model: dict | None = None
    elements: tuple = (1, 6, 7, 8)
    epochs: int = 100
    batch_size: int = 32
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-5
    final_lr_fraction: float = 0.02
    energy_weight: float = 1.0
    charge_weight: float = 10.0
    force_weight: float = 0.1
    diff_weight: float = 0.0
    spin_state_shifts: bool = False
    train_eval_every: int = 1
    valid_fraction: float = 0.1
    name: str = "aimnet-me"
    base: str | None = None
    base_charge_terms: bool = False
    base_diffuse_term: bool | str = False
    zero_energy_head: bool = False
    base_charge_inputs: bool = False

    def aimnet_config(self) -> AIMNetConfig:
        d = dict(self.model or {"elements": tuple(self.elements)})
        if self.base_charge_inputs:
            d["atom_inputs"] = 1
        return AIMNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = config_to_json(self.aimnet_config())
        d["elements"] = list(self.elements)
        if d["base"] is None:   # from scratch: the settings as before the option existed (old checkpoints resume)
            del d["base"]
        if not d["base_charge_terms"]:
            del d["base_charge_terms"]
        if not d["base_diffuse_term"]:
            del d["base_diffuse_term"]
        for k in ("zero_energy_head", "base_charge_inputs"):   # off: as before the options (old checkpoints resume)
            if not d[k]:
                del d[k]
        return d


def config_to_json(cfg: AIMNetConfig) -> dict:
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    if not d["atom_inputs"]:   # as before the field existed (old checkpoints resume, old folders compare equal)
        del d["atom_inputs"]
    return d


def config_from_json(d: dict) -> AIMNetConfig:
    return AIMNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def make_loss_fn(model: AIMNet, num_states: int, *, energy_weight: float, charge_weight: float,
                 force_weight: float, use_forces: bool, use_charges: bool, diff_weight: float = 0.0):
    """``loss(params, batch) -> (total, aux)``; ``batch`` is :meth:`Padded.take` plus ``mol_mask [B]``
    and ``partner [B]`` (int: the batch position of the neutral state of the same geometry,
    or the state's own position when there is none).

    ``aux``: sums over the batch's real molecules of squared/absolute energy errors (eV),
    squared charge errors (e², per atom), squared force errors; per-state energy sums and
    counts (``[num_states]``)."""

    def one(params, R, species, nb, mask, Q, M, x):
        def energy(r):
            out = model.apply(params, r, species, nb, mask, Q, M, x if model.cfg.atom_inputs else None)
            return out["energy"], out

        if use_forces:
            (e, out), g = jax.value_and_grad(energy, has_aux=True)(R)
            return e, out["charges_alpha"], out["charges_beta"], -g
        e, out = energy(R)
        return e, out["charges_alpha"], out["charges_beta"], jnp.zeros_like(R)

    def loss(params, b):
        e, qa, qb, f = jax.vmap(one, (None, 0, 0, 0, 0, 0, 0, 0))(params, b["R"], b["species"], b["neighbors"],
                                                                   b["atom_mask"], b["charge"], b["multiplicity"],
                                                                   b["x"])
        mm = b["mol_mask"].astype(e.dtype)
        am = b["atom_mask"].astype(e.dtype)
        n = jnp.maximum(b["num_atoms"].astype(e.dtype), 1.0)
        de = (e - b["E"]) * mm
        sq_q = jnp.sum(((qa - b["qa"]) ** 2 + (qb - b["qb"]) ** 2) * am, axis=1) * mm
        sq_f = jnp.sum(jnp.sum((f - b["F"]) ** 2, axis=-1) * am, axis=1) * mm
        per_mol = energy_weight * de * de / n
        if use_charges:
            per_mol = per_mol + charge_weight * sq_q / n
        if use_forces:
            per_mol = per_mol + force_weight * sq_f / (3.0 * n)
        onehot = jax.nn.one_hot(b["state"], num_states, dtype=e.dtype) * mm[:, None]   # [B, S]
        counts = jnp.sum(onehot, axis=0)
        per_state = jnp.sum(onehot * per_mol[:, None], axis=0) / jnp.maximum(counts, 1.0)
        present = (counts > 0).astype(e.dtype)
        total = jnp.sum(per_state * present) / jnp.maximum(jnp.sum(present), 1.0)
        p = b["partner"]
        pm = mm * mm[p] * (p != jnp.arange(p.shape[0])).astype(e.dtype)
        dd = ((e - e[p]) - (b["E"] - b["E"][p])) * pm          # IP / EA error of charged states, eV
        if diff_weight:
            total = total + diff_weight * jnp.sum(dd * dd) / jnp.maximum(jnp.sum(pm), 1.0)
        aux = {"d_sq": jnp.sum(dd * dd), "d_count": jnp.sum(pm), "e_sq": jnp.sum(de * de), "e_abs": jnp.sum(jnp.abs(de)), "q_sq": jnp.sum(sq_q),
               "f_sq": jnp.sum(sq_f), "count": jnp.sum(mm), "atoms": jnp.sum(am * mm[:, None]),
               "state_sq": jnp.sum(onehot * (de * de)[:, None], axis=0), "state_count": counts}
        return total, aux

    return loss


def predict_fn(model: AIMNet):
    """Jitted ``(params, R, species, nb, mask, Q, M, x) -> (energy, forces, q_alpha, q_beta, dE/dx)``
    over a leading batch axis (network energies, eV; self energies not included; :func:`state_outputs`)."""
    return jax.jit(jax.vmap(functools.partial(state_outputs, model), (None, 0, 0, 0, 0, 0, 0, 0)))


# ------------------------------------------------------------------------------ trainer
def zero_last_layer(params: dict, module: str) -> dict:
    """A copy of ``params`` (flax, ``{"params": {...}}``) with the last ``Dense_k`` layer (highest
    ``k``) of the MLP ``module`` set to zero, kernel and bias."""
    p = jax.tree_util.tree_map(lambda x: x, params)     # new containers, same leaves
    head = p["params"][module]
    last = max((k for k in head if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
    head[last] = {k: jnp.zeros_like(v) for k, v in head[last].items()}
    return p


def flatten_flax(params, prefix: str = "") -> dict[str, np.ndarray]:
    """Flax params -> ``{prefix + "params/embed/Dense_0/kernel": array}``."""
    return {prefix + k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def unflatten_flax(arrays: dict, prefix: str = "") -> dict:
    flat = {k[len(prefix):]: jnp.asarray(v) for k, v in arrays.items() if k.startswith(prefix + "params/")}
    return traverse_util.unflatten_dict(flat, sep="/")


def _batch_plan(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[s:s + batch_size] for s in range(0, n, batch_size)]


def _group_plan(groups: np.ndarray, batch_size: int, seed: int | None, epoch: int) -> list[np.ndarray]:
    """Batches of whole groups (the states of one geometry), at most ``batch_size`` states each
    (a larger group gets a batch of its own, cut to ``batch_size``); groups in the order of
    ``default_rng([seed, epoch]).permutation`` (``seed`` None: in order)."""
    ids, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(ids))]
    order = np.arange(len(ids)) if seed is None else np.random.default_rng([seed, epoch]).permutation(len(ids))
    out, cur = [], []
    for g in order:
        if cur and len(cur) + len(members[g]) > batch_size:
            out.append(np.asarray(cur, np.int64))
            cur = []
        cur.extend(members[g][:batch_size].tolist())
    if cur:
        out.append(np.asarray(cur, np.int64))
    return out


def partners(geometry: np.ndarray, charge: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[B]`` int: for each slot, the slot of the neutral (``charge == 0``) real state of the
    same geometry, or its own slot when there is none (or it is neutral or padding)."""
    out = np.arange(len(geometry))
    for s in np.flatnonzero(mask & (charge != 0)):
        hit = np.flatnonzero(mask & (charge == 0) & (geometry == geometry[s]))
        if len(hit):
            out[s] = hit[0]
    return out


def _pad_index(idx: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(size, bool)
    mask[:len(idx)] = True
    out = np.zeros(size, np.int64)
    out[:len(idx)] = idx
    if len(idx):
        out[len(idx):] = idx[0]
    return out, mask


@functools.lru_cache(maxsize=8)
def _programs(key: str):
    """``(tx, loss_fn, step, eval)`` for one architecture and loss/optimizer settings (JSON
    ``key``), shared by trainers with the same settings so that each compiles once."""
    import optax

    from .trainer import TrainConfig, make_optimizer

    d = json.loads(key)
    cfg = config_from_json(d["model"])
    loss_fn = make_loss_fn(AIMNet(cfg), len(cfg.charge_states), energy_weight=d["we"], charge_weight=d["wq"],
                           force_weight=d["wf"], use_forces=d["forces"], use_charges=d["charges"],
                           diff_weight=d["wd_diff"])
    tx = make_optimizer(TrainConfig(lr=d["lr"], weight_decay=d["wd"], optimizer="adamw", members=1), {})

    def step(params, opt_state, batch):
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux

    return tx, loss_fn, jax.jit(step), jax.jit(loss_fn)


class AIMNetMETrainer:
    """Fits an AIMNet-ME model to a :class:`ChargeSet` (see the module docstring).

    Args:
      config: :class:`MEConfig`.
      train, valid: :class:`ChargeSet`; ``valid`` None holds out ``valid_fraction`` of the
        training molecules.
      out_dir: output folder (model files, ``checkpoint/``, metrics), or None (in memory).
      resume: continue from ``out_dir/checkpoint`` if it exists.
    """

    def __init__(self, config: MEConfig, train: ChargeSet, valid: ChargeSet | None = None, out_dir=None,
                 resume: bool = True):
        self.config = config
        self.cfg = config.aimnet_config()
        if not self.cfg.charge_spin:
            raise InputError("AIMNet-ME training needs charge_spin=True")
        given = [train] + ([valid] if valid is not None and len(valid) else [])
        if config.base_charge_terms and config.base is None:
            raise InputError("base_charge_terms corrects a base model: set base too (e.g. 'aimnet2-b973c')")
        if config.base_diffuse_term and not config.base_charge_terms:
            raise InputError("base_diffuse_term is part of the charge-term fit: set base_charge_terms too")
        if config.base_charge_inputs and config.base is None:
            raise InputError("base_charge_inputs gives the network a base model's charges: set base too")
        if valid is None and config.valid_fraction > 0:
            train, valid = train.split_by_molecule((1 - config.valid_fraction, config.valid_fraction), config.seed)
        if len(train) == 0:
            raise InputError("no training states")
        # the labels as given (before a Δ run subtracts its base): a checkpoint resumes only on these
        self.data_fingerprint = train.fingerprint() + "-" + (valid.fingerprint() if valid is not None and len(valid)
                                                             else "none")
        self.base_record = None
        inputs = {"train": None, "valid": None}
        if config.base is not None:   # Δ-learning: fit E - E_base (the base's predictions cached per state)
            from .delta import delta_record

            base = load_base(config.base, BASE_PRECISION)
            cache = base_cache_path(config.base, BASE_PRECISION)
            if config.base_charge_inputs:   # the network's per-atom inputs: the base's charges of each state
                if not getattr(base, "charges_vjp", None):
                    raise InputError(f"base_charge_inputs needs a base with differentiable atomic charges "
                                     f"(an AIMNet2), not {config.base!r}")
                inputs = {k: [q[:, None] for q in base_state_charges(g, base, cache)[0]]
                          if g is not None and len(g) else None for k, g in (("train", train), ("valid", valid))}
            terms = None
            if config.base_charge_terms:   # an energy in the base's own charges, fitted first (all given states)
                if not hasattr(base, "with_charge_terms"):
                    raise InputError(f"base_charge_terms needs an AIMNet2 base, not {config.base!r}")
                from ..physics.diffuse import diffuse_s_table

                basis = config.base_diffuse_term
                diffuse = (diffuse_s_table("6-31+G(d)" if basis is True else str(basis)) if basis else None)
                terms = fit_base_charge_terms([subtract_base(g, base, cache) for g in given],
                                              [base_state_charges(g, base, cache) for g in given], self.cfg.elements,
                                              diffuse=diffuse)
                base = base.with_charge_terms(terms)
            train = subtract_base(train, base, cache)
            valid = subtract_base(valid, base, cache) if valid is not None and len(valid) else valid
            self.base_record = delta_record(config.base, target="the labels' energies and forces")
            if terms is not None:
                self.base_record["charge_terms"] = terms
            if config.base_charge_inputs:
                self.base_record["atom_inputs"] = "base_charges"
        self.train_set, self.valid_set = train, (valid if valid is not None and len(valid) else None)
        self.sae, self.state_shift = fit_self_energies(train, self.cfg.elements, self.cfg.charge_states,
                                                       self.cfg.max_multiplicity if config.spin_state_shifts else None)
        sets = [train] + ([self.valid_set] if self.valid_set is not None else [])
        n_slots = bucket(max(len(z) for s in sets for z in s.numbers))
        k_slots = bucket(max(max(max_neighbors(s, self.cfg.radial_cutoff) for s in sets), 1))
        self.shape = (n_slots, k_slots)
        self.train_pad = pad_set(train, self.cfg, self.sae, self.state_shift, n_slots, k_slots, inputs["train"])
        self.valid_pad = (pad_set(self.valid_set, self.cfg, self.sae, self.state_shift, n_slots, k_slots,
                                  inputs["valid"]) if self.valid_set is not None else None)
        self.use_forces = train.forces is not None and config.force_weight > 0
        self.use_charges = train.has_charges and config.charge_weight > 0
        self.model = AIMNet(self.cfg)
        self.dtype = jnp.float32
        """Working dtype of the batches (float32; float64 inside ``jax.enable_x64`` for checks)."""
        self.batch_size = min(config.batch_size, len(train))
        tp = self.train_pad
        self.params = self.model.init(jax.random.PRNGKey(config.seed), jnp.asarray(tp.R[0], jnp.float32),
                                      jnp.asarray(tp.species[0]), jnp.asarray(tp.neighbors[0]),
                                      jnp.asarray(tp.atom_mask[0]), 0, 1,
                                      jnp.asarray(tp.x[0], jnp.float32) if self.cfg.atom_inputs else None)
        if config.zero_energy_head:
            self.params = zero_last_layer(self.params, "energy_head")
        key = json.dumps({"model": config_to_json(self.cfg), "lr": config.lr, "wd": config.weight_decay,
                          "we": config.energy_weight, "wq": config.charge_weight, "wf": config.force_weight,
                          "wd_diff": config.diff_weight,
                          "forces": self.use_forces, "charges": self.use_charges}, sort_keys=True)
        self.tx, self.loss_fn, self._step, self._eval = _programs(key)
        self.opt_state = self.tx.init(self.params)
        self.best_params = self.params
        self.best_loss = math.inf
        self.epoch = 0
        self.step_count = 0
        self.history: list[dict] = []
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if resume and (self.out_dir / "checkpoint" / "config.json").is_file():
                self.restore(self.out_dir / "checkpoint")

    # -- steps
    def batch(self, pad: Padded, idx) -> dict:
        idx, mask = _pad_index(np.asarray(idx), self.batch_size)
        b = pad.take(idx)
        b["partner"] = partners(b["geometry"], b["charge"], mask).astype(np.int32)
        b = {k: jnp.asarray(v, self.dtype) if np.asarray(v).dtype == np.float64 else jnp.asarray(v)
             for k, v in b.items()}
        b["mol_mask"] = jnp.asarray(mask)
        return b

    def plan(self, pad: Padded, epoch: int | None = None) -> list[np.ndarray]:
        """Batches of ``pad`` for ``epoch`` (shuffled), or in order for evaluation (None). With
        ``diff_weight > 0`` or for evaluation, whole geometries per batch (:func:`_group_plan`)."""
        c = self.config
        if epoch is None:
            return _group_plan(pad.geometry, self.batch_size, None, 0)
        if c.diff_weight > 0:
            return _group_plan(pad.geometry, self.batch_size, c.seed, epoch)
        return _batch_plan(len(pad.E), self.batch_size, c.seed, epoch)

    def learning_rate(self, epoch: int) -> float:
        c = self.config
        t = min(epoch / max(c.epochs, 1), 1.0)
        return c.lr * (c.final_lr_fraction + (1 - c.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t)))

    def evaluate(self, pad: Padded, params=None) -> dict:
        """Loss and errors over a padded set: ``loss``, ``energy_rmse``/``energy_mae`` (kcal/mol),
        ``charge_rmse`` (e, per spin-resolved atomic charge), ``force_rmse`` (eV/Å),
        ``energy_rmse_q{Q}`` per charge state, ``diff_rmse_ev`` (eV, the IP/EA errors of the
        charged states whose neutral is in the set)."""
        params = self.params if params is None else params
        tot = {}
        loss_sum, nb = 0.0, 0
        for idx in self.plan(pad):
            loss, aux = self._eval(params, self.batch(pad, idx))
            loss_sum += float(loss) * len(idx)
            nb += len(idx)
            for k, v in aux.items():
                tot[k] = tot.get(k, 0.0) + np.asarray(v, np.float64)
        n = tot["count"]
        out = {"loss": loss_sum / nb, "energy_rmse": float(np.sqrt(tot["e_sq"] / n)) * EV_TO_KCALMOL,
               "energy_mae": float(tot["e_abs"] / n) * EV_TO_KCALMOL,
               "charge_rmse": float(np.sqrt(tot["q_sq"] / (2 * tot["atoms"]))),
               "force_rmse": float(np.sqrt(tot["f_sq"] / (3 * tot["atoms"])))}
        if tot["d_count"] > 0:
            out["diff_rmse_ev"] = float(np.sqrt(tot["d_sq"] / tot["d_count"]))
        for q, sq, c in zip(self.cfg.charge_states, tot["state_sq"], tot["state_count"]):
            if c > 0:
                out[f"energy_rmse_q{q:+d}"] = float(np.sqrt(sq / c)) * EV_TO_KCALMOL
        return out

    def fit(self, callback=None) -> list[dict]:
        """Train to ``config.epochs`` (from the restored epoch); returns the history."""
        c = self.config
        while self.epoch < c.epochs:
            t0 = time.perf_counter()
            lr = self.learning_rate(self.epoch)
            self.opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
            sums, count = 0.0, 0
            for idx in self.plan(self.train_pad, self.epoch):
                self.params, self.opt_state, aux = self._step(self.params, self.opt_state,
                                                              self.batch(self.train_pad, idx))
                sums += float(aux["e_sq"])
                count += len(idx)
                self.step_count += 1
            row = {"epoch": self.epoch + 1, "step": self.step_count, "lr": lr,
                   "train_energy_rmse_running": float(np.sqrt(sums / count)) * EV_TO_KCALMOL}
            last = self.epoch + 1 == c.epochs
            if self.valid_pad is None or (c.train_eval_every and ((self.epoch + 1) % c.train_eval_every == 0
                                                                 or last or self.epoch == 0)):
                tr = self.evaluate(self.train_pad)
                row.update({f"train_{k}": v for k, v in tr.items()})
            else:
                tr = None
            if self.valid_pad is not None:
                va = self.evaluate(self.valid_pad)
                row.update({f"val_{k}": v for k, v in va.items()})
                score = va["loss"]
            else:
                score = tr["loss"]
            if score < self.best_loss:
                self.best_loss, self.best_params = score, self.params
                row["best"] = True
            row["seconds"] = time.perf_counter() - t0
            self.history.append(row)
            self.epoch += 1
            if self.out_dir is not None:
                self.save_checkpoint()
                self.write_logs()
            if callback is not None:
                callback(row)
        if self.out_dir is not None:
            self.save_model(self.out_dir)
        return self.history

    # -- persistence
    def model_arrays(self, best: bool = True) -> dict:
        arrays = flatten_flax(self.best_params if best else self.params)
        arrays["sae"] = np.asarray(self.sae, np.float64)
        arrays["state_shift"] = np.asarray(self.state_shift, np.float64)
        return arrays

    def model_config(self) -> dict:
        out = {"kind": KIND, "name": self.config.name,
               "description": f"AIMNet-ME trained by phai ({len(self.train_set)} states)",
               "aimnet": config_to_json(self.cfg), "energy_unit": "eV"}
        if self.base_record is not None:
            out["delta"] = self.base_record
            out["description"] = f"{self.config.base} + Δ AIMNet-ME trained by phai ({len(self.train_set)} states)"
        return out

    def save_model(self, folder, best: bool = True) -> Path:
        """Write the model files (``phai.load(folder)`` loads them)."""
        return ckpt.write_model_files(folder, self.model_arrays(best), self.model_config())

    def save_checkpoint(self) -> Path:
        arrays = flatten_flax(self.params)
        arrays.update(flatten_flax(self.best_params, "best/"))
        arrays.update(ckpt.flatten_tree(self.opt_state, "opt/"))
        arrays["sae"] = np.asarray(self.sae, np.float64)
        arrays["state_shift"] = np.asarray(self.state_shift, np.float64)
        training = {"epoch": self.epoch, "step": self.step_count, "best_loss": self.best_loss,
                    "history": self.history, "config": self.config.to_json(), "shape": list(self.shape),
                    "data": self.data_fingerprint}
        return ckpt.write_checkpoint(self.out_dir / "checkpoint", arrays, self.model_config(), training)

    def restore(self, folder) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`."""
        arrays, cfg = ckpt.read_checkpoint(folder)
        tr = cfg["training"]
        if tr["config"] != self.config.to_json():
            raise InputError(f"{folder}: the checkpoint was written with other settings; use a new output folder")
        if tr.get("data") != self.data_fingerprint:
            raise InputError(f"{folder}: the checkpoint was trained on other data (fingerprint {tr.get('data')}, "
                             f"this run's {self.data_fingerprint}); use a new output folder")
        self.params = unflatten_flax(arrays)
        self.best_params = unflatten_flax(arrays, "best/")
        self.opt_state = ckpt.unflatten_tree(self.opt_state, arrays, "opt/")
        self.sae, self.state_shift = arrays["sae"], arrays["state_shift"]
        self.epoch, self.step_count = int(tr["epoch"]), int(tr["step"])
        self.best_loss, self.history = float(tr["best_loss"]), list(tr["history"])

    def write_logs(self) -> None:
        ckpt.write_text_atomic(self.out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        keys = sorted({k for h in self.history for k in h})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.history)
        ckpt.write_text_atomic(self.out_dir / "metrics.csv", buf.getvalue())

    def potential(self, best: bool = True, precision: str = "float32", base=None):
        """The trained model as :func:`phai.load` would return it from the saved folder. ``base``: the
        base model object of a Δ run to share (None: loaded from the record; False: the Δ part alone)."""
        from ..models.aimnet_me import AIMNetMEPotential

        return AIMNetMEPotential(self.model_arrays(best), self.model_config(), precision, base=base)


def train_aimnet_me(config: MEConfig, train: ChargeSet, valid: ChargeSet | None = None, out_dir=None,
                    callback=None) -> AIMNetMETrainer:
    """Build an :class:`AIMNetMETrainer`, fit it and return it."""
    t = AIMNetMETrainer(config, train, valid, out_dir)
    t.fit(callback)
    return t
