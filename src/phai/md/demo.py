"""The simulation part of ``phai demo`` (the README's main job).

Optimize a molecule (L-BFGS), run a short NVT trajectory (Langevin, jax-md), continue it
briefly in NVE to measure energy conservation, and write into one folder:

* ``optimized.extxyz`` – the relaxed structure;
* ``trajectory.extxyz`` and ``md.csv`` – the NVT trajectory and its log
  (``time_fs,potential_eV,kinetic_eV,total_eV,temperature_K``);
* ``nve.csv`` – the NVE continuation's log;
* ``energy.png`` – potential, kinetic and total energy and the temperature against time;
* ``summary.json`` – the figures printed at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .optimize import optimize
from .run import run_md


def plot_md(nvt, path, nve=None, title: str | None = None) -> None:
    """Energies (eV, relative to the first frame's total) and temperature (K) against time (fs)."""
    from matplotlib.figure import Figure  # no pyplot: nothing global changes

    fig = Figure(figsize=(7, 5.5))
    ax, bx = fig.subplots(2, 1, sharex=True)
    ref = nvt.total[0]
    for res, style, tag in ((nvt, "-", "NVT"), (nve, "--", "NVE")):
        if res is None:
            continue
        ax.plot(res.time_fs, res.potential - ref, style, color="C0", label=f"potential ({tag})")
        ax.plot(res.time_fs, res.kinetic, style, color="C1", label=f"kinetic ({tag})")
        ax.plot(res.time_fs, res.total - ref, style, color="C2", label=f"total ({tag})")
        bx.plot(res.time_fs, res.temperature, style, color="C3")
    bx.axhline(nvt.settings.temperature, color="k", lw=0.8, ls=":")
    ax.set_ylabel(f"energy - {ref:.3f} eV (eV)")
    ax.legend(fontsize=7, ncol=2)
    bx.set_ylabel("temperature (K)")
    bx.set_xlabel("time (fs)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def simulation_demo(atoms, potential, out="phai-demo", *, md_steps: int = 2000, nve_steps: int | None = None,
                    dt: float = 0.5, temperature: float = 300.0, log_every: int = 20, seed: int = 0,
                    progress: bool = True) -> dict:
    """Optimize ``atoms``, run NVT then NVE, write the files listed above; return the summary.

    Units: eV, eV/Å, K, fs, seconds. The potential's own precision is used throughout.
    ``nve_steps`` defaults to a fifth of ``md_steps`` (at least ``log_every``).
    """
    import ase.io

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"molecule": atoms.get_chemical_formula(), "atoms": len(atoms)}
    t0 = time.perf_counter()
    opt = optimize(atoms, potential, fmax=0.01, steps=1000)
    t1 = time.perf_counter()
    ase.io.write(out / "optimized.extxyz", opt.atoms, format="extxyz")
    summary.update({"initial_energy_eV": opt.initial_energy, "optimized_energy_eV": opt.energy,
                    "optimized_max_force_eV_per_A": opt.fmax, "optimization_steps": opt.steps,
                    "optimization_converged": opt.converged, "optimization_s": t1 - t0})
    nvt = run_md(opt.atoms, potential, trajectory=out / "trajectory.extxyz", log=out / "md.csv",
                 progress=progress, ensemble="nvt", temperature=temperature, dt=dt, steps=md_steps,
                 log_every=log_every, seed=seed)
    half = nvt.temperature[len(nvt.temperature) // 2:]
    summary.update({"nvt_ps": md_steps * dt / 1000, "dt_fs": dt, "thermostat": "langevin",
                    "temperature_target_K": temperature,
                    "temperature_mean_K": float(np.mean(half)), "temperature_std_K": float(np.std(half)),
                    "potential_mean_eV": float(np.mean(nvt.potential[len(nvt.potential) // 2:])),
                    "nvt_s": nvt.wall_time, "nvt_ms_per_step": 1e3 * nvt.wall_time / md_steps})
    nve = None
    nve_steps = max(md_steps // 5, log_every) if nve_steps is None else nve_steps
    if nve_steps > 0:
        last = nvt.atoms
        nve = run_md(last, potential, log=out / "nve.csv", progress=False, momenta=last.get_momenta(),
                     ensemble="nve", temperature=temperature, dt=dt, steps=nve_steps, log_every=log_every)
        nve = nve._replace(time_fs=nve.time_fs + nvt.time_fs[-1])
        dev = np.abs(nve.total - nve.total[0]) / len(atoms)
        summary.update({"nve_ps": nve_steps * dt / 1000, "nve_drift_meV_per_atom": 1e3 * nve.drift_per_atom,
                        "nve_max_deviation_meV_per_atom": 1e3 * float(dev.max()), "nve_s": nve.wall_time})
    plot_md(nvt, out / "energy.png", nve, title=f"{atoms.get_chemical_formula()}, {temperature:g} K")
    summary["total_s"] = time.perf_counter() - t0
    summary["files"] = sorted({p.name for p in out.iterdir()} | {"summary.json"})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def print_summary(s: dict, out) -> None:
    """The summary as aligned lines."""
    print(f"optimization      {s['initial_energy_eV']:.6f} -> {s['optimized_energy_eV']:.6f} eV in "
          f"{s['optimization_steps']} L-BFGS steps, max force {s['optimized_max_force_eV_per_A']:.4f} eV/Å "
          f"({'converged' if s['optimization_converged'] else 'NOT converged'}), {s['optimization_s']:.1f} s")
    print(f"NVT (Langevin)    {s['nvt_ps']:g} ps at {s['dt_fs']:g} fs, target {s['temperature_target_K']:g} K: "
          f"T = {s['temperature_mean_K']:.1f} +- {s['temperature_std_K']:.1f} K (second half), "
          f"{s['nvt_s']:.1f} s ({s['nvt_ms_per_step']:.2f} ms/step, compilation included)")
    if "nve_ps" in s:
        print(f"NVE continuation  {s['nve_ps']:g} ps: total-energy drift {s['nve_drift_meV_per_atom']:+.3f} meV/atom, "
              f"max deviation {s['nve_max_deviation_meV_per_atom']:.3f} meV/atom, {s['nve_s']:.1f} s")
    print(f"written to        {out}/: {', '.join(s['files'])}")
