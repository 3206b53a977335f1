"""ML-EHM results: train on phai's DFT data set, compare with plain EHM, fit plain EHM's
per-element parameters by gradient descent, draw the torsion figure.

Usage (from the repository root):
    PYTHONPATH=src python benchmarks/ehm_results.py [--steps 1500] [--save-model] [--fit-steps 400] [--gap-weight 1]
    (the bundled model: --steps 2500 --lr 1e-2 --fit-steps 400 --gap-weight 1 --save-model)

Prints MAEs (eV) against B3LYP/6-31G(d) on the held-out frames (odd multiples of 10 degrees
of the butadiene and 2-aza-1,3-butadiene scans; 1-aza-1,3-butadiene if labelled) for:
plain EHM (Hoffmann, weighted WH, = RDKit), plain EHM + the best constant shift (fit on the
training frames), plain EHM with gradient-fitted per-element parameters, and ML-EHM, pooled
(``mae_test``), per held-out molecule, and on the undistorted and distorted held-out frames
separately (``mae_test_undistorted``, ``mae_test_distorted``); and the gap between the levels
that cross at the held-out 90-degree frame of each scan (``gap_at_90``: butadiene HOMO/HOMO-1,
2-aza-1,3-butadiene HOMO-1/HOMO-2) for DFT, plain EHM and ML-EHM. ML-EHM's fixed energy
reference (``energy_shift``) is unweighted plain EHM's least-squares offset on the training frames.
Writes benchmarks/ehm_results.json, benchmarks/ehm_torsion.png, and with --save-model the
bundled model src/phai/data/ehm/ml_ehm_model and fitted parameters src/phai/data/ehm/ehm_fit.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: see benchmarks/ehm_speed.py

import argparse
import json
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import optax

from phai.models import ml_ehm
from phai.physics import HOFFMANN, huckel_orbitals_batch
from phai.train.full_batch import fit_full_batch

ROOT = Path(__file__).resolve().parents[1]
ELEMENTS = (1, 6, 7, 8)


def plain_energies(batch, *, weighted=True, params=None):
    """Plain EHM energies [B, O]; ``params`` = per-element dict of arrays (fit) or Hoffmann."""
    numbers, pos, system = (jax.tree.map(jnp.asarray, x) for x in batch)
    if params is None:
        return huckel_orbitals_batch(pos, system, weighted=weighted).energies
    alpha, zeta, K = orbital_parameters(numbers, system, params)
    return huckel_orbitals_batch(pos, system, weighted=weighted, alpha=alpha, zeta=zeta, K=K).energies


def hoffmann_table():
    a = np.array([[HOFFMANN[z].alpha_s, HOFFMANN[z].alpha_p or 0.0] for z in ELEMENTS])
    zt = np.array([[HOFFMANN[z].zeta_s, HOFFMANN[z].zeta_p or 1.0] for z in ELEMENTS])
    return {"alpha": jnp.asarray(a), "log_zeta": jnp.log(jnp.asarray(zt)), "K": jnp.asarray(1.75)}


def orbital_parameters(numbers, system, params):
    """Per-orbital alpha, zeta [B, O] and K [B] from per-element tables."""
    table = np.full(119, 0, np.int32)
    for k, z in enumerate(ELEMENTS):
        table[z] = k
    el = jnp.asarray(table)[numbers]  # [B, A]
    atom = system.basis.atom
    e_orb = jnp.take_along_axis(el, atom, axis=1)  # [B, O]
    l = jnp.minimum(system.basis.l, 1)
    alpha = params["alpha"][e_orb, l]
    zeta = jnp.exp(params["log_zeta"][e_orb, l])
    mask = system.basis.mask
    alpha = jnp.where(mask, alpha, 0.0)
    zeta = jnp.where(mask, zeta, 1.0)
    K = jnp.broadcast_to(params["K"], numbers.shape[:1])
    return alpha, zeta, K


def mae(e, tgt, rows=None):
    e, t, w = np.asarray(e), tgt.target, tgt.weight
    if rows is not None:
        e, t, w = e[rows], t[rows], w[rows]
    return float(np.sum(w * np.abs(e - t)) / np.sum(w))


def fit_plain(batch, tgt, steps, lr=2e-2):
    numbers, pos, system = (jax.tree.map(jnp.asarray, x) for x in batch)
    t = ml_ehm.OrbitalTargets(jnp.asarray(tgt.target), jnp.asarray(tgt.weight))

    def loss(p):
        alpha, zeta, K = orbital_parameters(numbers, system, p)
        e = huckel_orbitals_batch(pos, system, weighted=True, alpha=alpha, zeta=zeta, K=K).energies
        return ml_ehm.orbital_loss(e, t)

    return fit_full_batch(loss, hoffmann_table(), optax.adam(lr), steps)


def crossings(angles, levels, tol=0.15):
    """Angles where adjacent sorted levels come within ``tol`` eV at a local minimum of their gap:
    list of (angle, lower level index)."""
    out = []
    for k in range(levels.shape[1] - 1):
        gap = levels[:, k + 1] - levels[:, k]
        for a in range(len(angles)):
            lo = gap[max(a - 1, 0)]
            hi = gap[min(a + 1, len(angles) - 1)]
            if gap[a] < tol and gap[a] <= lo and gap[a] <= hi:
                out.append((float(angles[a]), k))
    return out


CROSSING_PAIRS = {"butadiene": (0, 1), "azabutadiene": (1, 2)}
"""The seed figure's crossing of each scan: (HOMO-a, HOMO-b) = (HOMO, HOMO-1) and (HOMO-1, HOMO-2)."""


