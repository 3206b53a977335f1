"""The no-network floor of the Δ AIMNet-ME runs, cross-validated: what the network has to beat.

For every outer fold of ``aimnet_me_experiment.py --folds K`` (the same ``folds_by_molecule``
and fold seeds), the floors are fitted on the fold's training molecules (training and
validation states: what a Δ run fits before its network) and scored on its held-out molecules,
pooled CDFT R² per geometry and with every molecule weighted once (``metrics``):

- ``plain``: AIMNet2-B97-3c + self energies per element and per (charge, multiplicity)
  (``fit_self_energies``), the floor of ``--base aimnet2-b973c --spin-shifts``;
- ``charge terms``: first ``fit_base_charge_terms`` (an energy in the base's own atomic charges
  per element, total charge and electron parity), then the self energies of what is left: the
  floor of ``--base-charge-terms``; the terms are evaluated from the tables the library returns;
- ``+ diffuse``: the same with the 6-31+G(d) diffuse-basis term of the anions of closed-shell
  molecules (``--base-diffuse-term``);

and, with ``--screen``, features a network could be given, as extra least-squares columns on top of
``+ diffuse`` (one joint fit: charge terms, diffuse term, offsets per (charge, multiplicity), the
extra columns): the other shipped AIMNet2 (ωB97M-D3) as a second base, its energy difference to
B97-3c per (charge, multiplicity), or its atomic charges per element and kind; the ridge of the
charge-term fit; intensive terms (1/N per kind), size and composition terms (the number of heavy atoms, the
element counts, per kind: self energies that differ between charge states), the diffuse-orbital energy of every state, its
square, and the base's charges cubed. Seconds per fold draw once the bases' predictions are cached
(``$PHAI_CACHE/aimnet_me_base``, computed on first use, ~0.05 s per state and base).

Run::

    PYTHONPATH=src python benchmarks/aimnet_me_floor.py [DATA] [--folds 5] [--fold-seeds 0 1 2] [--screen]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aimnet_me_experiment import folds_by_molecule, metrics

from phai.models.aimnet2 import state_kind
from phai.physics.diffuse import DIFFUSE_S_631PLUS, diffuse_state_energies
from phai.train.aimnet_me import (
    base_cache_path,
    base_state_charges,
    base_state_predictions,
    element_counts,
    fit_base_charge_terms,
    fit_self_energies,
    load_base,
    read_charge_data,
    reference_energy,
)

ROOT = Path(__file__).resolve().parents[1]
BASE, OTHER = "aimnet2-b973c", "aimnet2-wb97m-d3"
INDICES = ("ip", "ea", "chi", "eta", "omega")
CHARGES = (-1, 0, 1)
MAX_MULT = 4


def base_inputs(data, name):
    """``(E [C] eV, [(q [A], q2 [A])] e, e²)`` of a base on every state (float64, cached)."""
    base, cache = load_base(name, "float64"), base_cache_path(name, "float64")
    e = base_state_predictions(data, base, cache)[0]
    q, q2 = base_state_charges(data, base, cache)
    return e, q, q2


def anion_diffuse_energy(data, every_state: bool = False) -> np.ndarray:
    """``[C]`` eV: the diffuse-orbital kinetic energy (6-31+G(d)) of every anion of a closed-shell
    molecule (charge -1, odd electron count), 0 for the other states (``every_state``: of all)."""
    select = None if every_state else [state_kind(z, c) == (-1, "odd") for z, c in zip(data.numbers, data.charge)]
    return diffuse_state_energies(data.numbers, data.positions, DIFFUSE_S_631PLUS, select)


def term_energy(data, q, q2, eps, tables) -> np.ndarray:
    """``[C]`` eV: the charge-term energy of fitted ``tables`` (``fit_base_charge_terms``) on
    every state: ``sum_i a[Z_i] q_i + b[Z_i] q2_i (+ d * eps)`` of the state's kind."""
    by_kind = {(t["charge"], t["electrons"]): t for t in tables}
    out = np.zeros(len(data))
    for k in range(len(data)):
        t = by_kind.get(state_kind(data.numbers[k], data.charge[k]))
        if t is None:
            continue
        a, b = dict(zip(t["elements"], t["a"])), dict(zip(t["elements"], t["b"]))
        z = np.asarray(data.numbers[k])
        out[k] = sum(a[int(zi)] * x + b[int(zi)] * x2 for zi, x, x2 in zip(z, q[k], q2[k]))
        out[k] += t.get("diffuse", 0.0) * eps[k]
    return out


def two_stage_floor(data, eb, q, q2, eps, folds, elements, terms: bool, diffuse: bool) -> np.ndarray:
    """Held-out energies ``[C]`` (eV) of the library's floor, fold by fold (module docstring)."""
    pred = np.zeros(len(data))
    for names in folds:
        test = np.isin(data.molecule, names)
        tr = np.flatnonzero(~test)
        resid = data.subset(tr)
        resid.energy = data.energy[tr] - eb[tr]
        extra = np.zeros(len(data))
        if terms:
            tables = fit_base_charge_terms([resid], [([q[k] for k in tr], [q2[k] for k in tr])], elements,
                                           diffuse=DIFFUSE_S_631PLUS if diffuse else None)
            extra = term_energy(data, q, q2, eps, tables)
            resid.energy = resid.energy - extra[tr]
        sae, shift = fit_self_energies(resid, elements, CHARGES, MAX_MULT)
        te = np.flatnonzero(test)
        pred[te] = eb[te] + extra[te] + reference_energy([data.numbers[k] for k in te], data.charge[te], elements,
                                                         CHARGES, sae, shift, data.multiplicity[te])
    return pred


