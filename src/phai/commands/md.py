"""``phai md FILE --model M --ensemble nve|nvt --temperature K --dt FS --steps N [...]``.

Molecular dynamics with jax-md (:func:`phai.md.run.run_md`): ``nve`` is velocity Verlet
(``simulate.nve``); ``nvt`` is Langevin (``simulate.nvt_langevin``, ``--friction`` in 1/fs,
default 0.01) or, with ``--thermostat nose-hoover``, a Nose-Hoover chain
(``simulate.nvt_nose_hoover``, ``--tau`` in fs, default 100). Initial velocities:
Maxwell-Boltzmann at ``--temperature`` (seeded by ``--seed``), zero total momentum. Steps
run in jitted ``lax.scan`` chunks of ``--log-every`` steps.

Writes the trajectory (``--traj``, default ``md.extxyz``: extended XYZ, one frame every
``--log-every`` steps, appended and flushed as it goes) and a CSV log (``--log``, default
``md.csv``) with exactly the columns ``time_fs,potential_eV,kinetic_eV,total_eV,temperature_K``.
Molecules (pbc all False) and periodic cells (pbc all True, neighbor lists) are supported;
AIMNet2 models (``--model aimnet2-wb97m-d3``, total charge ``--charge``, default the file's
``charge`` or 0) run molecules only.

Bad input (exit 2, one line): temperature < 0 K or above 10,000 K (NVT also needs > 0 K),
time step <= 0 fs or above 5 fs (above 2 fs: a warning), steps <= 0. A diverging trajectory
(non-finite positions or energy, a runaway temperature, an NVE total-energy change above
``--max-energy-jump`` eV/atom) stops with a message naming the step and exit status 2;
the files keep every frame written before it.
"""

from __future__ import annotations

import sys
import warnings

from .optimize import add_model_options, load_potential, one_frame

# The defaults of phai.md.run (kept here so that building the parser does not import jax-md).
DEFAULT_FRICTION = 0.01  # 1/fs
DEFAULT_TAU = 100.0  # fs
DEFAULT_MAX_ENERGY_JUMP = 0.05  # eV/atom


def register(sub) -> None:
    p = sub.add_parser("md", help="molecular dynamics (NVE or NVT) with jax-md",
                       description="Molecular dynamics with jax-md. Units: Å, eV, fs, amu, K.")
    p.add_argument("file", metavar="FILE", help="any file ASE reads (a molecule or a periodic cell)")
    add_model_options(p, precision="float32")
    p.add_argument("--charge", type=float, default=None,
                   help="total charge (e) for charge-aware models (AIMNet2); default: the file's, else 0")
    p.add_argument("--ensemble", choices=["nve", "nvt"], default="nvt", help="default nvt")
    p.add_argument("--thermostat", choices=["langevin", "nose-hoover"], default="langevin",
                   help="NVT thermostat (default langevin)")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="K: initial Maxwell-Boltzmann velocities and the NVT target (default 300)")
    p.add_argument("--dt", type=float, default=0.5, help="time step, fs (default 0.5; at most 5)")
    p.add_argument("--steps", type=int, default=1000, help="number of steps (default 1000)")
    p.add_argument("--log-every", type=int, default=10, help="steps between logged frames (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed of velocities and Langevin noise")
    p.add_argument("--friction", type=float, default=DEFAULT_FRICTION,
                   help=f"Langevin friction, 1/fs (default {DEFAULT_FRICTION})")
    p.add_argument("--tau", type=float, default=DEFAULT_TAU,
                   help=f"Nose-Hoover time constant, fs (default {DEFAULT_TAU:g})")
    p.add_argument("--max-energy-jump", type=float, default=DEFAULT_MAX_ENERGY_JUMP,
                   help=f"NVE: total-energy change (eV/atom) treated as divergence (default {DEFAULT_MAX_ENERGY_JUMP})")
    p.add_argument("--traj", default="md.extxyz", help="trajectory, extended XYZ (default md.extxyz)")
    p.add_argument("--log", default="md.csv", help="CSV log (default md.csv)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from ..errors import InputError
    from ..md.run import MDSettings, run_md

    settings = MDSettings(ensemble=args.ensemble, temperature=args.temperature, dt=args.dt, steps=args.steps,
                          log_every=args.log_every, seed=args.seed, thermostat=args.thermostat,
                          friction=args.friction, tau=args.tau, max_energy_jump=args.max_energy_jump)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings.check()  # bad options fail before the model is loaded
    for w in caught:
        print(f"phai: warning: {w.message}", file=sys.stderr)
    for f in (args.traj, args.log):
        if not Path(f).parent.is_dir():
            raise InputError(f"{f}: the folder {Path(f).parent} does not exist")
    atoms = one_frame(args.file, args.frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the dt warning was printed above
        res = run_md(atoms, load_potential(args), trajectory=args.traj, log=args.log,
                     progress=not args.no_progress, settings=settings, charge=args.charge)
    n = len(res.steps)
    half = res.temperature[n // 2:]
    print(f"structure        {atoms.get_chemical_formula()} ({len(atoms)} atoms), {args.model} {args.model_precision}")
    label = args.ensemble if args.ensemble == "nve" else f"nvt ({args.thermostat})"
    print(f"run              {label}, {args.steps} steps of {args.dt:g} fs = {args.steps * args.dt / 1000:g} ps, "
          f"{n} frames")
    print(f"potential        {res.potential[0]:.5f} -> {res.potential[-1]:.5f} eV")
    print(f"temperature      {np.mean(half):.1f} +- {np.std(half):.1f} K (second half)")
    if args.ensemble == "nve":
        print(f"total energy     {res.total[0]:.5f} eV, drift {1e3 * res.drift_per_atom:+.4f} meV/atom "
              f"(max deviation {1e3 * np.max(np.abs(res.total - res.total[0])) / len(atoms):.4f} meV/atom)")
    print(f"time             {res.wall_time:.1f} s ({1e3 * res.wall_time / args.steps:.2f} ms/step, compilation included)")
    print(f"written          {args.traj}, {args.log}")
    return 0
