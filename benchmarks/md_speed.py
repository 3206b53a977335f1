#!/usr/bin/env python
"""phai vs TorchANI on periodic water boxes (ANI-1x, 8 members, float32, this CPU).

(a) Energy + forces throughput and MD steps per second on 1,500- and 10,000-atom periodic
    water boxes, both libraries in this one process, printed as ratios. phai: the host path
    (``ANIPotential(atoms)``, what ``phai energy`` and the ASE calculator use) and the jax-md
    path (``phai.md.ani_neighbor_list``, NVE in ``lax.scan`` with a neighbor-list update
    every step). TorchANI 2.2.4: the model built with ``torchani.neurochem`` from the same
    NeuroChem files, called with ``cell`` and ``pbc``; its MD runs through ASE
    (``torchani.ase.Calculator`` + ``VelocityVerlet``).
(b) Time and peak memory of phai's energy + forces from 1,000 to 100,000 atoms, one fresh
    subprocess per size (peak RSS), with a plot ``md_scaling.png``; prints the cost of the
    last tenfold in size (target <= 12x) next to the TorchANI ratio (target >= 4x).

Water boxes: ``phai.md.systems.water_box`` (rigid waters on a cubic lattice at 1 g/cm^3,
random orientations re-drawn until no two molecules have atoms closer than 1.6 Å; seed 0).

Usage:
  python benchmarks/md_speed.py            # full run (~25 minutes on 2 shared cores)
  python benchmarks/md_speed.py --quick    # 1,500 atoms and 1,000-10,000 scaling (~5 minutes)
  python benchmarks/md_speed.py --scaling-only   # (b) alone, 1,000-100,000 atoms (~10 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
try:
    import phai
except ImportError:
    sys.path.insert(0, str(HERE.parent / "src"))

TARGET_RATIO = 4.0
TARGET_TENFOLD = 12.0
TORCHANI_MEMORY_LIMIT_GB = 12.0  # TorchANI's PBC pair search is quadratic in memory: skip above this


def water(atoms_wanted: int):
    from phai.md.systems import water_box

    return water_box(max(1, round(atoms_wanted / 3)), seed=0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def available_mb() -> float:
    """MemAvailable of this (shared) machine, MB."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("inf")


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# ------------------------------------------------------------------------------ phai
def phai_host_energy_forces(atoms, repeats=2):
    import phai

    pot = phai.load("ani-1x")
    t = time.perf_counter()
    res = pot(atoms)
    first = time.perf_counter() - t
    return res, first, best_of(lambda: pot(atoms), repeats)


def phai_md(atoms, steps=10, chunks=2):
    """(energy+forces s/call on the jax-md path, NVE steps/s, first-call s)."""
    import jax
    import jax.numpy as jnp
    from jax_md import simulate, space

    import phai
    import phai.md

    pot = phai.load("ani-1x")
    side = jnp.asarray(atoms.cell.lengths(), jnp.float32)
    disp, shift = space.periodic(side)
    nfn, efn = phai.md.ani_neighbor_list(pot, disp, side, atoms.numbers)
    R = jnp.asarray(atoms.positions, jnp.float32)
    t = time.perf_counter()
    nbrs = nfn.allocate(R)
    vg = jax.jit(jax.value_and_grad(efn))
    jax.block_until_ready(vg(R, nbrs))
    first = time.perf_counter() - t
    ef = best_of(lambda: jax.block_until_ready(vg(R, nbrs)), 2)
    init, apply = simulate.nve(efn, shift, 0.5 * phai.md.FS)
    mass = jnp.asarray(atoms.get_masses(), jnp.float32)[:, None]
    state = init(jax.random.PRNGKey(0), R, kT=300 * phai.md.KB, mass=mass, neighbor=nbrs)

    @jax.jit
    def chunk(state, nbrs):
        def body(c, _):
            s, n = c
            s = apply(s, neighbor=n)
            return (s, nfn.update(s.position, n)), None

        (state, nbrs), _ = jax.lax.scan(body, (state, nbrs), None, length=steps)
        return state, nbrs, None

    state, nbrs = phai.md.run_chunked(chunk, state, nbrs, nfn, 1)  # compile
    jax.block_until_ready(state.position)
    t = time.perf_counter()
    state, nbrs = phai.md.run_chunked(chunk, state, nbrs, nfn, chunks)
    jax.block_until_ready(state.position)
    rate = steps * chunks / (time.perf_counter() - t)
    return ef, rate, first


