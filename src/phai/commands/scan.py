"""``phai scan FILE --dihedral a b c d [--start 0 --stop 360 --step 15] [--out table.csv] [--plot scan.png]``.

Relaxed torsion scan (:func:`phai.md.scan.relaxed_scan`): the dihedral of atoms a-b-c-d
(0-based indices, as in the file) is set to each angle by rotating the c-side fragment
about the b-c bond, held fixed, and every other coordinate is optimized (L-BFGS to
``--fmax``). Writes a CSV table ``angle_deg,energy_eV,relative_kcal_mol`` (``--out``,
default ``scan.csv``) and, with ``--plot``, a PNG of the profile; prints the table.
"""

from __future__ import annotations

import sys

from ..errors import InputError
from .optimize import add_model_options, load_potential, one_frame


def register(sub) -> None:
    p = sub.add_parser("scan", help="relaxed torsion scan (table and plot)",
                       description="Relaxed torsion scan. Angles in degrees, energies in eV and kcal/mol.")
    p.add_argument("file", metavar="FILE", help="any file ASE reads")
    p.add_argument("--dihedral", nargs=4, type=int, required=True, metavar=("A", "B", "C", "D"),
                   help="the four atoms of the torsion, 0-based indices (first atom of the file = 0); "
                        "the scan rotates about the B-C bond")
    p.add_argument("--start", type=float, default=0.0, help="first angle, degrees (default 0)")
    p.add_argument("--stop", type=float, default=360.0,
                   help="last angle, degrees (default 360; a full turn leaves out the repeated end point)")
    p.add_argument("--step", type=float, default=15.0, help="increment, degrees (default 15)")
    add_model_options(p)
    p.add_argument("--fmax", type=float, default=0.01, help="convergence of each point, eV/Å (default 0.01)")
    p.add_argument("--out", default="scan.csv", help="CSV table (default scan.csv)")
    p.add_argument("--plot", default=None, help="PNG of relative energy against angle")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from ..md.scan import plot_scan, relaxed_scan, scan_angles

    atoms = one_frame(args.file, args.frame)
    for f in (args.out, args.plot):
        if f and not Path(f).parent.is_dir():
            raise InputError(f"{f}: the folder {Path(f).parent} does not exist")
    angles = scan_angles(args.start, args.stop, args.step)
    bar = tqdm(total=len(angles), unit="point", desc="scan", disable=args.no_progress)
    try:
        res = relaxed_scan(atoms, args.dihedral, angles, load_potential(args), fmax=args.fmax,
                           progress=lambda k, a, e: bar.update(1))
    finally:
        bar.close()
    Path(args.out).write_text(res.table())
    if args.plot:
        plot_scan(res, args.plot, title=f"{atoms.get_chemical_formula()} dihedral {' '.join(map(str, args.dihedral))}")
    print(res.table(), end="")
    if not res.converged.all():
        bad = [f"{a:g}" for a, c in zip(res.angles, res.converged) if not c]
        print(f"phai: warning: points not converged at {', '.join(bad)} degrees", file=sys.stderr)
    return 0
