"""Would labels at another level of theory lift the Δ AIMNet-ME's CDFT indices? A probe.

The Δ runs of ``aimnet_me_experiment.py`` learn ``E_label - E_AIMNet2-B97-3c``; what no network
fits from 254 molecules is, to first order, the part of the label's IP and EA that the base
misses beyond one offset per kind of state (the no-network floor, ``aimnet_me_floor.py``).
``../shared/notes/papers.md`` says the paper's R² needs PBE0/ma-def2-SVP labels (AIMNet-NSE's
level). Before relabelling the whole set (about 10 CPU-hours), this probe relabels **geometry 0**
of a sample of its molecules, energies only, at

- ``pbe0/ma-def2-svp``: the paper's level (UKS, density-fitted, PySCF's ma-def2-SVP), and
- ``b97_3c/def2-mtzvp``: the base's own training level (libxc's B97-3c functional in its
  def2-mTZVP basis; its D3(BJ) and short-range-bond terms depend on the geometry alone and cancel
  exactly in a vertical IP or EA, so they are left out),

and compares, molecule by molecule and as a floor R², how far each level's vertical IP and EA are
from AIMNet2-B97-3c's, beside the committed ωB97X/6-31+G(d) labels. The B97-3c column separates
the base's own error (AIMNet2 against the DFT it was trained on) from the difference of levels.

Sample: the data set's 33 first-build molecules (the smallest, holding most of the χ error), 7
more small ones (CO, CO₂, N₂, N₂O, ketene, H₂O₂, hydrazine) and 14 drawn at random (seed 1) from
the rest; the states (charge, multiplicity) of the data set. Floors: each level's IP and EA
predicted as AIMNet2's plus the mean difference of its kind (closed-shell / radical neutral),
fitted leaving the molecule out; R² over the probe molecules (one geometry each).

Run (energies are stored one file per state, atomically, so a stopped run resumes)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/aimnet_me_level_probe.py compute --store DIR [--processes 2]
    PYTHONPATH=src python benchmarks/aimnet_me_level_probe.py collect --store DIR --out benchmarks/results/aimnet_me_level_probe.json
    PYTHONPATH=src python benchmarks/aimnet_me_level_probe.py report benchmarks/results/aimnet_me_level_probe.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aimnet_me_experiment import r2

from phai.physics.cdft import (
    cdft_indices,
    electronegativity,
    electrophilicity,
    hardness,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "charge_labels" / "charge_labels.h5"
LABEL_LEVEL = "wb97x/6-31+g*"   # the committed labels (uwb97x/6-31+g*/df)
LEVELS = {"pbe0/ma-def2-svp": ("pbe0", "ma-def2-svp"), "b97_3c/def2-mtzvp": ("b97_3c", "def2-mtzvp")}
STATES = (("anion", -1), ("neutral", 0), ("cation", 1))
FIRST_BUILD = 33
SMALL = ("carbon_monoxide", "carbon_dioxide", "dinitrogen", "nitrous_oxide", "ketene", "hydrogen_peroxide",
         "hydrazine")
RANDOM, RANDOM_SEED = 14, 1
INDICES = ("ip", "ea", "chi", "eta", "omega")


def probe_molecules(names_in_file) -> list[str]:
    """The probe's molecules (module docstring), in a fixed order."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_charge_dataset import MOLECULES

    first = [m[0] for m in MOLECULES[:FIRST_BUILD]]
    small = [n for n in SMALL if n not in first]
    rest = [n for n in sorted(names_in_file) if n not in first and n not in small]
    picked = np.random.default_rng(RANDOM_SEED).choice(rest, RANDOM, replace=False)
    return first + small + [str(n) for n in picked]


def read_states(names) -> dict:
    """``{name: {state: (numbers [A], positions [A, 3] Å, charge, multiplicity, E_label eV)}}``,
    geometry 0 of each molecule, from the committed data set."""
    import h5py

    from phai.units import HARTREE_TO_EV

    out = {}
    with h5py.File(DATA) as f:
        for n in names:
            out[n] = {}
            for s, _ in STATES:
                g = f[f"{n}/{s}"]
                out[n][s] = (g["atomic_numbers"][()], g["coordinates"][0], int(g["charge"][0]),
                             int(g["multiplicity"][0]), float(g["wb97x_pd.energy"][0]) * HARTREE_TO_EV)
    return out


