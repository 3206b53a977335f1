"""``phai train-aimnet --data FILE --out DIR [--epochs N] [--batch-size B] [--lr X] [--seed S]
[--force-weight W] [--charge-weight W] [--diff-weight W] [--spin-shifts] [--valid-fraction F]
[--size tiny|small|default] [--base MODEL [--base-charge-terms [--base-diffuse-term [BASIS]]]
[--base-charge-inputs]] [--members K]``

Trains an AIMNet-ME model (charge states, spin, NSE spin-resolved charges;
:mod:`phai.train.aimnet_me`) and writes it to ``DIR``: ``phai.load(DIR)`` is a charge-aware
potential, ``phai cdft FILE --model DIR`` gives its conceptual-DFT indices. ``DIR/checkpoint``
holds the training state (rerunning the command resumes), ``DIR/metrics.jsonl`` and
``metrics.csv`` one row per epoch.

``--base aimnet2-b973c`` (or ``aimnet2-wb97m-d3``): Δ-learning on a pretrained charge-aware
model: the network learns ``E - E_base`` and ``F - F_base`` (the base's predictions of every
label computed once in float64 and cached under the phai cache), and ``phai.load(DIR)`` returns
base + Δ. On phai's ωB97X/6-31+G(d) charge set the B97-3c AIMNet2 is the better base for vertical
IP, EA and the CDFT indices (held-out R² in ``benchmarks/README.md``; a data set's own choice:
``benchmarks/aimnet_me_base_choice.py``).
``--base-charge-terms`` (with an AIMNet2 base): first fit, by least squares on the labels, an
energy in the base's own atomic charges, ``sum_i a q_i + b q_i^2`` per element for each total
charge and electron-count parity (an electronegativity and hardness shift: it corrects ion
energies where the hole or the extra electron sits), then learn the network on top of base +
that term; ``phai.load(DIR)`` rebuilds the corrected base from the folder's record.
``--base-diffuse-term`` (with ``--base-charge-terms``): the fit also gets, for the anions of
closed-shell molecules (mostly unbound at 6-31+G(d), their extra electron held by the basis'
diffuse functions), a term in the kinetic energy of the most diffuse orbital of the labels'
diffuse s functions at the geometry (:mod:`phai.physics.diffuse`). ``BASIS`` names the labels'
basis: by default the one an HDF5 data file records in its ``level`` (phai's charge labels:
6-31+G*), else 6-31+G(d); or another diffuse basis (aug-cc-pVDZ, ma-def2-SVP, 6-31++G(d),
def2-SVPD, ...; its diffuse s exponents from PySCF's basis library), which must agree with the
recorded one. A basis without diffuse functions is refused: the term models an electron only they hold.
``--base-charge-inputs`` (with an AIMNet2 ``--base``): the network also reads the base's atomic
charges of each state (added to the initial atomic feature vectors and read by the energy head);
``phai.load(DIR)`` runs the base first and its forces include the term through those charges.
``--members K``: K models with seeds ``S .. S + K - 1`` in ``DIR/member0 ..``, and ``DIR``
an ensemble folder: ``phai.load(DIR)`` is one model, the members' mean (their spread in
``energy_std``; ``phai cdft`` prints the spread of each index).

``FILE``: the charge data set (HDF5 in the layout of ``tests/data/charge_labels``) or an
extended XYZ file with ``info`` ``charge``, ``multiplicity``, ``energy`` (eV), ``molecule`` and
arrays ``forces`` (eV/Å), ``q_alpha``, ``q_beta`` (e).
"""

from __future__ import annotations

import json


def labels_basis(path) -> str | None:
    """The basis of a charge data set's labels, from an HDF5 export's root ``level`` attribute
    (``"uwb97x/6-31+g*/df"`` -> ``"6-31+g*"``); None if the file does not record one."""
    if not str(path).lower().endswith((".h5", ".hdf5")):
        return None
    import h5py

    with h5py.File(path, "r") as f:
        level = f.attrs.get("level")
    if level is None:
        return None
    parts = (level.decode() if isinstance(level, bytes) else str(level)).split("/")
    return parts[1] if len(parts) > 1 and parts[1] else None


def diffuse_setting(basis, data=None):
    """``MEConfig.base_diffuse_term`` from ``--base-diffuse-term [BASIS]``: False (not given); else
    the basis, checked now (an unknown or non-diffuse basis is an error before any training):
    ``""`` (the flag alone) means the labels' own basis when ``data`` records one, else 6-31+G(d);
    a named basis must agree with the one ``data`` records. True stands for 6-31+G(d)."""
    if basis is None:
        return False
    from phai.errors import InputError
    from phai.physics.diffuse import DIFFUSE_S_631PLUS, diffuse_s_table

    recorded = labels_basis(data) if data is not None else None
    name = basis or recorded or "6-31+G(d)"
    table = diffuse_s_table(name)
    if recorded is not None and diffuse_s_table(recorded) != table:
        raise InputError(f"--base-diffuse-term {name}: the labels in {data} are at {recorded} (their 'level'), "
                         f"whose diffuse functions differ")
    return True if table == DIFFUSE_S_631PLUS else str(name)     # True: the built-in 6-31+G(d) table


