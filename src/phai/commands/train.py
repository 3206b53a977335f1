"""``phai train [CONFIG] --data FILE --energy-key NAME [--forces-key NAME] [--init ani-1x|DIR]
[--freeze-layers 0,2] [--epochs N] [--batch-size B] [--lr X] [--seed S] [--members M]
[--delta-from NAME | --base MODEL] [--stream yes|no|auto] --out DIR``.

Trains an ANI ensemble (:mod:`phai.train`) and writes it to ``DIR`` (a model folder:
``phai energy --model DIR`` evaluates it; ``DIR/checkpoint`` the training state; metrics
and the learning curve beside). Rerunning the same command resumes from the checkpoint.

Δ-learning (:mod:`phai.train.delta`), two modes:

* ``--base MODEL`` (a registry name such as ``ani-1x`` or a model folder): the ensemble learns
  ``E_label - E_MODEL`` (and forces ``F_label - F_MODEL`` with ``--forces-key``), the base
  predictions computed by phai in float64. ``DIR`` records the base, so ``phai.load(DIR)`` is
  the combined :class:`phai.train.DeltaPotential` and ``phai energy --model DIR`` prints base
  + Δ energies and forces (``energy_std``: the base and Δ ensemble spreads in quadrature).
* ``--delta-from KEY``: the ensemble learns the difference of two stored fields,
  ``energy-key - KEY`` (both Hartree in ANI files, converted to eV alike; forces are not
  used). ``DIR`` records that its base is a level of theory, not a model, and ``phai energy
  --model DIR`` says that it prints differences.

Either way the self energies are fitted to the differences the networks learn.

Streaming: with ``--stream yes`` (or ``auto``, the default, for ANI HDF5 files larger than
:data:`STREAM_ABOVE` bytes) the data stay in the file and each batch's coordinates and forces
are read when it is packed (:class:`phai.train.stream.StreamedTrainingSet`): memory holds the
atomic numbers and energies of the set plus one batch. The results are bit-identical to an
in-memory run on the same file.

``CONFIG`` is a TOML or JSON file::

    out = "run"
    [data]
    path = "labels.h5"              # ANI HDF5 (Hartree converted on reading) or any file ASE reads
    energy_key = "wb97x_dz.energy"
    forces_key = "wb97x_dz.forces"  # optional
    delta_from = ""                 # optional: train on energy_key minus this key (Δ-learning)
    base = ""                       # optional: train on energy_key minus this model's predictions
    stream = "auto"                 # "yes", "no" or "auto" (HDF5 files above STREAM_ABOVE bytes)
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

STREAM_ABOVE = 1 << 30
"""``--stream auto`` streams ANI HDF5 files larger than this (1 GiB): in memory, a set costs
several times its file size (per-conformation arrays and Python objects)."""


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune an ANI ensemble")
    p.add_argument("config", nargs="?", help="TOML or JSON file of settings (optional)")
    p.add_argument("--data", help="training data: ANI HDF5 (.h5) or any file ASE reads")
    p.add_argument("--energy-key", help="energy field (e.g. wb97x_dz.energy, ccsd(t)_cbs.energy)")
    p.add_argument("--forces-key", help="force field (e.g. wb97x_dz.forces); omit for energy-only training")
    p.add_argument("--delta-from", metavar="KEY",
                   help="Δ-learning on stored levels: train on energy-key minus this energy field (e.g. "
                        "wb97x_dz.energy); the output predicts a difference, not a total energy")
    p.add_argument("--base", metavar="MODEL",
                   help="Δ-learning on a model: train on the labels minus this model's predictions (ani-1x or a "
                        "model folder); phai.load(OUT) and phai energy --model OUT then give base + Δ")
    p.add_argument("--stream", choices=("yes", "no", "auto"),
                   help="read HDF5 data batch by batch instead of loading it (auto, the default: files over 1 GiB)")
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


def load_data(path: str, energy_key: str, forces_key: str | None = None, delta_from: str | None = None, *,
              stream: bool | str = False, base=None):
    """The training set of a data file (eV, eV/Å): an ANI HDF5 file (Hartree converted on
    reading) or any file ASE reads.

    Args:
      delta_from: Δ-learning on stored levels: energies ``energy_key - delta_from``, both
        read the same way (HDF5: converted Hartree -> eV by the file's ``units``); no forces.
      stream: ``True`` (HDF5 only): a :class:`phai.train.stream.StreamedTrainingSet` that
        reads each batch from the file; ``"auto"``: stream HDF5 files above
        :data:`STREAM_ABOVE` bytes; ``False``: a :class:`phai.train.TrainingSet` in memory.
      base: Δ-learning on a model: a potential whose predictions (energies, and forces if
        ``forces_key``) are subtracted from the labels.
    """
    import numpy as np

    from ..train import TrainingSet

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such data file")
    if delta_from and base is not None:
        raise InputError("give either --delta-from (a stored lower level) or --base (a model), not both")
    h5 = p.suffix.lower() in (".h5", ".hdf5")
    if stream == "auto":
        stream = h5 and p.stat().st_size > STREAM_ABOVE
    if stream:
        if not h5:
            raise InputError(f"{path}: only ANI HDF5 files (.h5) can be streamed")
        from ..train.stream import StreamedTrainingSet

        return StreamedTrainingSet(p, energy_key, forces_key, delta_from=delta_from, base=base)
    if h5:
        from ..data import read_ani_h5

        if delta_from:  # the lower level read and converted exactly like the main field
            conf = read_ani_h5(p, energy_key, None, hartree_properties=(delta_from,))
            ts = TrainingSet.from_conformations(conf)
            ts.energies = ts.energies - np.concatenate([g.properties[delta_from] for g in conf.groups])
        else:
            ts = TrainingSet.from_conformations(read_ani_h5(p, energy_key, forces_key))
    else:
        from ..cli import read_frames

        frames = read_frames(str(p))
        try:
            e = [float(a.info[energy_key]) for a in frames]
            f = [a.arrays[forces_key] for a in frames] if forces_key and not delta_from else None
            low = [float(a.info[delta_from]) for a in frames] if delta_from else None
        except KeyError as exc:
            raise InputError(f"{path}: a frame has no field {exc}") from None
        groups = [a.info.get("name", a.get_chemical_formula()) for a in frames]
        ts = TrainingSet.from_frames(frames, e, f, groups)
        if low is not None:
            ts.energies = ts.energies - np.asarray(low)
    if base is not None:
        from ..train.delta import model_delta_set

        ts = model_delta_set(ts, base, forces=forces_key is not None)
    return ts


def run(args) -> int:
    from ..train import TrainConfig, Trainer

    settings = read_settings(args.config) if args.config else {}
    data = dict(settings.get("data", {}))
    train_kw = dict(settings.get("train", {}))
    out = args.out or settings.get("out")
    for flag, key in (("data", "path"), ("energy_key", "energy_key"), ("forces_key", "forces_key"),
                      ("delta_from", "delta_from"), ("base", "base"), ("stream", "stream")):
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
    stream = {"yes": True, "no": False, "auto": "auto", True: True, False: False}.get(data.get("stream", "auto"))
    if stream is None:
        raise InputError(f"stream must be yes, no or auto, got {data.get('stream')!r}")
    delta_from, base_name = data.get("delta_from") or None, data.get("base") or None
    if delta_from and base_name:
        raise InputError("give either --delta-from (a stored lower level) or --base (a model), not both")
    from ..train.delta import delta_record, describe

    base, delta = None, None
    if base_name:
        import phai

        base = phai.load(base_name, precision="float64")  # the labels' differences to this model, in float64
        delta = delta_record(base_name, target=data["energy_key"])
    elif delta_from:
        delta = delta_record(level=delta_from, target=data["energy_key"])
    if delta_from and data.get("forces_key"):
        print(f"phai train: --delta-from {delta_from}: training on energy differences only (forces not used)")
    kw = {"stream": stream, "base": base}
    ts = load_data(data["path"], data["energy_key"], data.get("forces_key") or None, delta_from, **kw)
    valid = None
    if data.get("valid"):
        valid = load_data(data["valid"], data["energy_key"], data.get("forces_key") or None, delta_from, **kw)
    config = TrainConfig.from_dict({"name": Path(out).name, **train_kw})
    trainer = Trainer(config, ts, valid, out_dir=out, delta=delta)
    resumed = trainer.state["step"] > 0
    if delta:
        print(f"phai train: Δ-learning: the output {describe(delta)}")
    print(f"phai train: {len(trainer.train_set)} training and {len(trainer.valid_set)} validation conformations"
          f"{' (streamed from the file)' if type(ts).__name__ == 'StreamedTrainingSet' else ''}, "
          f"{config.members} members, {'resuming at epoch ' + str(trainer.state['epoch'] + 1) if resumed else 'new run'}"
          f", output {out}", flush=True)
    res = trainer.fit()
    h = res.history[-1] if res.history else {}
    print(f"phai train: stopped after {res.stopped}; validation energy RMSE {h.get('val_energy_rmse', float('nan')):.3f}"
          f" kcal/mol; model in {out} (phai energy --model {out} FILE)")
    return 0
