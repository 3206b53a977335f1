"""AIMNet-ME on the charge/spin data set: held-out energies per charge state, charges, CDFT R².

Trains :mod:`phai.train.aimnet_me` on the training molecules (split by molecule: the file's
``split`` attribute when it has one, else ``--test-fraction`` of the molecules drawn with
``--seed``; or ``--folds K``: K-fold cross-validation over molecules, every molecule held out
once and the metrics pooled over all held-out predictions), selects the epoch on a validation
part of the training molecules (never the test molecules), optionally averages an ensemble of
``--members`` seeds, and reports on the held-out molecules:

``DATA``: the HDF5 export, an extended XYZ file, or a :mod:`phai.labels.store` folder of
:class:`~phai.labels.labellers.PySCFUKSLabeller` records (read while labelling goes on).

* energy MAE / RMSE per charge state (eV and kcal/mol);
* spin-resolved atomic charge errors (q^alpha, q^beta, q = q^alpha + q^beta; e);
* IP, EA, chi, eta, omega (vertical, from the N-1, N, N+1 energies of each held-out neutral
  geometry that has all three states; :mod:`phai.physics.cdft`, the AIMNet-NSE conventions)
  against the same DFT: R², MAE.

``--base aimnet2-wb97m-d3``: Δ-learning on a pretrained charge-aware model (its energies and
forces of every label computed once, in float64, and cached): each member learns ``E - E_base``
and the held-out predictions are base + mean Δ. The baselines then include the base alone and
the base plus the fitted self energies (no network).

Every fold's ensemble is saved as an ensemble folder (``--out DIR``: ``DIR/fold<k>``, else a
temporary folder) and the held-out predictions are those of ``phai.load(folder)``, the object
``phai cdft --model folder`` uses.

Run::

    nice -n 10 env PYTHONPATH=src python benchmarks/aimnet_me_experiment.py [DATA] --epochs 300 --out /tmp/me_run
    nice -n 10 env PYTHONPATH=src python benchmarks/aimnet_me_experiment.py DATA --folds 5 --diff-weight 10

Results go to ``benchmarks/results/aimnet_me.json`` and are printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from phai.commands.train_aimnet import diffuse_setting
from phai.physics.cdft import cdft_indices
from phai.train.aimnet_me import (
    EV_TO_KCALMOL,
    ChargeSet,
    MEConfig,
    read_charge_data,
)

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = (ROOT / "tests/data/charge_labels/charge_labels.h5", Path("/tmp/phai_coord/charge_labels_partial.h5"),
              Path("/tmp/charge_store"))


def r2(pred, ref, weight=None) -> float:
    """Coefficient of determination; ``weight`` (optional, ``[n]``) weights the rows."""
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    w = np.ones_like(ref) if weight is None else np.asarray(weight, float)
    mean = np.sum(w * ref) / np.sum(w)
    return float(1.0 - np.sum(w * (pred - ref) ** 2) / np.sum(w * (ref - mean) ** 2))


def split(data: ChargeSet, test_names, test_fraction: float, seed: int):
    mols = np.unique(data.molecule)
    if test_names:
        test = set(test_names)
    else:
        order = np.random.default_rng(seed).permutation(len(mols))
        test = set(mols[order[:max(1, round(test_fraction * len(mols)))]].tolist())
    is_test = np.asarray([m in test for m in data.molecule])
    return data.subset(np.flatnonzero(~is_test)), data.subset(np.flatnonzero(is_test)), sorted(test)


def file_test_split(path) -> list[str]:
    """Molecules whose group has ``split == "test"`` in an HDF5 file (empty if none)."""
    if not str(path).endswith((".h5", ".hdf5")):
        return []
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        for name in f:
            s = f[name].attrs.get("split", "")
            s = s.decode() if isinstance(s, bytes) else str(s)
            if s == "test":
                m = f[name].attrs.get("molecule", name)
                out.append(m.decode() if isinstance(m, bytes) else str(m))
    return out


def predict(model, test: ChargeSet) -> dict:
    """Energies (eV, ``[C]``), their member spread and spin charges of a charge-aware model (an
    :class:`~phai.models.aimnet_me.AIMNetMEEnsemble`: the member means) on every state of ``test``."""
    out = {"energy": [], "energy_std": [], "q_alpha": [], "q_beta": [], "q": []}
    for k in range(len(test)):
        r = model(test.numbers[k], test.positions[k], charge=int(test.charge[k]),
                  multiplicity=int(test.multiplicity[k]))
        out["energy"].append(r.energy)
        out["energy_std"].append(r.energy_std)
        out["q_alpha"].append(r.charges_alpha)
        out["q_beta"].append(r.charges_beta)
        out["q"].append(r.charges)
    out["energy"] = np.asarray(out["energy"])
    out["energy_std"] = np.asarray(out["energy_std"])
    return out


def complete_triples(test: ChargeSet) -> list:
    """``[(k+1, k0, k-1)]``: the state indices of each geometry that has all of the +1, 0 and -1
    states, in the order of the geometries' first appearance."""
    by_geom = {}
    for k in range(len(test)):
        by_geom.setdefault(test.geometry[k], {})[int(test.charge[k])] = k
    return [(st[1], st[0], st[-1]) for st in by_geom.values() if all(q in st for q in (1, 0, -1))]


