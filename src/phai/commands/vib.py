"""``phai vib FILE [--model ani-1x] [--optimize] [--json]``.

Harmonic vibrational analysis of one structure: the Hessian by autodiff (float64 by
default), mass-weighted with ASE's atomic masses (amu), translations and rotations projected
out, frequencies in cm^-1 (imaginary modes printed as ``123.4i`` and given as negative
numbers in ``--json``) and the zero-point energy (eV). ``--optimize`` relaxes the structure
first (L-BFGS to ``--fmax``); without it, a structure whose largest force exceeds 0.01 eV/Å
gets a warning, since frequencies are only meaningful at a stationary point.
"""

from __future__ import annotations

import json
import sys

from ..units import EV_TO_KCALMOL
from .optimize import add_model_options, load_potential, one_frame

STATIONARY_FMAX = 0.01  # eV/Å: above this the structure is not treated as stationary (warning)


def register(sub) -> None:
    p = sub.add_parser("vib", help="harmonic frequencies (cm^-1) and zero-point energy",
                       description="Harmonic frequencies from the autodiff Hessian. Units: cm^-1, eV.")
    p.add_argument("file", metavar="FILE", help="any file ASE reads")
    add_model_options(p)
    p.add_argument("--optimize", action="store_true", help="relax the structure first (L-BFGS)")
    p.add_argument("--fmax", type=float, default=1e-3,
                   help="with --optimize: convergence, eV/Å (default 0.001)")
    p.add_argument("--json", action="store_true", help="one JSON object: frequencies_cm1, zpe_eV, ...")
    p.set_defaults(func=run)


def _fmt(f: float) -> str:
    return f"{-f:.2f}i" if f < 0 else f"{f:.2f}"


def run(args) -> int:
    from ..md.optimize import max_force, optimize
    from ..md.vibrations import vibrations

    atoms = one_frame(args.file, args.frame)
    pot = load_potential(args)
    if args.optimize:
        res = optimize(atoms, pot, fmax=args.fmax, steps=2000)
        if not res.converged:
            print(f"phai: warning: optimization stopped at max force {res.fmax:.4f} eV/Å", file=sys.stderr)
        atoms = res.atoms
    r = pot(atoms)
    fmax = max_force(r.forces)
    if fmax > STATIONARY_FMAX:
        print(f"phai: warning: max force {fmax:.4f} eV/Å > {STATIONARY_FMAX} eV/Å: not a stationary point, "
              f"frequencies are approximate (use --optimize)", file=sys.stderr)
    vib = vibrations(atoms, pot)
    if args.json:
        print(json.dumps({"file": args.file, "energy": r.energy, "max_force": fmax,
                          "frequencies_cm1": vib.frequencies.tolist(), "zpe_eV": vib.zpe,
                          "linear": vib.linear, "num_imaginary": vib.num_imaginary}))
        return 0
    print(f"structure        {atoms.get_chemical_formula()} ({len(atoms)} atoms), {args.model} {args.model_precision}")
    print(f"energy           {r.energy:.6f} eV, max force {fmax:.5f} eV/Å")
    print(f"modes            {len(vib.frequencies)} ({'linear' if vib.linear else 'nonlinear'}; "
          f"translations and rotations projected out), {vib.num_imaginary} imaginary")
    print("mode  frequency / cm^-1")
    for k, f in enumerate(vib.frequencies):
        print(f"{k:4d}  {_fmt(f):>12s}")
    print(f"zero-point energy {vib.zpe:.6f} eV ({vib.zpe * EV_TO_KCALMOL:.4f} kcal/mol)")
    return 0
