"""``phai cdft FILE... --model aimnet2-wb97m-d3 [--charge Q] [--multiplicities M+ M0 M-] [--json]``

Vertical conceptual-DFT indices of every frame: the model's energies at charges ``Q + 1``,
``Q`` and ``Q - 1`` at the frame's geometry give IP, EA, chi, eta and omega in eV
(:mod:`phai.physics.cdft`). ``Q`` is ``--charge``, else the frame's ``info["charge"]``, else 0.
With ``--json``: one JSON object per frame with ``ip``, ``ea``, ``chi``, ``eta``, ``omega``
(eV), ``charges_of_states``, ``multiplicities``, ``energies`` (eV, same order) and
``atomic_charges`` (e, three lists), plus ``file`` and ``frame``; for an ensemble (AIMNet2, a
``phai train-aimnet --members K`` folder) also ``std``: the spread of each index over the
members (eV), shown as ``±`` columns in the table.
"""

from __future__ import annotations

import json

import numpy as np


def register(sub) -> None:
    p = sub.add_parser("cdft", help="conceptual-DFT indices (IP, EA, chi, eta, omega) from a charge-aware model")
    p.add_argument("files", nargs="+", metavar="FILE", help="any file ASE reads (all frames)")
    p.add_argument("--model", default="aimnet2-wb97m-d3", help="a charge-aware model (default aimnet2-wb97m-d3)")
    p.add_argument("--charge", type=float, default=None,
                   help="total charge Q of the reference state (default: the frame's info, else 0)")
    p.add_argument("--multiplicities", nargs=3, type=int, default=None, metavar=("M_PLUS", "M0", "M_MINUS"),
                   help="2S+1 of the states Q+1, Q, Q-1 (default: the lowest that fits each electron count)")
    p.add_argument("--precision", choices=["float32", "float64"], default="float32")
    p.add_argument("--json", action="store_true", help="JSON Lines, one object per frame")
    p.set_defaults(func=run)


def run(args) -> int:
    import phai
    from phai.cli import _print_table, read_frames
    from phai.errors import InputError
    from phai.physics.cdft import cdft

    model = phai.load(args.model, precision=args.precision)
    frames = [(f, k, atoms) for f in args.files for k, atoms in enumerate(read_frames(f))]
    rows = []
    for f, k, atoms in frames:
        charge = args.charge if args.charge is not None else atoms.info.get("charge", 0)
        try:
            res = cdft(model, atoms.get_atomic_numbers(), atoms.get_positions(), charge=charge,
                       multiplicities=args.multiplicities)
        except InputError as exc:
            raise type(exc)(f"{f} frame {k}: {exc}") from None
        if args.json:
            print(json.dumps({"file": f, "frame": k, "ip": res.ip, "ea": res.ea, "chi": res.chi, "eta": res.eta,
                              "omega": res.omega, "charges_of_states": list(res.charges_of_states),
                              "multiplicities": list(res.multiplicities), "energies": res.energies.tolist(),
                              "atomic_charges": None if res.atomic_charges is None
                              else np.asarray(res.atomic_charges, dtype=np.float64).tolist(),
                              "std": None if res.std is None else res.std._asdict()}))
        else:
            rows.append((f, k, len(atoms), atoms.get_chemical_formula(), res.charges_of_states[1],
                         res.ip, res.ea, res.chi, res.eta, res.omega)
                        + (() if res.std is None else (res.std.ip, res.std.ea, res.std.chi, res.std.eta,
                                                              res.std.omega)))
    if not args.json:
        spread = bool(rows) and len(rows[0]) > 10 and all(len(r) == len(rows[0]) for r in rows)
        rows = rows if spread else [r[:10] for r in rows]
        _print_table(["file", "frame", "atoms", "formula", "Q", "IP / eV", "EA / eV", "chi / eV", "eta / eV",
                      "omega / eV"] + (["±IP", "±EA", "±chi", "±eta", "±omega"] if spread else []), rows,
                     ["{}", "{}", "{}", "{}", "{:+d}"] + ["{:.4f}"] * (10 if spread else 5))
    return 0