def cdft_rows(test: ChargeSet, e, molecules: bool = False) -> list:
    """``[(predicted, reference)]`` CDFT tuples (:func:`cdft_indices`) of the geometries with
    all of the -1, 0, +1 states (``molecules``: ``(predicted, reference, molecule name)``)."""
    rows = []
    for ks in complete_triples(test):
        row = (cdft_indices(*[e[k] for k in ks]), cdft_indices(*[test.energy[k] for k in ks]))
        rows.append(row + (str(test.molecule[ks[1]]),) if molecules else row)
    return rows


def r2_interval(test: ChargeSet, e, draws: int = 2000, seed: int = 0, molecules_weighted: bool = False) -> dict:
    """95 % bootstrap intervals of the CDFT R² values, resampling whole molecules (the geometries
    of one molecule are not independent): ``{"ip": [lo, hi], ...}`` (``molecules_weighted``: of
    the R² in which every molecule counts once, its geometries 1/n each)."""
    by_mol = {}
    for k in range(len(test)):
        by_mol.setdefault(str(test.molecule[k]), []).append(k)
    per_mol = {m: cdft_rows(test.subset(ks), np.asarray(e)[ks]) for m, ks in by_mol.items()}
    names = [m for m, rows in per_mol.items() if rows]
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("ip", "ea", "chi", "eta", "omega")}
    for _ in range(draws):
        drawn = rng.choice(names, len(names))
        rows = [r for m in drawn for r in per_mol[m]]
        w = [1.0 / len(per_mol[m]) if molecules_weighted else 1.0 for m in drawn for _ in per_mol[m]]
        for i, k in enumerate(out):
            t = np.array([r[1][i] for r in rows])
            if t.std() > 0:
                out[k].append(r2([r[0][i] for r in rows], t, w))
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in out.items()}


