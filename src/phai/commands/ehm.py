"""``phai ehm FILE... [--model ehm|ml-ehm|PATH] [--charge Q] [--json] [--matrices]``.

Orbital energies by extended Hückel theory of every frame of every file ASE reads.

* ``--model ehm`` (default): Hoffmann's parameters, weighted Wolfsberg-Helmholz, as RDKit's
  ``rdEHTTools`` (YAeHMOP).
* ``--model ml-ehm``: the ML-EHM model bundled with phai (HIP-NN predicts alpha and K,
  :mod:`phai.models.ml_ehm`); ``--model PATH`` loads a trained ML-EHM folder.

``--json`` prints JSON Lines, one object per frame in input order: ``file``, ``frame``,
``orbital_energies`` (eV, ascending), ``homo_index`` (0-based), ``n_electrons``, and with
``--matrices`` also ``hamiltonian`` (eV) and ``overlap``, full symmetric matrices in RDKit's
atomic-orbital order (atoms in input order; per atom s, then p_x, p_y, p_z).
Without ``--json``: a table with HOMO, LUMO and gap. The charge of a frame is ``--charge``
if given, else ``atoms.info["charge"]``, else 0; closed shells only (even electron count).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("ehm", help="orbital energies by extended Hückel (plain or ML-EHM)")
    p.add_argument("files", nargs="+", metavar="FILE", help="any file ASE reads (all frames)")
    p.add_argument("--model", default="ehm",
                   help="'ehm' (Hoffmann parameters, default), 'ml-ehm' (bundled ML-EHM) or an ML-EHM folder")
    p.add_argument("--charge", type=int, default=None, help="total charge of every frame (e)")
    p.add_argument("--json", action="store_true", help="JSON Lines, one object per frame")
    p.add_argument("--matrices", action="store_true", help="with --json: add hamiltonian and overlap")
    p.set_defaults(func=run)


def _kernel(model: str):
    if model == "ehm":
        return None
    if model != "ml-ehm" and not Path(model).is_dir():
        raise InputError(f"--model {model!r}: expected 'ehm', 'ml-ehm' or an ML-EHM model folder")
    from ..models import ml_ehm

    return ml_ehm.load(ml_ehm.BUNDLED if model == "ml-ehm" else Path(model)).kernel()


def run(args) -> int:
    import numpy as np

    from ..cli import _print_table, read_frames
    from ..physics.ehm_batch import run_batched

    if args.matrices and not args.json:
        raise InputError("--matrices needs --json")
    frames = [(f, k, atoms) for f in args.files for k, atoms in enumerate(read_frames(f))]
    structures = [(a.get_atomic_numbers(), a.get_positions(),
                   args.charge if args.charge is not None else a.info.get("charge", 0)) for _, _, a in frames]
    results = run_batched(structures, kernel=_kernel(args.model), matrices=args.matrices,
                          labels=[f"{f} frame {k}" for f, k, _ in frames])
    if args.json:
        for (f, k, _), r in zip(frames, results):
            d = {"file": f, "frame": k, "orbital_energies": r.energies.tolist(), "homo_index": r.homo_index,
                 "n_electrons": 2 * (r.homo_index + 1)}
            if args.matrices:
                d["hamiltonian"] = r.hamiltonian.tolist()
                d["overlap"] = r.overlap.tolist()
            print(json.dumps(d))
    else:
        rows = []
        for (f, k, atoms), r in zip(frames, results):
            h = r.homo_index
            lumo = r.energies[h + 1] if h + 1 < len(r.energies) else np.nan
            rows.append((f, k, atoms.get_chemical_formula(), len(r.energies), r.energies[h], lumo, lumo - r.energies[h]))
        _print_table(["file", "frame", "formula", "orbitals", "HOMO / eV", "LUMO / eV", "gap / eV"], rows,
                     ["{}", "{}", "{}", "{}", "{:.4f}", "{:.4f}", "{:.4f}"])
    return 0
