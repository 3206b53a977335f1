"""AIMNet-ME on the charge/spin data set: held-out energies per charge state, charges, CDFT R².

Trains :mod:`phai.train.aimnet_me` on the training molecules (split by molecule: the file's
``split`` attribute when it has one, else ``--test-fraction`` of the molecules drawn with
``--seed``), selects the epoch on a validation part of the training molecules, and reports
on the held-out molecules:

``DATA``: the HDF5 export, an extended XYZ file, or a :mod:`phai.labels.store` folder of
:class:`~phai.labels.labellers.PySCFUKSLabeller` records (read while labelling goes on).

* energy MAE / RMSE per charge state (eV and kcal/mol);
* spin-resolved atomic charge errors (q^alpha, q^beta, q = q^alpha + q^beta; e);
* IP, EA, chi, eta, omega (vertical, from the N-1, N, N+1 energies of each held-out neutral
  geometry that has all three states; :mod:`phai.physics.cdft`, the AIMNet-NSE conventions)
  against the same DFT: R², MAE.

Run::

    nice -n 10 env PYTHONPATH=src python benchmarks/aimnet_me_experiment.py [DATA] --epochs 300 --out /tmp/me_run

Results go to ``benchmarks/results/aimnet_me.json`` and are printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from phai.physics.cdft import cdft_indices
from phai.train.aimnet_me import (
    EV_TO_KCALMOL,
    ChargeSet,
    MEConfig,
    read_charge_data,
    train_aimnet_me,
)

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = (ROOT / "tests/data/charge_labels/charge_labels.h5", Path("/tmp/phai_coord/charge_labels_partial.h5"),
              Path("/tmp/charge_store"))


def r2(pred, ref) -> float:
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    return float(1.0 - np.sum((pred - ref) ** 2) / np.sum((ref - ref.mean()) ** 2))


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


def evaluate(pot, test: ChargeSet) -> dict:
    res = [pot(test.numbers[k], test.positions[k], charge=int(test.charge[k]),
               multiplicity=int(test.multiplicity[k])) for k in range(len(test))]
    e = np.array([r.energy for r in res])
    out = {"states": {}, "charges": {}, "cdft": {}}
    for q in sorted(set(test.charge.tolist())):
        sel = test.charge == q
        d = e[sel] - test.energy[sel]
        out["states"][f"{q:+d}"] = {"n": int(sel.sum()), "mae_ev": float(np.mean(np.abs(d))),
                                   "rmse_ev": float(np.sqrt(np.mean(d * d))),
                                   "mae_kcal": float(np.mean(np.abs(d))) * EV_TO_KCALMOL,
                                   "rmse_kcal": float(np.sqrt(np.mean(d * d))) * EV_TO_KCALMOL}
    d = e - test.energy
    out["states"]["all"] = {"n": len(d), "mae_ev": float(np.mean(np.abs(d))), "rmse_ev": float(np.sqrt(np.mean(d * d))),
                            "mae_kcal": float(np.mean(np.abs(d))) * EV_TO_KCALMOL,
                            "rmse_kcal": float(np.sqrt(np.mean(d * d))) * EV_TO_KCALMOL}
    if test.has_charges:
        for name, pred, ref in (("q_alpha", [r.charges_alpha for r in res], test.q_alpha),
                                ("q_beta", [r.charges_beta for r in res], test.q_beta),
                                ("q", [r.charges for r in res], [a + b for a, b in zip(test.q_alpha, test.q_beta)])):
            dq = np.concatenate([p - r for p, r in zip(pred, ref)])
            out["charges"][name] = {"mae_e": float(np.mean(np.abs(dq))), "rmse_e": float(np.sqrt(np.mean(dq * dq)))}
        out["charges"]["max_sum_violation_e"] = float(max(abs(r.charges.sum() - q) for r, q in zip(res, test.charge)))
    # CDFT: neutral geometries with the +1 and -1 states at the same geometry
    by_geom = {}
    for k in range(len(test)):
        by_geom.setdefault(test.geometry[k], {})[int(test.charge[k])] = k
    rows = []
    for st in by_geom.values():
        if all(q in st for q in (1, 0, -1)):
            ks = [st[1], st[0], st[-1]]
            rows.append((cdft_indices(*[e[k] for k in ks]), cdft_indices(*[test.energy[k] for k in ks])))
    out["cdft"]["n"] = len(rows)
    if len(rows) >= 2:
        for i, name in enumerate(("ip", "ea", "chi", "eta", "omega")):
            p = np.array([r[0][i] for r in rows])
            t = np.array([r[1][i] for r in rows])
            out["cdft"][name] = {"r2": r2(p, t), "mae_ev": float(np.mean(np.abs(p - t))),
                                 "ref_mean_ev": float(t.mean()), "ref_std_ev": float(t.std())}
    return out


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
    lines += ["", f"CDFT on {cd['n']} held-out geometries (N-1, N, N+1 at one geometry):", "",
              "| index | R² | MAE / eV | DFT mean / eV | DFT std / eV |", "|---|---|---|---|---|"]
    for k in ("ip", "ea", "chi", "eta", "omega"):
        if k in cd:
            v = cd[k]
            lines.append(f"| {k} | {v['r2']:.3f} | {v['mae_ev']:.3f} | {v['ref_mean_ev']:.2f} | {v['ref_std_ev']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", help="charge data set (default: the committed set, else the partial export)")
    ap.add_argument("--out", default="/tmp/aimnet_me_run")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--force-weight", type=float, default=0.0)
    ap.add_argument("--charge-weight", type=float, default=10.0)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--valid-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="small")
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results/aimnet_me.json"))
    args = ap.parse_args(argv)
    from phai.commands.train_aimnet import SIZES

    path = Path(args.data) if args.data else next((p for p in CANDIDATES if p.is_file()), None)
    if path is None:
        raise SystemExit("no charge data set found (give a path)")
    data = read_charge_data(path)
    names = file_test_split(path)
    if not names and data.split is not None:
        names = sorted(set(data.molecule[data.split == "test"].tolist()))
    train, test, test_names = split(data, names, args.test_fraction, args.seed)
    elements = sorted({int(z) for zs in data.numbers for z in np.unique(zs)})
    cfg = MEConfig(model={"elements": elements, **SIZES[args.size]}, elements=tuple(elements), epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr, seed=args.seed, force_weight=args.force_weight,
                   charge_weight=args.charge_weight, valid_fraction=args.valid_fraction)
    print(f"{path}: {len(data)} states of {len(np.unique(data.molecule))} molecules; train {len(train)} states, "
          f"test {len(test)} states ({', '.join(test_names)})", flush=True)
    t0 = time.perf_counter()

    def show(row):
        if row["epoch"] % 10 == 0 or row["epoch"] == 1:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
                              if k in ("epoch", "lr", "train_energy_rmse", "val_energy_rmse", "val_charge_rmse",
                                       "seconds")}), flush=True)

    trainer = train_aimnet_me(cfg, train, None, args.out, callback=show)
    seconds = time.perf_counter() - t0
    import phai

    pot = phai.load(args.out)
    result = {"data": str(path), "states": len(data), "molecules": len(np.unique(data.molecule)),
              "train_states": len(trainer.train_set),
              "valid_states": 0 if trainer.valid_set is None else len(trainer.valid_set), "test_states": len(test),
              "test_molecules": test_names, "epochs": trainer.epoch, "train_seconds": seconds,
              "config": cfg.to_json(), "sae": trainer.sae.tolist(), "state_shift": trainer.state_shift.tolist(),
              "best_val_loss": trainer.best_loss, "test": evaluate(pot, test),
              "train": evaluate(pot, trainer.train_set)["states"]}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"\ntrain states energy RMSE (all): {result['train']['all']['rmse_kcal']:.2f} kcal/mol; "
          f"{seconds:.0f} s training")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