def joint_floor(y_base, columns, folds, data, ridge: float = 1e-6) -> np.ndarray:
    """Held-out energies of ``y_base + A @ coef``, ``coef`` a ridge least squares of the labels'
    residual ``E - y_base`` on the columns ``A`` over each fold's training states."""
    A = np.concatenate(columns, axis=1)
    A = A[:, np.abs(A).sum(axis=0) > 0]
    y = data.energy - y_base
    pred = np.zeros(len(data))
    for names in folds:
        te = np.isin(data.molecule, names)
        ata = A[~te].T @ A[~te]
        coef = np.linalg.solve(ata + ridge * np.trace(ata) / A.shape[1] * np.eye(A.shape[1]), A[~te].T @ y[~te])
        pred[te] = y_base[te] + A[te] @ coef
    return pred


def per_kind(values: np.ndarray, keys: list) -> np.ndarray:
    """``values [C, n]`` copied into one block of columns per distinct key (0 elsewhere)."""
    kinds = sorted(set(keys))
    on = np.asarray([[k == x for x in kinds] for k in keys], float)
    return np.concatenate([values * on[:, [j]] for j in range(len(kinds))], axis=1)


def summed(data, q, elements) -> np.ndarray:
    """``[C, S]``: per state, the sum of ``q`` over the atoms of each element."""
    return np.asarray([[np.sum(np.asarray(q[k])[np.asarray(data.numbers[k]) == z]) for z in elements]
                       for k in range(len(data))])


def row(name: str, data, pred) -> str:
    c = metrics(data, {"energy": pred})["cdft"]
    return (f"| {name} | " + " | ".join(f"{c[k]['r2']:.3f}" for k in INDICES)
            + f" | {c['chi']['r2_molecules_weighted']:.3f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(ROOT / "tests/data/charge_labels/charge_labels.h5"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--screen", action="store_true", help="also the extra-column screens (needs the second base)")
    args = ap.parse_args(argv)
    data = read_charge_data(args.data)
    data.q_alpha = data.q_beta = None
    elements = sorted({int(z) for n in data.numbers for z in n})
    eb, q, q2 = base_inputs(data, BASE)
    eps = anion_diffuse_energy(data)
    if args.screen:
        ew, qw, _ = base_inputs(data, OTHER)
        kind_p = [state_kind(data.numbers[k], data.charge[k]) for k in range(len(data))]
        kind_m = [(int(c), int(m)) for c, m in zip(data.charge, data.multiplicity)]
        natoms = np.asarray([len(z) for z in data.numbers], float)
        heavy = np.asarray([np.sum(np.asarray(z) > 1) for z in data.numbers], float)
        extra = {   # intensive and higher-order candidates, one block of columns each
            "+ 1/N (atoms) per (charge, multiplicity)": per_kind((1 / natoms)[:, None], kind_m),
            "+ 1/N (heavy atoms) per (charge, multiplicity)": per_kind((1 / heavy)[:, None], kind_m),
            "+ N (heavy atoms) per (charge, multiplicity)": per_kind(heavy[:, None], kind_m),
            "+ element counts per (charge, multiplicity)": per_kind(element_counts(data.numbers, elements), kind_m),
            "+ the diffuse-orbital energy of every state, per (charge, multiplicity)":
                per_kind(anion_diffuse_energy(data, every_state=True)[:, None], kind_m),
            "+ its square, for the anions of closed-shell molecules": per_kind((eps ** 2)[:, None], kind_p),
            "+ sum of the base's q^3 per element and kind": per_kind(summed(data, [np.asarray(x) ** 3 for x in q],
                                                                              elements), kind_p),
        }
        base_cols = [element_counts(data.numbers, elements), per_kind(np.ones((len(data), 1)), kind_m),
                     per_kind(summed(data, q, elements), kind_p), per_kind(summed(data, q2, elements), kind_p),
                     per_kind(eps[:, None], kind_p)]
    for seed in args.fold_seeds:
        folds = folds_by_molecule(data, args.folds, seed)
        print(f"\nfold seed {seed}: R² per geometry, and χ with molecules weighted\n")
        print("| floor | IP | EA | χ | η | ω | χ molecules weighted |\n|---|---|---|---|---|---|---|")
        for name, terms, diffuse in (("plain: base + self energies", False, False),
                                     ("charge terms", True, False), ("charge terms + diffuse", True, True)):
            print(row(name, data, two_stage_floor(data, eb, q, q2, eps, folds, elements, terms, diffuse)), flush=True)
        if not args.screen:
            continue
        print(row("joint fit of the same (charge terms + diffuse)", data, joint_floor(eb, base_cols, folds, data)))
        for ridge in (1e-4, 1e-3, 1e-2):
            print(row(f"joint, ridge {ridge:g}", data, joint_floor(eb, base_cols, folds, data, ridge)))
        print(row("+ (E_wB97M - E_B97-3c) per (charge, multiplicity)", data,
                  joint_floor(eb, base_cols + [per_kind((ew - eb)[:, None], kind_m)], folds, data)))
        print(row("+ wB97M-D3 AIMNet2's charges per element and kind", data,
                  joint_floor(eb, base_cols + [per_kind(summed(data, qw, elements), kind_p)], folds, data)), flush=True)
        for name, col in extra.items():
            print(row(name, data, joint_floor(eb, base_cols + [col], folds, data)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
