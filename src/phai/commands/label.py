"""``phai label``: quantum-chemistry labels, durable and resumable.

::

    phai label --smiles FILE --method wb97x/6-31g* --out STORE [--conformers K] [--temperature T]
               [--seed S] [--processes N] [--threads T] [--retry-failed]
    phai label --xyz FILE --method ccsd(t)/cc-pvdz --out STORE [--charge Q] [--multiplicity M]
    phai label export STORE OUT.h5 [--levels L1,L2]
    phai label summary STORE

``--smiles FILE``: one molecule per line, ``SMILES [name]`` (``#`` starts a comment); each is
embedded with RDKit, relaxed with GFN2-xTB and sampled by normal modes
(:mod:`phai.labels.conformers`, ``--conformers`` samples at ``--temperature`` K).
``--xyz FILE``: every frame of any file ASE reads is labelled as given; its name is
``atoms.info["molecule"]`` or ``<file stem>_<formula>``, its charge and multiplicity
``--charge``/``--multiplicity`` or ``atoms.info``. Methods: ``METHOD/BASIS`` for PySCF
(``wb97x/6-31g*`` with Cartesian d as Gaussian, ``hf/...``, any libxc functional,
``ccsd(t)/cc-pvdz``) or ``gfn2-xtb``. Finished labels are written one file each into
``STORE/labels/`` as they complete; rerunning the same command computes only what is missing.
``export`` writes the ANI-1x HDF5 layout (Hartree; ``wb97x_dz.energy``, ``wb97x_dz.forces``,
``ccsd(t)_dz.energy``, ``hf_dz.energy``, ``gfn2.energy``, ... NaN where not computed).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("label", help="label conformers with PySCF or tblite into a resumable store; "
                                     "'phai label export STORE OUT.h5' writes ANI HDF5")
    p.add_argument("action", nargs="*", metavar="export STORE OUT.h5 | summary STORE",
                   help="export a store to ANI HDF5, or summarise it")
    p.add_argument("--smiles", metavar="FILE", help="molecules, one 'SMILES [name]' per line")
    p.add_argument("--xyz", metavar="FILE", help="geometries to label as given (any file ASE reads)")
    p.add_argument("--method", default="wb97x/6-31g*", help="METHOD/BASIS (PySCF) or gfn2-xtb (default wb97x/6-31g*)")
    p.add_argument("--out", metavar="STORE", help="store folder (created; reused to resume)")
    p.add_argument("--conformers", type=int, default=10, help="normal-mode samples per SMILES (default 10)")
    p.add_argument("--temperature", type=float, default=600.0, help="normal-mode sampling temperature, K (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--charge", type=int, default=None, help="total charge (e) of every molecule")
    p.add_argument("--multiplicity", type=int, default=None, help="2S+1 of every molecule")
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads per worker (default 1)")
    p.add_argument("--retry-failed", action="store_true", help="recompute labels stored as failed")
    p.add_argument("--levels", default=None, help="export: comma-separated levels (default all)")
    p.set_defaults(func=run)


def read_smiles_file(path: str) -> list[tuple[str, str]]:
    """``[(smiles, name)]`` from a file of ``SMILES [name]`` lines."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        smiles, name = parts[0], (parts[1] if len(parts) > 1 else parts[0])
        out.append((smiles, name))
    if not out:
        raise InputError(f"{path}: no SMILES in the file")
    names = [n for _, n in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{path}: molecule names must be unique, repeated: {', '.join(dup)}")
    return out


def _conformers_from_args(args):
    import numpy as np

    from ..labels.conformers import Conformer, sample_conformers

    confs = []
    if args.smiles:
        for smiles, name in read_smiles_file(args.smiles):
            confs += sample_conformers(smiles, args.conformers, args.temperature, name=name, seed=args.seed,
                                       charge=args.charge or 0, multiplicity=args.multiplicity or 1)
    if args.xyz:
        from ..cli import read_frames

        stem = Path(args.xyz).stem
        for k, atoms in enumerate(read_frames(args.xyz)):
            name = str(atoms.info.get("molecule") or f"{stem}_{atoms.get_chemical_formula()}")
            charge = args.charge if args.charge is not None else int(atoms.info.get("charge", 0))
            mult = args.multiplicity if args.multiplicity is not None else int(atoms.info.get("multiplicity", 1))
            confs.append(Conformer(name, atoms.get_atomic_numbers(), np.asarray(atoms.get_positions()), charge,
                                   mult, {"file": args.xyz, "frame": k, "sample": k}))
    return confs


def run(args) -> int:
    from ..labels.labellers import labeller_from_level
    from ..labels.store import export_ani_h5, label_many, summary

    if args.action:
        verb, rest = args.action[0], args.action[1:]
        if verb == "export":
            if len(rest) != 2:
                raise InputError("usage: phai label export STORE OUT.h5")
            levels = args.levels.split(",") if args.levels else None
            print(export_ani_h5(rest[0], rest[1], levels))
            return 0
        if verb == "summary":
            if len(rest) != 1:
                raise InputError("usage: phai label summary STORE")
            print(json.dumps(summary(rest[0]), indent=1))
            return 0
        raise InputError(f"unknown label action {verb!r}; use 'export' or 'summary', or give --smiles/--xyz")
    if not (args.smiles or args.xyz):
        raise InputError("give --smiles FILE or --xyz FILE (or 'export STORE OUT.h5')")
    if not args.out:
        raise InputError("give --out STORE (a folder; rerun with the same folder to resume)")
    if args.conformers < 1 or args.processes < 1 or args.threads < 1:
        raise InputError("--conformers, --processes and --threads must be at least 1")
    labeller = labeller_from_level(args.method)
    confs = _conformers_from_args(args)
    stats = label_many(labeller, confs, args.out, processes=args.processes, threads=args.threads,
                       retry_failed=args.retry_failed, progress=True)
    print(json.dumps({"level": labeller.level, "store": str(args.out), **stats}))
    return 0