def heavy_atoms(names) -> np.ndarray:
    """``[n]`` the number of atoms heavier than hydrogen of each molecule."""
    import h5py

    with h5py.File(DATA) as f:
        return np.array([int(np.sum(f[f"{n}/neutral"]["atomic_numbers"][()] > 1)) for n in names])


def _file(store: Path, level: str, name: str, state: str) -> Path:
    return store / f"{level.replace('/', '_')}__{name}__{state}.json"


def _job(args):
    store, level, name, state, (z, x, q, m) = args
    path = _file(Path(store), level, name, state)
    if path.exists():
        return path
    from phai.labels.labellers import LabelFailed, PySCFUKSLabeller

    xc, basis = LEVELS[level]
    lab = PySCFUKSLabeller(method=xc, basis=basis, density_fit=True, conv_tol=1e-9)
    t0 = time.perf_counter()
    try:
        rec = {"energy": lab.energy(z, x, q, m)}
    except LabelFailed as exc:
        rec = {"energy": None, "error": str(exc)}
    rec.update(level=lab.level, molecule=name, state=state, charge=q, multiplicity=m,
               seconds=round(time.perf_counter() - t0, 2))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)
    return path


def compute(store: Path, levels, processes: int) -> None:
    import h5py

    store.mkdir(parents=True, exist_ok=True)
    with h5py.File(DATA) as f:
        names = probe_molecules(list(f))
    states = read_states(names)
    jobs = [(str(store), lv, n, s, states[n][s][:4]) for lv in levels for n in names for s, _ in STATES
            if not _file(store, lv, n, s).exists()]
    print(f"{len(jobs)} states to compute ({len(names)} molecules, levels {', '.join(levels)})", flush=True)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:   # no fork after importing JAX
        for k, path in enumerate(pool.imap_unordered(_job, jobs), 1):
            print(f"{k}/{len(jobs)} {path.name}", flush=True)


def collect(store: Path, out: Path) -> dict:
    """Energies (eV) of every level, the labels' and AIMNet2-B97-3c's (float64), as one JSON."""
    import h5py

    import phai

    with h5py.File(DATA) as f:
        names = probe_molecules(list(f))
    states = read_states(names)
    base = phai.load("aimnet2-b973c", precision="float64")
    energies = {LABEL_LEVEL: {}, "aimnet2-b973c": {}, **{lv: {} for lv in LEVELS}}
    seconds = {lv: 0.0 for lv in LEVELS}
    for n in names:
        for per_level in energies.values():
            per_level[n] = {}
        for s, _ in STATES:
            z, x, q, m, e_label = states[n][s]
            energies[LABEL_LEVEL][n][s] = e_label
            energies["aimnet2-b973c"][n][s] = float(base.evaluate([(z, x, q)], multiplicity=m)[0].energy)
            for lv in LEVELS:
                p = _file(store, lv, n, s)
                rec = json.loads(p.read_text()) if p.exists() else {"energy": None}
                energies[lv][n][s] = rec["energy"]
                seconds[lv] += rec.get("seconds", 0.0)
    kinds = {n: "closed" if states[n]["neutral"][3] == 1 else "radical" for n in names}
    result = {"molecules": names, "kind": kinds, "energies_eV": energies,
              "scf_seconds": {k: round(v, 1) for k, v in seconds.items()},
              "note": "geometry 0 of each molecule of tests/data/charge_labels/charge_labels.h5; UKS, "
                      "density-fitted, energies only; see the script's docstring"}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    return result


def indices(e: dict) -> dict:
    """``{index: [n]}`` vertical IP, EA, χ, η, ω (eV) from ``{name: {state: E}}`` (eV)."""
    return cdft_indices(*(np.array([v[s] for v in e.values()]) for s in ("cation", "neutral", "anion")))._asdict()


def floor(label: dict, base: dict, kind: np.ndarray) -> dict:
    """The base's IP and EA plus the mean label-minus-base difference of the molecule's kind,
    fitted without the molecule (leave one out); χ, η, ω from those."""
    pred = {}
    for p in ("ip", "ea"):
        d = label[p] - base[p]
        out = np.empty_like(d)
        for i in range(len(d)):
            same = (kind == kind[i]) & (np.arange(len(d)) != i)
            out[i] = base[p][i] + d[same].mean()
        pred[p] = out
    pred["chi"], pred["eta"] = electronegativity(pred["ip"], pred["ea"]), hardness(pred["ip"], pred["ea"])
    pred["omega"] = electrophilicity(pred["chi"], pred["eta"])
    return pred