def ase_md_rate(atoms, calc, steps: int) -> float:
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    a = atoms.copy()
    a.calc = calc
    MaxwellBoltzmannDistribution(a, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(a, 0.5 * units.fs)
    a.get_forces()  # warm-up (compilation for phai)
    t = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t)


# ------------------------------------------------------------------------------ TorchANI
def torchani_model(tmpdir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.path.insert(0, str(HERE))
        from ani_speed import build_torchani
    return build_torchani(tmpdir)[0]


def torchani_energy_forces(model, atoms, repeats=1):
    import torch

    sp = torch.tensor([[{1: 0, 6: 1, 7: 2, 8: 3}[int(z)] for z in atoms.numbers]])
    cell = torch.tensor(atoms.cell.array, dtype=torch.float32)
    pbc = torch.tensor([True, True, True])

    def call():
        xyz = torch.tensor(atoms.positions[None], dtype=torch.float32, requires_grad=True)
        e = model((sp, xyz), cell=cell, pbc=pbc).energies
        f = -torch.autograd.grad(e.sum(), xyz)[0]
        return float(e), f[0].numpy()

    e, f = call()
    return e, f, best_of(call, repeats)


def torchani_calculator(model):
    import torchani

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchani.ase.Calculator(["H", "C", "N", "O"], model)


# ------------------------------------------------------------------------------ scaling worker
def worker(n_atoms: int) -> dict:
    atoms = water(n_atoms)
    t0 = time.perf_counter()
    res, first, best = phai_host_energy_forces(atoms, repeats=2 if len(atoms) < 50_000 else 1)
    return {"atoms": len(atoms), "first_s": first, "time_s": best, "peak_mb": peak_rss_mb(),
            "energy_eV": res.energy, "total_s": time.perf_counter() - t0}


def run_worker(n_atoms: int) -> dict:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, __file__, "--worker", str(n_atoms)], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        return {"atoms": n_atoms, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(rows, path):
    from matplotlib.figure import Figure

    ok = [r for r in rows if "error" not in r]
    n = np.array([r["atoms"] for r in ok], float)
    fig = Figure(figsize=(9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.loglog(n, [r["time_s"] for r in ok], "o-", label="phai energy+forces")
    ax1.loglog(n, ok[0]["time_s"] * n / n[0], "k--", lw=0.8, label="linear")
    ax1.set_xlabel("atoms")
    ax1.set_ylabel("time per call (s)")
    ax1.legend()
    ax2.loglog(n, [r["peak_mb"] / 1024 for r in ok], "o-", color="C1", label="peak RSS")
    ax2.loglog(n, ok[-1]["peak_mb"] / 1024 * n / n[-1], "k--", lw=0.8, label="linear")
    ax2.set_xlabel("atoms")
    ax2.set_ylabel("peak memory (GB)")
    ax2.legend()
    fig.suptitle("ANI-1x periodic water boxes, float32, phai host path (one process per size)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scaling-only", action="store_true", help="run (b) only, no TorchANI")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--plot", default=str(HERE / "md_scaling.png"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0
    import jax
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"jax {jax.__version__}, torch {torch.__version__}, {os.cpu_count()} CPU cores, float32, ANI-1x (8 members)")
    sizes_a = [1500] if args.quick else [1500, 10_000]
    sizes_b = [1000, 3000, 10_000] if args.quick else [1000, 3000, 10_000, 30_000, 100_000]

    # (b) first: each size in a fresh process, before this process holds any memory
    print("\n(b) scaling of phai energy+forces (host path, periodic, one subprocess per size)")
    rows = []
    for n in sizes_b:
        ok_rows = [r for r in rows if "error" not in r]
        if ok_rows:  # never start a size whose linearly extrapolated peak memory would not fit
            last = ok_rows[-1]
            need = last["peak_mb"] * n / last["atoms"]
            avail = available_mb()
            if need > 0.7 * avail:
                rows.append({"atoms": n, "error": f"skipped: needs ~{need / 1024:.1f} GB (linear from "
                                                  f"{last['atoms']} atoms), {avail / 1024:.1f} GB available"})
                print(f"  {n:>7} atoms: {rows[-1]['error']}")
                continue
        r = run_worker(n)
        rows.append(r)
        if "error" in r:
            print(f"  {n:>7} atoms: FAILED {r['error']}")
        else:
            print(f"  {r['atoms']:>7} atoms: {r['time_s']:8.3f} s/call ({r['atoms'] / r['time_s']:9.0f} atoms/s), "
                  f"first call {r['first_s']:7.1f} s, peak RSS {r['peak_mb'] / 1024:6.2f} GB")
    ok = [r for r in rows if "error" not in r]
    print("  rows: " + json.dumps(rows))
    plot(rows, args.plot)
    print(f"  plot: {args.plot}")
    tenfold = None
    if len(ok) >= 2:
        big = ok[-1]
        small = min(ok, key=lambda r: abs(r["atoms"] * 10 - big["atoms"]))
        tenfold = big["time_s"] / small["time_s"]
        grow = big["atoms"] / small["atoms"]
        mem = big["peak_mb"] / small["peak_mb"]
        print(f"  last {grow:.1f}-fold in size ({small['atoms']} -> {big['atoms']} atoms): time x{tenfold:.2f} "
              f"(target <= {TARGET_TENFOLD:g}), peak memory x{mem:.2f}")

    if args.scaling_only:
        return 0
    # (a) phai and TorchANI in this process
    print("\n(a) periodic water boxes: phai vs TorchANI 2.2.4 (cell + pbc)")
    tmp = tempfile.TemporaryDirectory()
    model = torchani_model(tmp.name)
    ta_peak, ta_peak_atoms = None, None
    ratios = []
    for n in sizes_a:
        atoms = water(n)
        a = len(atoms)
        res, first, t_host = phai_host_energy_forces(atoms)
        t_md_ef, md_rate, _ = phai_md(atoms)
        phai_ase_rate = ase_md_rate(atoms, phai.ase.PhaiCalculator("ani-1x"), 3)
        print(f"  {a} atoms, cell {atoms.cell.lengths()[0]:.2f} Å")
        print(f"    phai host   energy+forces {t_host:8.3f} s ({a / t_host:8.0f} atoms/s; first call {first:.1f} s)")
        print(f"    phai jax-md energy+forces {t_md_ef:8.3f} s; NVE {md_rate:7.3f} steps/s (lax.scan, list "
              f"updated every step); via ASE {phai_ase_rate:7.3f} steps/s")
        est_gb = None if ta_peak is None else ta_peak * (a / ta_peak_atoms) ** 2 / 1024
        if est_gb is not None and est_gb > TORCHANI_MEMORY_LIMIT_GB:
            print(f"    TorchANI    not run: its PBC neighbor search holds every atom pair for every cell "
                  f"shift (memory ~ A^2); from {ta_peak / 1024:.1f} GB at {ta_peak_atoms} atoms it would need "
                  f"~{est_gb:.0f} GB")
            continue
        e_ta, f_ta, t_ta = torchani_energy_forces(model, atoms)
        ta_peak, ta_peak_atoms = peak_rss_mb(), a  # process peak: an upper bound of TorchANI's
        ta_rate = ase_md_rate(atoms, torchani_calculator(model), 2)
        de = abs(e_ta * 27.211386024367243 - res.energy) / a
        df = float(np.abs(f_ta - res.forces).max())
        print(f"    TorchANI    energy+forces {t_ta:8.3f} s ({a / t_ta:8.0f} atoms/s); NVE via ASE "
              f"{ta_rate:7.3f} steps/s; peak RSS {ta_peak / 1024:.1f} GB")
        print(f"    agreement: |dE| {de * 1e3:.3f} meV/atom, max |dF| {df:.4f} eV/Å")
        r_ef, r_md = t_ta / t_host, md_rate / ta_rate
        ratios.append((a, r_ef, r_md))
        print(f"    RATIO phai/TorchANI: energy+forces x{r_ef:.1f}, MD steps/s x{r_md:.1f} (jax-md vs ASE), "
              f"x{phai_ase_rate / ta_rate:.1f} (both through ASE)   [target >= {TARGET_RATIO:g}]")
    tmp.cleanup()
    print("\nsummary")
    for a, r_ef, r_md in ratios:
        print(f"  {a} atoms: energy+forces x{r_ef:.1f}, MD x{r_md:.1f} vs TorchANI")
    if tenfold is not None:
        print(f"  scaling: last tenfold costs x{tenfold:.2f} in time")
    return 0


if __name__ == "__main__":
    import phai.ase

    sys.exit(main())