def crossing_gaps(data, energies, angle=90.0):
    """Gap (eV) between the two levels that cross in each scan at the undistorted ``angle``
    frame (90 degrees is a held-out angle): ``{molecule: {method: gap}}``."""
    out = {}
    for name, (a, b) in CROSSING_PAIRS.items():
        rows = np.nonzero((data.molecule == name) & (data.distortion < 0) & (data.dihedral == angle))[0]
        r = int(rows[0])
        homo = int(np.asarray(data.batch[2].n_electrons)[r]) // 2 - 1
        out[name] = {"levels": f"HOMO-{a}/HOMO-{b}" if a else f"HOMO/HOMO-{b}", "test": bool(data.test[r])}
        out[name] |= {k: float(np.asarray(e)[r, homo - a] - np.asarray(e)[r, homo - b]) for k, e in energies.items()}
    return out


def torsion_figure(data, e_plain, e_ml, path=None, n_levels=4):
    """The seed figure: top occupied levels and the LUMO of butadiene and 2-aza-1,3-butadiene
    against the central torsion, DFT (lines), ML-EHM (circles), plain EHM (dotted).
    Returns ``(figure, crossings)``; saves to ``path`` if given."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=False)
    report = {}
    for ax, name, title in zip(axes, ("butadiene", "azabutadiene"), ("butadiene", "2-aza-1,3-butadiene")):
        rows = np.nonzero((data.molecule == name) & (data.distortion < 0))[0]
        rows = rows[np.argsort(data.dihedral[rows])]
        ang = data.dihedral[rows]
        homo = (np.asarray(data.batch[2].n_electrons)[rows] // 2 - 1)[0]
        sel = np.arange(homo - n_levels + 2, homo + 2)  # top occupied + LUMO
        dft = data.targets.target[rows][:, sel]
        pl = np.asarray(e_plain)[rows][:, sel]
        ml = np.asarray(e_ml)[rows][:, sel]
        report[name] = {"dft": crossings(ang, dft[:, :-1]), "ehm": crossings(ang, pl[:, :-1]),
                        "ml_ehm": crossings(ang, ml[:, :-1])}
        labels = [f"HOMO-{homo - s}" if s < homo else ("HOMO" if s == homo else "LUMO") for s in sel]
        for k in range(len(sel)):
            c = f"C{k}"
            ax.plot(ang, dft[:, k], "-", color=c, lw=2, label=f"DFT {labels[k]}")
            ax.plot(ang, ml[:, k], "o", color=c, ms=4, mfc="none", label="ML-EHM" if k == 0 else None)
            ax.plot(ang, pl[:, k], ":", color=c, lw=1.2, label="plain EHM" if k == 0 else None)
        for key, marker in (("dft", "X"), ("ml_ehm", "D")):
            for a, k in report[name][key]:
                i = int(np.argmin(np.abs(ang - a)))
                y = (dft if key == "dft" else ml)[i, k:k + 2].mean()
                ax.plot([a], [y], marker, color="k", ms=9 if key == "dft" else 15, mfc="none" if key == "ml_ehm" else "k",
                        mew=1.5, label=None)  # the ML-EHM diamond encloses a DFT X at the same place
        test = data.test[rows]
        for a in ang[test]:
            ax.axvline(a, color="0.92", lw=3, zorder=0)
        ax.set_title(f"{title}\ngrey: held-out angles; X: DFT crossing; ◇: ML-EHM crossing", fontsize=9)
        ax.set_xlabel("central torsion / degrees (0 = s-cis)")
        ax.set_ylabel("orbital energy / eV")
        ax.set_xticks(range(0, 181, 30))
    axes[0].legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig, report


def main():
    import matplotlib

    matplotlib.use("Agg")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--fit-steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gap-weight", type=float, default=1.0,
                    help="weight of the adjacent-level spacing term of the ML-EHM loss (ml_ehm.orbital_loss); "
                         "0 = levels only")
    ap.add_argument("--save-model", action="store_true")
    args = ap.parse_args()
    data = ml_ehm.load_dataset()
    train_rows, test_rows = np.nonzero(~data.test)[0], np.nonzero(data.test)[0]
    print(f"{len(data.test)} frames: {len(train_rows)} train, {len(test_rows)} test "
          f"({sorted(set(data.molecule[test_rows]))})")
    tr = ml_ehm.subset(data.batch, train_rows)
    tt = ml_ehm.OrbitalTargets(data.targets.target[train_rows], data.targets.weight[train_rows])
    res = {"frames": {"train": len(train_rows), "test": len(test_rows)}}

    e_plain = plain_energies(data.batch)
    shift = float(np.sum(tt.weight * (tt.target - np.asarray(e_plain)[train_rows])) / np.sum(tt.weight))
    res["mae_test"] = {"ehm": mae(e_plain, data.targets, test_rows),
                       "ehm_shifted": mae(np.asarray(e_plain) + shift, data.targets, test_rows)}
    res["ehm_shift_ev"] = shift
    res["mae_test"]["ehm_unweighted"] = mae(plain_energies(data.batch, weighted=False), data.targets, test_rows)

    t0 = time.perf_counter()
    fitted, fl = fit_plain(tr, tt, args.fit_steps)
    res["fit_seconds"] = time.perf_counter() - t0
    e_fit = plain_energies(data.batch, params=fitted)
    res["mae_test"]["ehm_fitted"] = mae(e_fit, data.targets, test_rows)
    res["mae_train"] = {"ehm": mae(e_plain, data.targets, train_rows), "ehm_fitted": mae(e_fit, data.targets, train_rows)}
    fit_table = {"elements": list(ELEMENTS), "alpha_ev": np.asarray(fitted["alpha"]).tolist(),
                 "zeta": np.exp(np.asarray(fitted["log_zeta"])).tolist(), "K": float(fitted["K"]),
                 "loss_first_last": [float(fl[0]), float(fl[-1])], "steps": args.fit_steps}
    print("fitted plain EHM:", json.dumps(fit_table))

    # ML-EHM's fixed energy reference: plain (unweighted, the model's form) EHM's least-squares
    # offset to DFT on the training frames (ml_ehm's docstring says why EHM needs one)
    e_unw = np.asarray(plain_energies(tr, weighted=False))
    model_shift = float(np.sum(tt.weight * (tt.target - e_unw)) / np.sum(tt.weight))
    res["ml_ehm_energy_shift_ev"] = model_shift
    model = ml_ehm.MLEHM(energy_shift=model_shift)
    n0, p0, s0 = (jax.tree.map(jnp.asarray, x) for x in tr)
    params = model.init(jax.random.PRNGKey(args.seed), n0[0], p0[0], jax.tree.map(lambda x: x[0], s0))
    t0 = time.perf_counter()
    params, losses = ml_ehm.train(model, params, tr, tt, steps=args.steps, learning_rate=args.lr,
                                  gap_weight=args.gap_weight, log_every=max(args.steps // 10, 1))
    res["train_seconds"] = time.perf_counter() - t0
    res["train_loss_first_last"] = [float(losses[0]), float(losses[-1])]
    apply = jax.jit(ml_ehm.batch_apply, static_argnums=0)
    e_ml = apply(model, params, *(jax.tree.map(jnp.asarray, x) for x in data.batch)).energies
    res["mae_test"]["ml_ehm"] = mae(e_ml, data.targets, test_rows)
    res["mae_train"]["ml_ehm"] = mae(e_ml, data.targets, train_rows)
    per_mol = {}
    for name in sorted(set(data.molecule[test_rows])):
        rows = test_rows[data.molecule[test_rows] == name]
        per_mol[name] = {"ehm": mae(e_plain, data.targets, rows), "ml_ehm": mae(e_ml, data.targets, rows),
                         "ehm_fitted": mae(e_fit, data.targets, rows), "frames": len(rows)}
    res["mae_test_per_molecule"] = per_mol
    methods = (("ehm", e_plain), ("ehm_fitted", e_fit), ("ml_ehm", e_ml))
    for key, rows in (("mae_test_distorted", test_rows[data.distortion[test_rows] >= 0]),
                      ("mae_test_undistorted", test_rows[data.distortion[test_rows] < 0])):
        res[key] = {k: mae(e, data.targets, rows) for k, e in methods} | {"frames": len(rows)}
    res["ml_ehm_learned_shift_ev"] = float(params["params"]["shift"])
    res["gap_at_90"] = crossing_gaps(data, {"dft": data.targets.target, "ehm": e_plain, "ml_ehm": e_ml})
    res["ratio_ehm_over_ml_ehm"] = res["mae_test"]["ehm"] / res["mae_test"]["ml_ehm"]
    res["crossings"] = torsion_figure(data, e_plain, e_ml, ROOT / "benchmarks" / "ehm_torsion.png")[1]
    print(json.dumps(res, indent=1))
    (ROOT / "benchmarks" / "ehm_results.json").write_text(json.dumps(res, indent=1) + "\n")
    if args.save_model:
        info = {"data": "src/phai/data/ehm/ehm_dft.npz (B3LYP/6-31G(d))", "steps": args.steps, "lr": args.lr,
                "seed": args.seed, "gap_weight": args.gap_weight, "train_frames": len(train_rows),
                "mae_test": res["mae_test"]}
        ml_ehm.save(ml_ehm.BUNDLED, ml_ehm.TrainedMLEHM(model, params, info))
        (ROOT / "src" / "phai" / "data" / "ehm" / "ehm_fit.json").write_text(json.dumps(fit_table, indent=1) + "\n")
        print(f"saved {ml_ehm.BUNDLED}")


if __name__ == "__main__":
    main()