def metrics(test: ChargeSet, pred: dict) -> dict:
    """Energy errors per charge state, charge errors and CDFT R²/MAE of predictions ``pred``
    (:func:`predict`) on ``test``."""
    e = pred["energy"]
    out = {"states": {}, "charges": {}, "cdft": {}}

    def stats(d):
        return {"n": len(d), "mae_ev": float(np.mean(np.abs(d))), "rmse_ev": float(np.sqrt(np.mean(d * d))),
                "mae_kcal": float(np.mean(np.abs(d))) * EV_TO_KCALMOL,
                "rmse_kcal": float(np.sqrt(np.mean(d * d))) * EV_TO_KCALMOL}

    for q in sorted(set(test.charge.tolist())):
        sel = test.charge == q
        out["states"][f"{q:+d}"] = stats(e[sel] - test.energy[sel])
    out["states"]["all"] = stats(e - test.energy)
    if test.has_charges:
        for name, ref in (("q_alpha", test.q_alpha), ("q_beta", test.q_beta),
                          ("q", [a + b for a, b in zip(test.q_alpha, test.q_beta)])):
            dq = np.concatenate([p - r for p, r in zip(pred[name], ref)])
            out["charges"][name] = {"mae_e": float(np.mean(np.abs(dq))), "rmse_e": float(np.sqrt(np.mean(dq * dq)))}
        out["charges"]["max_sum_violation_e"] = float(max(abs(q.sum() - Q) for q, Q in zip(pred["q"], test.charge)))
    rows = cdft_rows(test, e, molecules=True)
    out["cdft"]["n"] = len(rows)
    out["cdft"]["molecules"] = len(np.unique(test.molecule))
    # every geometry counts once in "r2"; in "r2_molecules_weighted" every molecule counts once
    # (its geometries 1/n each): the data set has 4 geometries of some molecules and 1 of most
    names = [r[2] for r in rows]
    counts = {m: names.count(m) for m in set(names)}
    weight = np.array([1.0 / counts[m] for m in names])
    if len(rows) >= 2:
        for i, name in enumerate(("ip", "ea", "chi", "eta", "omega")):
            p = np.array([r[0][i] for r in rows])
            t = np.array([r[1][i] for r in rows])
            out["cdft"][name] = {"r2": r2(p, t), "r2_molecules_weighted": r2(p, t, weight),
                                 "mae_ev": float(np.mean(np.abs(p - t))),
                                 "ref_mean_ev": float(t.mean()), "ref_std_ev": float(t.std())}
    return out


def errors_by_kind(test: ChargeSet, e) -> dict:
    """Where the CDFT error is: RMSE (eV) of IP, EA and χ over the complete -1/0/+1 triples,
    split by the neutral's shell (``closed``: singlet neutral, doublet ions; ``radical``: doublet
    neutral, closed-shell ions) and, for the closed shells, by the sign of the reference EA
    (``closed, EA < 0``: the unbound anions of the labels' basis); ``chi_sse_share`` is each
    group's part of the χ squared error."""
    rows = []                                    # (neutral multiplicity, [dIP, dEA, dchi] eV, reference EA eV)
    for ks, (pred, ref) in zip(complete_triples(test), cdft_rows(test, e)):
        d = np.array([pred.ip - ref.ip, pred.ea - ref.ea, pred.chi - ref.chi])
        rows.append((int(test.multiplicity[ks[1]]), d, ref.ea))
    total = sum(float(d[2] ** 2) for _, d, _ in rows)
    groups = {"closed": lambda m, ea: m == 1, "closed, EA < 0": lambda m, ea: m == 1 and ea < 0,
              "radical": lambda m, ea: m != 1}
    out = {}
    for name, keep in groups.items():
        d = np.array([x for m, x, ea in rows if keep(m, ea)]).reshape(-1, 3)
        if len(d):
            rmse = np.sqrt(np.mean(d ** 2, axis=0))
            out[name] = {"n": len(d), "ip_rmse_ev": float(rmse[0]), "ea_rmse_ev": float(rmse[1]),
                         "chi_rmse_ev": float(rmse[2]), "chi_sse_share": float(np.sum(d[:, 2] ** 2) / total)}
    return out


def chi_error_by_molecule(test: ChargeSet, e, top: int = 8) -> list:
    """The ``top`` molecules with the largest share of the pooled χ squared error: ``[{"molecule",
    "share", "geometries", "ip_error_ev", "ea_error_ev"}]`` (mean signed errors over the molecule's
    geometries, predicted - reference)."""
    rows = cdft_rows(test, e, molecules=True)
    total = sum((p.chi - t.chi) ** 2 for p, t, _ in rows)
    mols = {}
    for p, t, name in rows:
        mols.setdefault(name, []).append((p.chi - t.chi, p.ip - t.ip, p.ea - t.ea))
    out = [{"molecule": name, "share": float(sum(d[0] ** 2 for d in v) / total), "geometries": len(v),
            "ip_error_ev": float(np.mean([d[1] for d in v])), "ea_error_ev": float(np.mean([d[2] for d in v]))}
           for name, v in mols.items()]
    return sorted(out, key=lambda x: -x["share"])[:top]