def report(result: dict) -> dict:
    names = result["molecules"]
    e = result["energies_eV"]
    ok = [n for n in names if all(e[lv][n][s] is not None for lv in e for s, _ in STATES)]
    kind = np.array([result["kind"][n] for n in ok])
    sub = {lv: {n: e[lv][n] for n in ok} for lv in e}
    base = indices(sub["aimnet2-b973c"])
    levels = [LABEL_LEVEL, *LEVELS]
    out = {"molecules": len(ok), "left_out": [n for n in names if n not in ok], "floor_r2": {}, "spread": {}}
    print(f"{len(ok)} molecules ({int(np.sum(kind == 'closed'))} closed-shell, {int(np.sum(kind == 'radical'))} "
          f"radical neutrals), geometry 0 each; left out (an SCF failed): {out['left_out'] or 'none'}\n")
    print("Floor R² (AIMNet2-B97-3c + a leave-one-out offset per kind), per level of the labels:")
    print(f"| labels | {' | '.join(INDICES)} |\n|---|{'---|' * len(INDICES)}")
    for lv in levels:
        y = indices(sub[lv])
        pred = floor(y, base, kind)
        out["floor_r2"][lv] = {k: r2(pred[k], y[k]) for k in INDICES}
        print(f"| {lv} | " + " | ".join(f"{out['floor_r2'][lv][k]:.3f}" for k in INDICES) + " |")
    print("\nSpread (std, eV) of label minus AIMNet2 within each kind, beside the spread of the label:")
    print("| labels | kind | IP: std(label - base) / std(label) | EA | χ |\n|---|---|---|---|---|")
    for lv in levels:
        y = indices(sub[lv])
        out["spread"][lv] = {}
        for k in ("closed", "radical"):
            m = kind == k
            cells = {p: (float(np.std(y[p][m] - base[p][m], ddof=1)), float(np.std(y[p][m], ddof=1)))
                     for p in ("ip", "ea", "chi")}
            out["spread"][lv][k] = cells
            print(f"| {lv} | {k} | " + " | ".join(f"{a:.2f} / {b:.2f}" for a, b in cells.values()) + " |")
    heavy = heavy_atoms(ok)
    lv_b, lv_h = "b97_3c/def2-mtzvp", LABEL_LEVEL
    out["level_difference_vs_heavy_atoms"] = {}
    print("\nCorrelation with the number of heavy atoms of the level difference, label minus B97-3c DFT:")
    for p in ("ip", "ea"):
        d = indices(sub[lv_h])[p] - indices(sub[lv_b])[p]
        cells = {k: float(np.corrcoef(heavy[kind == k], d[kind == k])[0, 1]) for k in ("closed", "radical")}
        out["level_difference_vs_heavy_atoms"][p] = cells
        print(f"  {p.upper()} ({lv_h} - {lv_b}): std {np.std(d, ddof=1):.2f} eV; "
              + ", ".join(f"{k} {v:+.2f}" for k, v in cells.items()))
    print("\nLabel minus AIMNet2 (eV), per molecule (IP, EA):")
    print(f"| molecule | kind | {' | '.join(levels)} |\n|---|---|{'---|' * len(levels)}")
    per = {lv: indices(sub[lv]) for lv in levels}
    out["per_molecule"] = {}
    for i, n in enumerate(ok):
        cells = [(float(per[lv]["ip"][i] - base["ip"][i]), float(per[lv]["ea"][i] - base["ea"][i])) for lv in levels]
        out["per_molecule"][n] = dict(zip(levels, cells))
        print(f"| {n} | {kind[i]} | " + " | ".join(f"{a:+.2f}, {b:+.2f}" for a, b in cells) + " |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compute")
    c.add_argument("--store", type=Path, required=True)
    c.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    c.add_argument("--processes", type=int, default=2)
    g = sub.add_parser("collect")
    g.add_argument("--store", type=Path, required=True)
    g.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("results", type=Path)
    r.add_argument("--json", type=Path, help="also write the report's figures here")
    args = ap.parse_args(argv)
    if args.cmd == "compute":
        compute(args.store, args.levels, args.processes)
    elif args.cmd == "collect":
        report(collect(args.store, args.out))
    else:
        out = report(json.loads(args.results.read_text()))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
