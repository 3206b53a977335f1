"""``phai optimize FILE [--model ani-1x] [--fmax 0.01] [--steps N] [--out FILE]``.

Relaxes one structure (``--frame``, default 0, of any file ASE reads) with L-BFGS on a phai
potential (:func:`phai.md.optimize.optimize`, float64 by default) and writes the result
as extended XYZ (``--out``, default ``<input stem>-opt.extxyz``; written atomically) with
``energy_eV``, ``fmax_eV_per_A`` and ``converged`` in its info line. Prints the initial
and final energy (eV), the largest per-atom force (eV/Å), the steps and whether it
converged. Exit status 0 when converged, 1 when the step limit was reached first, 2 for
bad input.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_output
from ..errors import InputError


def add_model_options(p, precision: str = "float64") -> None:
    """``--model``, ``--precision`` and ``--frame`` (shared by the simulation commands)."""
    p.add_argument("--model", default="ani-1x", help="model name or phai model folder (default ani-1x)")
    # dest is not "precision": phai.cli.main would switch JAX to x64 globally for that; the
    # potential runs float64 inside its own x64 context instead
    p.add_argument("--precision", dest="model_precision", choices=["float32", "float64"], default=precision,
                   help=f"arithmetic of the potential (default {precision})")
    p.add_argument("--frame", type=int, default=0, help="frame of FILE to use (0-based, default 0; -1 = last)")


def one_frame(path: str, frame: int):
    """Frame ``frame`` of ``path`` as ``ase.Atoms`` (a clear error if out of range)."""
    from ..cli import read_frames

    frames = read_frames(path)
    if not -len(frames) <= frame < len(frames):
        raise InputError(f"{path}: has {len(frames)} frame(s); --frame {frame} is out of range")
    atoms = frames[frame]
    atoms.calc = None
    return atoms


def load_potential(args):
    import phai

    return phai.load(args.model, precision=args.model_precision)


def write_atomic(path, atoms_list, **kw) -> None:
    """Write structures as extended XYZ atomically (:func:`phai.atomic.atomic_output`)."""
    import ase.io

    with atomic_output(path) as tmp, open(tmp, "w") as fh:
        ase.io.write(fh, atoms_list, format="extxyz", **kw)


def register(sub) -> None:
    p = sub.add_parser("optimize", help="relax a structure to a stationary point (L-BFGS)",
                       description="Relax a structure with L-BFGS on a phai potential. Units: Å, eV, eV/Å.")
    p.add_argument("file", metavar="FILE", help="any file ASE reads")
    add_model_options(p)
    p.add_argument("--fmax", type=float, default=0.01, help="convergence: largest per-atom force, eV/Å (default 0.01)")
    p.add_argument("--steps", type=int, default=1000, help="largest number of optimizer steps (default 1000)")
    p.add_argument("--out", default=None, help="output extended XYZ (default <input stem>-opt.extxyz)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..md.optimize import optimize

    atoms = one_frame(args.file, args.frame)
    out = Path(args.out) if args.out else Path(f"{Path(args.file).stem}-opt.extxyz")
    if out.parent and not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist")
    res = optimize(atoms, load_potential(args), fmax=args.fmax, steps=args.steps)
    final = res.atoms
    final.info.update({"energy_eV": res.energy, "fmax_eV_per_A": res.fmax, "converged": res.converged,
                       "model": args.model})
    write_atomic(out, [final])
    print(f"structure        {final.get_chemical_formula()} ({len(final)} atoms), {args.model} {args.model_precision}")
    print(f"initial energy   {res.initial_energy:.6f} eV")
    print(f"final energy     {res.energy:.6f} eV  ({res.energy - res.initial_energy:+.6f} eV)")
    print(f"max force        {res.fmax:.5f} eV/Å (fmax {args.fmax:g})")
    print(f"steps            {res.steps}")
    print(f"converged        {'yes' if res.converged else 'no'}")
    print(f"written          {out}")
    if not res.converged:
        print(f"phai: not converged within {args.steps} steps", file=sys.stderr)
        return 1
    return 0
