"""``phai data info|convert|split``: inspect, convert and split conformation data sets.

``phai data info FILE [--energy-key K] [--forces-key F] [--json]``
    For an ANI HDF5 file: its layout, groups, conformations and the datasets it holds
    (methods/properties such as ``wb97x_dz.energy``). With ``--energy-key`` (or for an
    extended XYZ file) also reads the set, streaming, and prints counts per element and
    energy ranges (eV).
``phai data convert IN OUT --energy-key K [--forces-key F] [--out-energy-key K2] [--out-forces-key F2] [--ev]``
    Between ANI HDF5 (``.h5``/``.hdf5``) and extended XYZ (anything else ASE writes as
    extxyz), either direction. HDF5 output is in Hartree (the public files' units) unless
    ``--ev``. Conformations without a finite requested label are dropped (and counted).
``phai data split IN --energy-key K [--forces-key F] [--fractions 0.8,0.1,0.1] [--seed 0] --out DIR``
    Split by molecule (no molecule in two parts) into ``DIR/train.h5``, ``DIR/valid.h5``,
    ``DIR/test.h5`` (as many parts as fractions; names ``part<k>.h5`` beyond three).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

H5_SUFFIXES = (".h5", ".hdf5")


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect, convert and split data sets (ANI HDF5, extended XYZ)")
    verbs = p.add_subparsers(dest="data_command", metavar="{info,convert,split}")
    verbs.required = True

    info = verbs.add_parser("info", help="what a data file holds")
    info.add_argument("file", metavar="FILE")
    info.add_argument("--energy-key", default=None, help="read this energy (HDF5) to report statistics")
    info.add_argument("--forces-key", default=None)
    info.add_argument("--json", action="store_true", help="one JSON object")
    info.set_defaults(func=run_info)

    conv = verbs.add_parser("convert", help="ANI HDF5 <-> extended XYZ")
    conv.add_argument("input", metavar="IN")
    conv.add_argument("output", metavar="OUT")
    _label_args(conv)
    conv.add_argument("--out-energy-key", default=None, help="energy name in OUT (default: --energy-key)")
    conv.add_argument("--out-forces-key", default=None, help="forces name in OUT (default: --forces-key)")
    conv.add_argument("--ev", action="store_true", help="HDF5 output in eV and eV/Å instead of Hartree")
    conv.set_defaults(func=run_convert)

    split = verbs.add_parser("split", help="split by molecule into HDF5 files")
    split.add_argument("input", metavar="IN")
    _label_args(split)
    split.add_argument("--fractions", default="0.8,0.1,0.1", help="comma-separated, summing to 1")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", required=True, metavar="DIR")
    split.set_defaults(func=run_split)


def _label_args(p) -> None:
    p.add_argument("--energy-key", required=True,
                   help="energy field: an HDF5 dataset (e.g. wb97x_dz.energy) or an extxyz info key (e.g. energy)")
    p.add_argument("--forces-key", default=None, help="forces field (e.g. wb97x_dz.forces, forces)")


def _is_h5(path) -> bool:
    return Path(path).suffix.lower() in H5_SUFFIXES


def _read(path, energy_key, forces_key):
    from ..data import read_ani_h5, read_extxyz

    if _is_h5(path):
        return read_ani_h5(path, energy_key, forces_key)
    return read_extxyz(path, energy_key, forces_key)


def run_info(args) -> int:
    from ..data import ani_h5_keys, iter_ani_h5, read_extxyz
    from ..data.conformations import statistics

    out = {"file": args.file}
    if _is_h5(args.file):
        out.update(ani_h5_keys(args.file))
        if args.energy_key:
            # streamed: one group in memory at a time
            out["statistics"] = statistics(iter_ani_h5(args.file, args.energy_key, args.forces_key))
    else:
        out["statistics"] = read_extxyz(args.file, args.energy_key or "energy", args.forces_key).statistics()
    if args.json:
        print(json.dumps(out, default=list))
        return 0
    for key, value in out.items():
        if key == "keys":
            print("datasets (groups holding each):")
            for k, n in value.items():
                print(f"  {k:32s} {n}")
        elif key == "statistics":
            print("statistics:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")
    return 0


def run_convert(args) -> int:
    from ..data import write_ani_h5, write_extxyz

    if Path(args.input).resolve() == Path(args.output).resolve():
        raise InputError("IN and OUT are the same file")
    data = _read(args.input, args.energy_key, args.forces_key)
    e_key = args.out_energy_key or args.energy_key
    f_key = args.out_forces_key or args.forces_key
    if _is_h5(args.output):
        write_ani_h5(args.output, data, e_key, f_key, hartree=not args.ev)
    else:
        if args.ev:
            raise InputError("--ev applies to HDF5 output only (extended XYZ is always in eV)")
        write_extxyz(args.output, data, e_key, f_key or "forces")
    print(f"{args.output}: {len(data)} conformations in {data.num_groups} groups ({len(data.molecules)} molecules)")
    return 0


def run_split(args) -> int:
    from ..data import write_ani_h5

    try:
        fractions = tuple(float(x) for x in args.fractions.split(","))
    except ValueError:
        raise InputError(f"--fractions {args.fractions!r}: expected comma-separated numbers") from None
    data = _read(args.input, args.energy_key, args.forces_key)
    parts = data.split_by_molecule(fractions, seed=args.seed)
    names = ("train", "valid", "test") if len(parts) <= 3 else tuple(f"part{k}" for k in range(len(parts)))
    out = Path(args.out)
    for name, part in zip(names, parts):
        path = write_ani_h5(out / f"{name}.h5", part, args.energy_key, args.forces_key)
        print(f"{path}: {len(part)} conformations, {len(part.molecules)} molecules")
    return 0