SIZES = {
    "tiny": {"nfeature": 8, "pair_hidden": [16], "embed_hidden": [64, 32], "update_hidden": [32],
             "interact_hidden": [32], "aim_size": 32, "head_hidden": [32, 16], "npass": 2},
    "small": {"nfeature": 16, "pair_hidden": [32], "embed_hidden": [128, 64], "update_hidden": [64],
              "interact_hidden": [64], "aim_size": 64, "head_hidden": [64, 32], "npass": 2},
    "default": {},
}


def register(sub) -> None:
    p = sub.add_parser("train-aimnet", help="train an AIMNet-ME model (charge states, spin, NSE charges)")
    p.add_argument("--data", required=True, help="charge data set: HDF5 (charge_labels layout) or extended XYZ")
    p.add_argument("--out", required=True, help="output folder (model, checkpoint, metrics)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force-weight", type=float, default=0.1, help="0 trains without forces (faster)")
    p.add_argument("--charge-weight", type=float, default=10.0)
    p.add_argument("--diff-weight", type=float, default=0.0,
                   help="weight (1/eV^2) of the within-geometry E(q) - E(0) term (IP/EA directly; needs all "
                        "states of a geometry in the data); 0 = the papers' per-state losses only")
    p.add_argument("--spin-shifts", action="store_true",
                   help="self-energy offsets per charge and multiplicity (radical ions apart from closed-shell ones)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="held-out molecules for model selection")
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="network widths (see SIZES)")
    p.add_argument("--base", default=None, metavar="MODEL",
                   help="learn a correction on top of this charge-aware model (aimnet2-b973c, aimnet2-wb97m-d3); "
                        "phai.load(DIR) is then base + Δ")
    p.add_argument("--base-charge-terms", action="store_true",
                   help="with an AIMNet2 --base: fit an energy in the base's own atomic charges first (per element, "
                        "total charge and electron parity), then the network on top")
    p.add_argument("--base-diffuse-term", nargs="?", const="", default=None, metavar="BASIS",
                   help="with --base-charge-terms: add the diffuse-basis term of the anions of closed-shell "
                        "molecules to that fit, for labels in BASIS (default: the basis the data file records, "
                        "else 6-31+G(d); aug-cc-pVDZ, ma-def2-SVP, 6-31++G(d), def2-SVPD, ...: the exponents from "
                        "PySCF's basis library; phai.physics.diffuse)")
    p.add_argument("--base-charge-inputs", action="store_true",
                   help="with an AIMNet2 --base: the network also reads the base's atomic charges of each state")
    p.add_argument("--members", type=int, default=1,
                   help="ensemble of K models (seeds S..S+K-1) in DIR/member<k>; phai.load(DIR) is their mean")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from phai.errors import InputError
    from phai.models.aimnet_me import save_ensemble
    from phai.train.aimnet_me import MEConfig, read_charge_data, train_aimnet_me

    if args.epochs < 1 or args.batch_size < 1 or args.members < 1:
        raise InputError("--epochs, --batch-size and --members must be at least 1")
    if args.diff_weight < 0:
        raise InputError(f"--diff-weight must be >= 0, got {args.diff_weight}")
    if args.base_charge_terms and not args.base:
        raise InputError("--base-charge-terms corrects a base model: give --base too (e.g. aimnet2-b973c)")
    if args.base_diffuse_term is not None and not args.base_charge_terms:
        raise InputError("--base-diffuse-term is part of the charge-term fit: give --base-charge-terms too")
    if args.base_charge_inputs and not args.base:
        raise InputError("--base-charge-inputs gives the network a base model's charges: give --base too")
    if not 0 <= args.valid_fraction < 1:
        raise InputError(f"--valid-fraction must be in [0, 1), got {args.valid_fraction}")
    diffuse = diffuse_setting(args.base_diffuse_term, args.data)
    data = read_charge_data(args.data)
    elements = sorted({int(z) for zs in data.numbers for z in np.unique(zs)})
    model = {"elements": elements, **SIZES[args.size]}
    outs = [Path(args.out)] if args.members == 1 else [Path(args.out) / f"member{k}" for k in range(args.members)]
    for k, out in enumerate(outs):
        cfg = MEConfig(model=model, elements=tuple(elements), epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, seed=args.seed + k, force_weight=args.force_weight,
                       charge_weight=args.charge_weight, diff_weight=args.diff_weight,
                       spin_state_shifts=args.spin_shifts, valid_fraction=args.valid_fraction, base=args.base,
                       base_charge_terms=args.base_charge_terms, base_diffuse_term=diffuse,
                       base_charge_inputs=args.base_charge_inputs)

        def show(row, k=k):
            keys = ("epoch", "lr", "train_energy_rmse", "val_energy_rmse", "val_charge_rmse")
            print(json.dumps({**({"member": k} if args.members > 1 else {}), **{x: row[x] for x in keys if x in row}}),
                  flush=True)

        t = train_aimnet_me(cfg, data, None, out, callback=show)
        print(f"wrote {out} ({len(t.train_set)} training states, epoch {t.epoch})", flush=True)
    if args.members > 1:
        save_ensemble(args.out, outs)
    print(f"phai.load('{args.out}'): {'an ensemble of ' + str(args.members) if args.members > 1 else 'one'} "
          f"AIMNet-ME model{'s' if args.members > 1 else ''}{' on ' + args.base if args.base else ''}")
    return 0
