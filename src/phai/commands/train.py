"""``phai train [CONFIG] --data FILE --energy-key NAME [--forces-key NAME] [--init ani-1x|DIR]
[--freeze-layers 0,2] [--epochs N] [--batch-size B] [--lr X] [--seed S] [--members M]
[--delta-from NAME] --out DIR``.

Trains an ANI ensemble (:mod:`phai.train`) and writes it to ``DIR`` (a model folder:
``phai energy --model DIR`` evaluates it; ``DIR/checkpoint`` the training state; metrics
and the learning curve beside). Rerunning the same command resumes from the checkpoint.

``CONFIG`` is a TOML or JSON file::

    out = "run"
    [data]
    path = "labels.h5"              # ANI HDF5 (Hartree converted on reading) or any file ASE reads
    energy_key = "wb97x_dz.energy"
    forces_key = "wb97x_dz.forces"  # optional
    delta_from = ""                 # optional: train on energy_key minus this key (Δ-learning)
    [train]                         # any field of phai.train.TrainConfig
    init = "ani-1x"
    freeze_layers = [0, 2]
    epochs = 200

Flags given on the command line override the file. Extended XYZ input takes energies (eV)
from ``atoms.info[energy_key]`` and forces (eV/Å) from ``atoms.arrays[forces_key]``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune an ANI ensemble")
    p.add_argument("config", nargs="?", help="TOML or JSON file of settings (optional)")
    p.add_argument("--data", help="training data: ANI HDF5 (.h5) or any file ASE reads")
    p.add_argument("--energy-key", help="energy field (e.g. wb97x_dz.energy, ccsd(t)_cbs.energy)")
    p.add_argument("--forces-key", help="force field (e.g. wb97x_dz.forces); omit for energy-only training")
    p.add_argument("--delta-from", help="Δ-learning: train on energy-key minus this energy field")
    p.add_argument("--init", help="start from a pretrained name (ani-1x) or a model/output folder")
    p.add_argument("--freeze-layers", help="comma-separated 0-based linear layers to keep fixed (ANI-1ccx: 0,2)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--members", type=int, help="ensemble size (default 8)")
    p.add_argument("--out", help="output folder (resumed if it holds a checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def read_settings(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such configuration file")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        import tomllib

        return tomllib.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: cannot parse the configuration ({exc})") from None


def load_data(path: str, energy_key: str, forces_key: str | None = None, delta_from: str | None = None):
    """A :class:`phai.train.TrainingSet` from an ANI HDF5 file or any file ASE reads (eV, eV/Å)."""
    import numpy as np

    from ..train import TrainingSet

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such data file")
    if p.suffix.lower() in (".h5", ".hdf5"):
        from ..data import read_ani_h5

        if delta_from:
            conf = read_ani_h5(p, energy_key, None, properties=(delta_from,))
            ts = TrainingSet.from_conformations(conf)
            low = np.concatenate([np.asarray(g.properties[delta_from], np.float64) for g in conf.groups])
            from ..units import HARTREE_TO_EV

            ts.energies = ts.energies - low * HARTREE_TO_EV
            return ts
        return TrainingSet.from_conformations(read_ani_h5(p, energy_key, forces_key))
    from ..cli import read_frames

    frames = read_frames(str(p))
    try:
        e = [float(a.info[energy_key]) for a in frames]
        f = [a.arrays[forces_key] for a in frames] if forces_key else None
        low = [float(a.info[delta_from]) for a in frames] if delta_from else None
    except KeyError as exc:
        raise InputError(f"{path}: a frame has no field {exc}") from None
    groups = [a.info.get("name", a.get_chemical_formula()) for a in frames]
    ts = TrainingSet.from_frames(frames, e, f, groups)
    if low is not None:
        ts.energies = ts.energies - np.asarray(low)
        ts.forces = None
    return ts


def run(args) -> int:
    from ..train import TrainConfig, Trainer

    settings = read_settings(args.config) if args.config else {}
    data = dict(settings.get("data", {}))
    train_kw = dict(settings.get("train", {}))
    out = args.out or settings.get("out")
    for flag, key in (("data", "path"), ("energy_key", "energy_key"), ("forces_key", "forces_key"),
                      ("delta_from", "delta_from")):
        if getattr(args, flag):
            data[key] = getattr(args, flag)
    for flag in ("init", "epochs", "batch_size", "lr", "seed", "members"):
        if getattr(args, flag) is not None:
            train_kw[flag] = getattr(args, flag)
    if args.freeze_layers is not None:
        try:
            train_kw["freeze_layers"] = [int(x) for x in args.freeze_layers.split(",") if x.strip()]
        except ValueError:
            raise InputError(f"--freeze-layers takes comma-separated integers, got {args.freeze_layers!r}") from None
    if args.no_progress:
        train_kw["progress"] = False
    if not data.get("path") or not data.get("energy_key"):
        raise InputError("give the data file and its energy field (--data FILE --energy-key NAME, or [data] in CONFIG)")
    if not out:
        raise InputError("give an output folder (--out DIR, or out = ... in CONFIG)")
    ts = load_data(data["path"], data["energy_key"], data.get("forces_key") or None, data.get("delta_from") or None)
    valid = None
    if data.get("valid"):
        valid = load_data(data["valid"], data["energy_key"], data.get("forces_key") or None,
                          data.get("delta_from") or None)
    config = TrainConfig.from_dict({"name": Path(out).name, **train_kw})
    trainer = Trainer(config, ts, valid, out_dir=out)
    resumed = trainer.state["step"] > 0
    print(f"phai train: {len(trainer.train_set)} training and {len(trainer.valid_set)} validation conformations, "
          f"{config.members} members, {'resuming at epoch ' + str(trainer.state['epoch'] + 1) if resumed else 'new run'}"
          f", output {out}", flush=True)
    res = trainer.fit()
    h = res.history[-1] if res.history else {}
    print(f"phai train: stopped after {res.stopped}; validation energy RMSE {h.get('val_energy_rmse', float('nan')):.3f}"
          f" kcal/mol; model in {out} (phai energy --model {out} FILE)")
    return 0
