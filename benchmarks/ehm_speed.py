"""Speed of batched extended-Hückel orbital energies against RDKit's EHT (YAeHMOP), in one
process, and the cost of one ML-EHM training step.

Usage:  PYTHONPATH=src python benchmarks/ehm_speed.py [--n 1000] [--repeat 3]

Structures: the 44 CHNO molecules of tests/data/chno_molecules.extxyz (3-27 atoms), each
repeated with Gaussian noise (sigma 0.03 Å, seed 0) up to ``--n`` structures. phai:
``phai.physics.ehm_batch.run_batched`` (validation, grouping into size buckets, padding,
float64 jitted vmapped kernels, unpadding, finite checks) -- timed after a first call that
compiles. RDKit: ``rdEHTTools.RunMol`` on a Mol holding the same atoms and coordinates.
The two are timed alternately ``--repeat`` times (wall and process CPU time; the machine is
shared), and the range of the ratios is printed.
Both return orbital energies of every structure; the script checks they agree (1e-6 eV).
"""

from __future__ import annotations

import os

# Small matrices: one BLAS/LAPACK thread. OpenBLAS's default thread pool (one thread per core)
# makes each 50x50 eigen-solve wait on thread hand-offs; on a shared 2-core machine that made
# JAX's CPU eigh ~60x slower. Must be set before NumPy/SciPy/JAX load OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rdkit_mol(z, r, charge=0):
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    m = Chem.RWMol()
    for a in z:
        m.AddAtom(Chem.Atom(int(a)))
    conf = Chem.Conformer(len(z))
    for k, p in enumerate(r):
        conf.SetAtomPosition(k, Point3D(*map(float, p)))
    m.GetAtomWithIdx(0).SetFormalCharge(int(charge))  # RDKit's EHT counts electrons from formal charges
    m = m.GetMol()
    m.AddConformer(conf, assignId=True)
    return m


class _quiet_stdout:
    """Silence C-level writes to file descriptors 1 and 2."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 1)
        os.dup2(self.null, 2)

    def __exit__(self, *exc):
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)
        os.close(self.null)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="timed phai/RDKit pairs (alternating)")
    args = ap.parse_args()
    import jax

    from phai.physics.ehm_batch import run_batched

    frames = ase.io.read(ROOT / "tests" / "data" / "chno_molecules.extxyz", index=":")
    rng = np.random.default_rng(0)
    structures = []
    while len(structures) < args.n:
        for f in frames:
            if len(structures) == args.n:
                break
            structures.append((f.numbers, f.positions + rng.normal(0, 0.03, f.positions.shape), f.info.get("charge", 0)))
    res = {"structures": len(structures), "atoms_mean": float(np.mean([len(s[0]) for s in structures]))}

    t0 = time.perf_counter()
    run_batched(structures)
    res["phai_first_call_s"] = time.perf_counter() - t0

    from rdkit.Chem import rdEHTTools

    mols = [rdkit_mol(z, r, q) for z, r, q in structures]

    def rdkit_run():
        out = []
        with _quiet_stdout():  # YAeHMOP prints a warning for every X-H distance below 1 Å
            for m in mols:
                ok, eht = rdEHTTools.RunMol(m)
                if not ok:
                    raise RuntimeError("RDKit's EHT failed")
                out.append(np.asarray(eht.GetOrbitalEnergies()))
        return out

    def timed(fn):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - t0, time.process_time() - c0

    # alternate the two, --repeat times: the machine is shared, so each pair sees similar load
    runs = []
    for _ in range(args.repeat):
        ours, p_wall, p_cpu = timed(lambda: run_batched(structures))
        ref, r_wall, r_cpu = timed(rdkit_run)
        runs.append({"phai_s": p_wall, "rdkit_s": r_wall, "phai_cpu_s": p_cpu, "rdkit_cpu_s": r_cpu,
                     "speedup": r_wall / p_wall, "speedup_cpu": r_cpu / p_cpu})
    res["runs"] = runs
    res["phai_s"] = min(r["phai_s"] for r in runs)
    res["rdkit_s"] = min(r["rdkit_s"] for r in runs)
    worst = max(float(np.max(np.abs(a.energies - b)[b < 30])) for a, b in zip(ours, ref))
    res["max_abs_diff_ev_below_30ev"] = worst
    res["speedup_phai_over_rdkit"] = res["rdkit_s"] / res["phai_s"]  # best of each
    res["speedup_range"] = [min(r["speedup"] for r in runs), max(r["speedup"] for r in runs)]
    res["speedup_cpu_range"] = [min(r["speedup_cpu"] for r in runs), max(r["speedup_cpu"] for r in runs)]
    res["jax_backend"] = jax.default_backend()
    res["openblas_threads"] = os.environ.get("OPENBLAS_NUM_THREADS")

    # one ML-EHM training step on the training frames of phai's data set (float64)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    from phai.models import ml_ehm

    data = ml_ehm.load_dataset()
    rows = np.nonzero(~data.test)[0]
    batch = [jax.tree.map(jnp.asarray, x) for x in ml_ehm.subset(data.batch, rows)]
    tgt = ml_ehm.OrbitalTargets(jnp.asarray(data.targets.target[rows]), jnp.asarray(data.targets.weight[rows]))
    model = ml_ehm.MLEHM()
    params = model.init(jax.random.PRNGKey(0), batch[0][0], batch[1][0], jax.tree.map(lambda x: x[0], batch[2]))
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        v, g = jax.value_and_grad(lambda q: ml_ehm.orbital_loss(ml_ehm.batch_apply(model, q, *batch).energies, tgt))(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, v

    params, state, v = step(params, state)
    jax.block_until_ready(v)
    t0 = time.perf_counter()
    k = 20
    for _ in range(k):
        params, state, v = step(params, state)
    jax.block_until_ready(v)
    res["train_step_ms"] = 1e3 * (time.perf_counter() - t0) / k
    res["train_step_batch"] = len(rows)
    res["train_step_orbital_slots"] = int(batch[2].alpha.shape[1])
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
