"""Data pipeline: read an ANI HDF5 file and batch one epoch, phai vs TorchANI, one process.

    PYTHONPATH=src python benchmarks/data_pipeline.py [--molecules 200] [--conformations 100] [--batch 256]

A synthetic file in the ANI-1 layout (which both libraries read: nested groups, ``species``
strings, ``coordinates`` float32, ``energies`` Hartree) is written to a temporary folder:
``--molecules`` molecules of 8-24 CHNO atoms (random compositions, atoms on a jittered grid
1.0-1.6 Å apart), ``--conformations`` each, fixed seed. Then, for one epoch of batches of
``--batch`` conformations:

* ``phai memory``: ``read_ani_h5`` then ``iter_batches`` (shuffled, size buckets, padded and
  **packed with neighbor pairs and triples**, the input the ANI model takes);
* ``phai stream``: ``open_ani_h5`` (one indexing pass) then ``iter_batches(window=W)``,
  only one window of groups in memory;
* ``TorchANI``: ``torchani.data.load(path).species_to_indices().shuffle().collate(batch)``,
  one pass (padded ``[B, A]`` species and coordinates tensors; no neighbor lists: TorchANI
  builds them inside the model on every step).

Printed: seconds, conformations per second, the ratio to TorchANI, and the peak of memory
allocated by Python and NumPy during the run (``tracemalloc``; h5py reads into NumPy arrays,
so file data counts), which shows that the streamed epoch holds one window, not the file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def write_file(path: Path, molecules: int, conformations: int, seed: int = 0) -> int:
    import h5py

    rng = np.random.default_rng(seed)
    symbols = np.array(["H", "C", "N", "O"])
    total = 0
    with h5py.File(path, "w") as f:
        for m in range(molecules):
            a = int(rng.integers(8, 25))
            species = symbols[rng.choice(4, size=a, p=[0.5, 0.3, 0.1, 0.1])]
            grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)[:a] * 1.3
            base = grid + rng.normal(scale=0.1, size=grid.shape)
            xyz = base[None] + rng.normal(scale=0.05, size=(conformations, a, 3))
            g = f.create_group(f"gdb_s{a:02d}/mol-{m}")
            g["species"] = np.array([s.encode() for s in species])
            g["coordinates"] = xyz.astype(np.float32)
            g["energies"] = rng.normal(size=conformations) - 40.0 * a
            total += conformations
    return total


def run_phai_memory(path, batch):
    from phai.data import iter_batches, read_ani_h5

    data = read_ani_h5(path, "energies")
    n = 0
    for b in iter_batches(data, batch, species=("H", "C", "N", "O"), seed=0, epoch=0):
        n += b.size
    return n


def run_phai_stream(path, batch, window):
    from phai.data import iter_batches, open_ani_h5

    data = open_ani_h5(path, "energies")
    n = 0
    for b in iter_batches(data, batch, species=("H", "C", "N", "O"), seed=0, epoch=0, window=window):
        n += b.size
    return n


def run_torchani(path, batch):
    import torchani

    data = torchani.data.load(str(path)).species_to_indices(("H", "C", "N", "O")).shuffle().collate(batch)
    n = 0
    for b in data:
        n += int(b["species"].shape[0])
    return n


def measure(fn, *args):
    tracemalloc.start()
    t = time.perf_counter()
    n = fn(*args)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return n, dt, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--molecules", type=int, default=200)
    ap.add_argument("--conformations", type=int, default=100)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--window", type=int, default=2000, help="conformations in memory when streaming")
    args = ap.parse_args()
    import torchani  # noqa: F401

    import phai.data  # noqa: F401 - imports (jax, torch) outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.h5"
        total = write_file(path, args.molecules, args.conformations)
        size = path.stat().st_size / 2**20
        print(f"file: {total} conformations, {args.molecules} molecules, {size:.1f} MiB; batch {args.batch}")
        rows = []
        for name, fn, extra in (("TorchANI", run_torchani, ()), ("phai memory", run_phai_memory, ()),
                                ("phai stream", run_phai_stream, (args.window,))):
            n, dt, peak = measure(fn, path, args.batch, *extra)
            assert n == total, (name, n, total)
            rows.append((name, dt, n / dt, peak / 2**20))
        ta = rows[0][1]
        print(f"{'pipeline':12s} {'s':>8s} {'conf/s':>10s} {'vs TA':>7s} {'peak MiB':>9s}")
        for name, dt, rate, peak in rows:
            print(f"{name:12s} {dt:8.2f} {rate:10.0f} {ta / dt:7.2f} {peak:9.1f}")


if __name__ == "__main__":
    main()