def add_intervals(metrics_out: dict, test: ChargeSet, e) -> None:
    """Add the bootstrap intervals (:func:`r2_interval`) of both R² weightings to ``metrics_out["cdft"]``."""
    for key, weighted in (("r2_95_bootstrap_molecules", False), ("r2_molecules_weighted_95_bootstrap", True)):
        for k, v in r2_interval(test, e, molecules_weighted=weighted).items():
            if k in metrics_out["cdft"]:
                metrics_out["cdft"][k][key] = v


def read_predictions(results_files, like: dict | None = None) -> list[dict]:
    """The stored held-out ``predictions`` of results JSON files, refused (SystemExit) unless they
    cover the same states in the same order as ``like`` (default: the first file's)."""
    runs = [json.loads(Path(f).read_text())["predictions"] for f in results_files]
    ref = like if like is not None else (runs[0] if runs else None)
    for f, o in zip(results_files, runs):
        if o["geometry"] != ref["geometry"] or o["charge"] != ref["charge"]:
            raise SystemExit(f"{f}: other held-out states (folds) than the run it is averaged with")
    return runs


def rescore(data: ChargeSet, results_files, out=None) -> dict:
    """The CDFT metrics, both weightings with their bootstrap intervals, of the held-out
    predictions stored in earlier results JSON files (their ``predictions``: energies by geometry
    and charge), without training anything; several files are averaged like ``--average``.

    Returns ``{"files": [...], "states": {...}, "cdft": {...}}`` (energy errors per charge state, CDFT
    metrics); written to ``out`` if given."""
    at = {(str(g), int(q)): k for k, (g, q) in enumerate(zip(data.geometry, data.charge))}
    runs = read_predictions(results_files)
    first = runs[0]
    try:
        idx = [at[(str(g), int(q))] for g, q in zip(first["geometry"], first["charge"])]
    except KeyError as exc:
        raise SystemExit(f"state {exc} of {results_files[0]} is not in the data set") from None
    test = data.subset(idx)
    test.q_alpha = test.q_beta = None
    e = np.mean([o["energy"] for o in runs], axis=0)
    m = metrics(test, {"energy": e})
    add_intervals(m, test, e)
    result = {"files": [str(f) for f in results_files], "states": m["states"], "cdft": m["cdft"],
              "by_kind": errors_by_kind(test, e), "chi_error_by_molecule": chi_error_by_molecule(test, e)}
    if out:
        Path(out).write_text(json.dumps(result, indent=1))
    return result


def evaluate(pot, test: ChargeSet) -> dict:
    """:func:`metrics` of one charge-aware potential (or ensemble) on ``test``."""
    return metrics(test, predict(pot, test))


def folds_by_molecule(data: ChargeSet, folds: int, seed: int) -> list[list[str]]:
    """``folds`` disjoint lists of molecule names covering all molecules, radicals (neutral
    multiplicity 2) and closed-shell molecules dealt out separately so every fold has both."""
    rng = np.random.default_rng(seed)
    mols = np.unique(data.molecule)
    radical = {m for m in mols if np.any((data.molecule == m) & (data.charge == 0) & (data.multiplicity == 2))}
    out = [[] for _ in range(folds)]
    k = 0
    for group in (sorted(radical), sorted(set(mols) - radical)):
        for i in rng.permutation(len(group)):
            out[k % folds].append(str(group[i]))
            k += 1
    return out


