"""Streamed training data: memory and batch-assembly time, in memory vs from the file.

    PYTHONPATH=src python benchmarks/train_stream.py [--per-group 10000] [--batches 100]

Builds an ANI-1x-layout HDF5 file in a temporary folder: the 24 molecules of
tests/data/chno_labels/chno_labels.h5, each group's conformations repeated with small random
displacements (fixed seed) up to ``--per-group`` conformations, wB97X energies and forces
(Hartree). Then, each in a fresh process (so that peak memory is its own):

* ``memory``: ``phai.commands.train.load_data(path, ...)`` (a ``TrainingSet``), then
  ``--batches`` training batches of 256 random conformations assembled
  (``phai.train.batches.assemble``: read/select, pack neighbor lists, pad);
* ``stream``: ``StreamedTrainingSet(path, ...)`` (index only), then the same batches, each
  read from the file.

Printed: file size, open/index time, peak RSS above the process's RSS after imports (MB),
mean time per assembled batch (ms). Training steps are not run: they are the same in both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
H5 = ROOT / "tests" / "data" / "chno_labels" / "chno_labels.h5"


def make_file(path: Path, per_group: int) -> None:
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(H5) as src, h5py.File(path, "w") as dst:
        for name in src:
            g = src[name]
            r, e, f = g["coordinates"][()], g["wb97x_dz.energy"][()], g["wb97x_dz.forces"][()]
            k = np.arange(per_group) % len(r)
            out = dst.create_group(name)
            out.attrs["molecule"] = name
            out.create_dataset("atomic_numbers", data=g["atomic_numbers"][()])
            out.create_dataset("coordinates", data=r[k] + rng.normal(0, 0.01, (per_group,) + r.shape[1:]))
            out.create_dataset("wb97x_dz.energy", data=e[k])
            out.create_dataset("wb97x_dz.forces", data=f[k])


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(mode: str, path: str, batches: int) -> dict:
    sys.path.insert(0, str(SRC))
    from phai.commands.train import load_data
    from phai.train.batches import assemble, species_lookup

    base = rss_mb()
    t0 = time.perf_counter()
    ts = load_data(path, "wb97x_dz.energy", "wb97x_dz.forces", stream=(mode == "stream"))
    t_open = time.perf_counter() - t0
    after_open = rss_mb()
    table = species_lookup("HCNO")
    rng = np.random.default_rng(1)
    times = []
    for _ in range(batches):
        index = rng.choice(len(ts), 256, replace=False)
        t0 = time.perf_counter()
        assemble(ts, index, species_of_z=table, num_species=4, radial_cutoff=5.2, angular_cutoff=3.5,
                 sae_hartree=np.zeros(4), with_forces=True)
        times.append(time.perf_counter() - t0)
    return {"mode": mode, "conformations": len(ts), "open_s": t_open, "rss_open_mb": after_open - base,
            "rss_peak_mb": rss_mb() - base, "batch_ms": 1e3 * float(np.mean(times))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-group", type=int, default=10000)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.batches)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.h5"
        make_file(path, args.per_group)
        print(f"file: {os.path.getsize(path) / 2**20:.0f} MB, 24 groups x {args.per_group} conformations")
        print(f"{'mode':8s} {'confs':>8s} {'open s':>7s} {'RSS open MB':>12s} {'RSS peak MB':>12s} {'ms/batch':>9s}")
        for mode in ("memory", "stream"):
            out = subprocess.run([sys.executable, __file__, "--worker", mode, str(path), "--batches", str(args.batches)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{r['mode']:8s} {r['conformations']:8d} {r['open_s']:7.1f} {r['rss_open_mb']:12.0f} "
                  f"{r['rss_peak_mb']:12.0f} {r['batch_ms']:9.1f}", flush=True)


if __name__ == "__main__":
    main()