def concat(sets: list) -> ChargeSet:
    """One :class:`ChargeSet` of several (states in order)."""
    def cat(name):
        vs = [getattr(s, name) for s in sets]
        return None if any(v is None for v in vs) else [x for v in vs for x in v]

    return ChargeSet(cat("numbers"), cat("positions"), np.concatenate([s.charge for s in sets]),
                     np.concatenate([s.multiplicity for s in sets]), np.concatenate([s.energy for s in sets]),
                     cat("forces"), cat("q_alpha"), cat("q_beta"), np.concatenate([s.molecule for s in sets]),
                     np.concatenate([s.geometry for s in sets]))


def markdown(result: dict) -> str:
    lines = ["| charge state | n | MAE / eV | RMSE / eV | MAE / kcal/mol | RMSE / kcal/mol |", "|---|---|---|---|---|---|"]
    for q, s in result["test"]["states"].items():
        lines.append(f"| {q} | {s['n']} | {s['mae_ev']:.3f} | {s['rmse_ev']:.3f} | {s['mae_kcal']:.2f} | {s['rmse_kcal']:.2f} |")
    ch = result["test"]["charges"]
    if ch:
        lines += ["", "| charges | MAE / e | RMSE / e |", "|---|---|---|"]
        lines += [f"| {k} | {v['mae_e']:.4f} | {v['rmse_e']:.4f} |" for k, v in ch.items() if isinstance(v, dict)]
        lines.append(f"\nlargest |sum q - Q|: {ch['max_sum_violation_e']:.1e} e")
    cd = result["test"]["cdft"]
    head = f"CDFT on {cd['n']} held-out geometries of {cd.get('molecules', '?')} molecules (N-1, N, N+1 at one geometry):"
    lines += ["", head, "",
              "| index | R² (per geometry) | R² (molecules weighted equally) | MAE / eV | DFT mean / eV | DFT std / eV |",
              "|---|---|---|---|---|---|"]
    for k in ("ip", "ea", "chi", "eta", "omega"):
        if k in cd:
            v = cd[k]
            w = f"{v['r2_molecules_weighted']:.3f}" if "r2_molecules_weighted" in v else "-"
            lines.append(f"| {k} | {v['r2']:.3f} | {w} | {v['mae_ev']:.3f} | {v['ref_mean_ev']:.2f} | "
                         f"{v['ref_std_ev']:.2f} |")
    floors = [(f"self energies alone ({k})", v) for k, v in result.get("baseline_offsets_only", {}).items()]
    if "baseline_base_alone" in result:
        floors = [(f"{result['base']} alone (no fit)", result["baseline_base_alone"])] + \
                 [(f"{result['base']} + {name}", v) for name, v in floors]
    if floors:
        lines += ["", "| floor (no network) | R² IP | R² EA | R² χ | R² η | R² ω | E MAE −1/0/+1 / eV |",
                  "|---|---|---|---|---|---|---|"]
        for name, v in floors:
            r = " | ".join(f"{v['cdft'][k]['r2']:.2f}" if k in v["cdft"] else "-" for k in ("ip", "ea", "chi", "eta", "omega"))
            e = "/".join(f"{v['states'][q]['mae_ev']:.2f}" for q in ("-1", "+0", "+1") if q in v["states"])
            lines.append(f"| {name} | {r} | {e} |")
    if len(result.get("folds", [])) > 1:
        lines += ["", "| fold | held-out molecules | geometries | R² IP | R² EA | R² χ | R² η | R² ω | E MAE / eV |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for f, row in enumerate(result["folds"]):
            r = " | ".join(f"{row[k]:.2f}" if k in row else "-" for k in ("ip", "ea", "chi", "eta", "omega"))
            lines.append(f"| {f} | {len(row['test_molecules'])} | {row['cdft_n']} | {r} | {row['energy_mae_ev']:.2f} |")
    return "\n".join(lines)


def offsets_baseline(data: ChargeSet, fold_names, elements, charge_states=(-1, 0, 1), max_multiplicity=None,
                     seed: int = 0, base_energy=None) -> dict:
    """:func:`metrics` of the self energies alone (no network: ``counts . sae + c_state`` fitted on
    each fold's training molecules, :func:`phai.train.aimnet_me.fit_self_energies`) on the same
    held-out molecules: what the network has to improve on. ``base_energy [C]`` (eV, aligned
    with ``data``): the self energies are fitted to ``E - E_base`` and the predictions are
    ``E_base`` + self energies (the Δ run's floor)."""
    from phai.train.aimnet_me import fit_self_energies, reference_energy

    data = data.subset(np.arange(len(data)))
    data.q_alpha = data.q_beta = None
    base = np.zeros(len(data)) if base_energy is None else np.asarray(base_energy, np.float64)
    resid = data.subset(np.arange(len(data)))
    resid.energy = data.energy - base
    tests, es = [], []
    for names in fold_names:
        is_test = np.asarray([m in set(names) for m in data.molecule])
        train = resid.subset(np.flatnonzero(~is_test))
        test = data.subset(np.flatnonzero(is_test))
        sae, shift = fit_self_energies(train, elements, charge_states, max_multiplicity)
        es.append(base[is_test] + reference_energy(test.numbers, test.charge, elements, charge_states, sae, shift,
                                                   test.multiplicity))
        tests.append(test)
    return metrics(concat(tests), {"energy": np.concatenate(es)})


def train_members(args, train: ChargeSet, elements, out: Path, log) -> list:
    """Train ``args.members`` models (seeds ``seed .. seed + members - 1``: their own
    validation molecules and initial weights) into ``out/member<k>`` and write ``out`` as an
    ensemble folder (:func:`phai.models.aimnet_me.save_ensemble`); returns the trainers."""
    from phai.commands.train_aimnet import SIZES
    from phai.models.aimnet_me import save_ensemble
    from phai.train.aimnet_me import AIMNetMETrainer

    size = SIZES[args.size]
    trainers = []
    for m in range(args.members):
        cfg = MEConfig(model={"elements": elements, **size}, elements=tuple(elements), epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, seed=args.seed + m, force_weight=args.force_weight,
                       charge_weight=args.charge_weight, valid_fraction=args.valid_fraction,
                       diff_weight=args.diff_weight, weight_decay=args.weight_decay,
                       spin_state_shifts=args.spin_shifts, base=args.base, base_charge_terms=args.base_charge_terms,
                       base_diffuse_term=diffuse_setting(args.base_diffuse_term, args.data),
                       train_eval_every=args.train_eval_every,
                       zero_energy_head=args.zero_energy_head, base_charge_inputs=args.base_charge_inputs)

        def show(row, m=m):
            if row["epoch"] % 25 == 0 or row["epoch"] == 1:
                log(json.dumps({"member": m, **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
                                                if k in ("epoch", "train_energy_rmse", "val_energy_rmse",
                                                         "val_diff_rmse_ev", "val_charge_rmse", "seconds")}}))

        t = AIMNetMETrainer(cfg, train, None, out / f"member{m}")
        t.fit(show)
        log(json.dumps({"member": m, "best_epoch": max((h["epoch"] for h in t.history if h.get("best")), default=0),
                        "best_val_loss": t.best_loss}))
        trainers.append(t)
    save_ensemble(out, [out / f"member{m}" for m in range(args.members)])
    return trainers


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", help="charge data set (default: the committed set, else the partial export)")
    ap.add_argument("--out", default=None, help="folder for the model files (fixed split only)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--force-weight", type=float, default=0.0)
    ap.add_argument("--charge-weight", type=float, default=10.0)
    ap.add_argument("--diff-weight", type=float, default=0.0, help="weight of the IP/EA (state difference) loss, 1/eV^2")
    ap.add_argument("--spin-shifts", action="store_true",
                    help="self-energy offsets per charge and multiplicity (radical ions apart from closed-shell ions)")
    ap.add_argument("--members", type=int, default=1, help="ensemble members (seeds) averaged")
    ap.add_argument("--folds", type=int, default=0,
                    help="cross-validation over molecule folds (0: the file's split / --test-fraction)")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--valid-fraction", type=float, default=0.15)
    ap.add_argument("--train-eval-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0, help="seed of the first member (inner validation split, weights)")
    ap.add_argument("--fold-seed", type=int, default=0, help="seed of the test split / the folds")
    ap.add_argument("--average", nargs="*", default=[],
                    help="results JSON files of earlier runs with the same folds: average their held-out "
                         "energies with this run's (a larger ensemble, trained one run at a time)")
    ap.add_argument("--size", default="small", help="small, default or tiny")
    ap.add_argument("--base", default=None,
                    help="Δ-learning on this charge-aware model (e.g. aimnet2-wb97m-d3): members fit E - E_base")
    ap.add_argument("--base-charge-terms", action="store_true",
                    help="with --base: fit an energy in the base's own atomic charges first (per element and kind "
                         "of state, phai.train.aimnet_me.fit_base_charge_terms), then learn on top of it")
    ap.add_argument("--base-diffuse-term", nargs="?", const="", default=None, metavar="BASIS",
                    help="with --base-charge-terms: that fit also gets the diffuse-basis term of the anions of "
                         "closed-shell molecules, for labels in BASIS (default: the data file's, else 6-31+G(d))")
    ap.add_argument("--base-charge-inputs", action="store_true",
                    help="with --base: the network also reads the base's atomic charges of each state")
    ap.add_argument("--zero-energy-head", action="store_true",
                    help="start the energy head's last layer at zero: the untrained members are the floor")
    ap.add_argument("--results", default=None,
                    help="results JSON (default: benchmarks/results/aimnet_me.json; with --rescore: none written)")
    ap.add_argument("--rescore", nargs="+", default=None, metavar="JSON",
                    help="train nothing: recompute the CDFT metrics (per geometry and with molecules weighted "
                         "equally, bootstrap intervals) of these results files' held-out predictions, averaged; "
                         "written to --results if given explicitly")
    args = ap.parse_args(argv)

    path = Path(args.data) if args.data else next((p for p in CANDIDATES if p.is_file()), None)
    if path is None:
        raise SystemExit("no charge data set found (give a path)")
    args.data = str(path)
    data = read_charge_data(path)
    if args.rescore:
        res = rescore(data, args.rescore, args.results)
        print(markdown({"test": {"states": res["states"], "charges": {}, "cdft": res["cdft"]}}))
        for k in ("ip", "ea", "chi", "eta", "omega"):
            v = res["cdft"][k]
            print(f"{k}: 95 % bootstrap per geometry {np.round(v['r2_95_bootstrap_molecules'], 3).tolist()}, "
                  f"molecules weighted {np.round(v['r2_molecules_weighted_95_bootstrap'], 3).tolist()}")
        for name, v in res["by_kind"].items():
            print(f"{name:>15} (neutral): {v['n']:3d} triples, RMSE IP {v['ip_rmse_ev']:.3f} EA {v['ea_rmse_ev']:.3f} "
                  f"chi {v['chi_rmse_ev']:.3f} eV, {100 * v['chi_sse_share']:.0f} % of the chi squared error")
        print("largest shares of the chi squared error: " + ", ".join(
            f"{v['molecule']} {100 * v['share']:.1f} % (IP {v['ip_error_ev']:+.2f}, EA {v['ea_error_ev']:+.2f} eV)"
            for v in res["chi_error_by_molecule"]))
        return 0
    args.results = args.results or str(ROOT / "benchmarks/results/aimnet_me.json")
    elements = sorted({int(z) for zs in data.numbers for z in np.unique(zs)})
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:7.0f} s] {msg}", flush=True)

    if args.folds:
        fold_names = folds_by_molecule(data, args.folds, args.fold_seed)
    else:
        names = file_test_split(path)
        if not names and data.split is not None:
            names = sorted(set(data.molecule[data.split == "test"].tolist()))
        fold_names = [split(data, names, args.test_fraction, args.fold_seed)[2]]
    import tempfile

    import phai

    base_energy = None
    if args.base:
        from phai.train.aimnet_me import (
            BASE_PRECISION,
            base_cache_path,
            base_state_predictions,
            load_base,
        )

        base_energy = base_state_predictions(data, load_base(args.base, BASE_PRECISION),
                                             base_cache_path(args.base, BASE_PRECISION), progress=log)[0]
        log(f"base {args.base}: predictions of {len(data)} states ready")
    scratch = tempfile.TemporaryDirectory(prefix="aimnet_me_")
    root = Path(args.out) if args.out else Path(scratch.name)
    tests, preds, per_fold, trainers = [], [], [], []
    for f, names in enumerate(fold_names):
        train, test, _ = split(data, names, 0.0, args.fold_seed)
        log(f"fold {f}: train {len(train)} states, test {len(test)} states ({', '.join(names)})")
        out = root / f"fold{f}" if args.folds else root
        trainers = train_members(args, train, elements, out, log)
        pred = predict(phai.load(str(out)), test)      # the saved ensemble folder, as phai cdft --model reads it
        m = metrics(test, pred)
        per_fold.append({"test_molecules": names, "cdft_n": m["cdft"]["n"],
                         **{k: m["cdft"][k]["r2"] for k in ("ip", "ea", "chi", "eta", "omega") if k in m["cdft"]},
                         "energy_mae_ev": m["states"]["all"]["mae_ev"]})
        log(json.dumps(per_fold[-1]))
        tests.append(test)
        preds.append(pred)
    test = concat(tests)
    pred = {k: (np.concatenate([p[k] for p in preds]) if k == "energy" else [x for p in preds for x in p[k]])
            for k in preds[0]}
    seconds = time.perf_counter() - t0
    own = {"energy": pred["energy"].tolist(), "geometry": test.geometry.tolist(), "charge": test.charge.tolist()}
    runs = [own] + read_predictions(args.average, like=own)
    single = metrics(test, pred)
    pred["energy"] = np.mean([r["energy"] for r in runs], axis=0)
    result = {"data": str(path), "states": len(data), "molecules": len(np.unique(data.molecule)),
              "geometries": len(np.unique(data.geometry)),
              "protocol": (f"{args.folds}-fold cross-validation over molecules (every molecule held out once; "
                           "metrics pooled over the held-out predictions)" if args.folds else "fixed split"),
              "folds": per_fold, "test_states": len(test), "members": args.members, "epochs": args.epochs,
              "seconds": seconds, "config": trainers[0].config.to_json(), "test": metrics(test, pred),
              "averaged_runs": [str(a) for a in args.average], "test_this_run_only": single, "predictions": own}
    result["base"] = args.base
    result["mean_member_energy_std_ev"] = float(np.mean(pred["energy_std"]))
    result["baseline_offsets_only"] = {
        "per charge": offsets_baseline(data, fold_names, elements, seed=args.fold_seed, base_energy=base_energy),
        "per charge and multiplicity": offsets_baseline(data, fold_names, elements, max_multiplicity=4,
                                                        seed=args.fold_seed, base_energy=base_energy)}
    if base_energy is not None:
        at = {(g, int(q)): k for k, (g, q) in enumerate(zip(data.geometry, data.charge))}
        alone = np.asarray([base_energy[at[(g, int(q))]] for g, q in zip(test.geometry, test.charge)])
        nocharge = test.subset(np.arange(len(test)))
        nocharge.q_alpha = nocharge.q_beta = None
        result["baseline_base_alone"] = metrics(nocharge, {"energy": alone})
    add_intervals(result["test"], test, pred["energy"])
    if args.average:
        # charges were not kept from the earlier runs: the charge metrics are this run's
        result["test"]["charges"] = single["charges"]
    if not args.folds:
        result["train"] = evaluate(phai.load(str(root)), split(data, fold_names[0], 0.0, args.fold_seed)[0])["states"]
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    log(f"done: {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
