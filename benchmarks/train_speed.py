#!/usr/bin/env python
"""Training speed: phai's trainer vs TorchANI 2.2.4's own training loop, in one process.

Same architecture (ANI-1x AEV, per-element networks of ANI-1x's widths, CELU 0.1, an
ensemble of M members trained together), same conformations, same batch size, energy-only
loss per √atom, AdamW, float32, on this CPU. TorchANI: ``AEVComputer`` once per batch,
then each member's ``ANIModel`` on the shared AEVs, loss summed over members, one
``torch.optim.AdamW`` over all weights; batches padded with species -1 and collated
**once before timing** (favouring TorchANI). phai: :class:`phai.train.Trainer` epochs,
host packing of every batch (neighbor lists) included in the timed loop, compiled step
warmed up first. Prints conformations per second and the ratio (target >= 3).

Conformations: molecules of tests/data/chno_molecules.extxyz, randomly displaced
(0.05 Å), energies from phai's ANI-1x (the labels do not affect speed).

Usage: python benchmarks/train_speed.py [--members 8] [--batch-size 256] [--conformations 1024]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

TARGET = 3.0


def conformations(n: int, seed: int = 0):
    import ase.io

    import phai
    from phai.train import TrainingSet

    frames = [f for f in ase.io.read(HERE.parent / "tests/data/chno_molecules.extxyz", index=":")
              if f.info["kind"] == "mmff" and len(f) >= 3]
    rng = np.random.default_rng(seed)
    nums, pos, groups = [], [], []
    for k in range(n):
        a = frames[k % len(frames)]
        nums.append(a.numbers)
        pos.append(a.positions + rng.normal(0, 0.05, a.positions.shape))
        groups.append(a.info["name"])
    e = [r.energy for r in phai.load("ani-1x").evaluate(list(zip(nums, pos)), forces=False)]
    return TrainingSet(nums, pos, e, None, groups)


def phai_rate(ts, members: int, batch_size: int, epochs: int) -> tuple[float, int]:
    from phai.train import TrainConfig, Trainer

    cfg = TrainConfig(members=members, epochs=1, batch_size=batch_size, progress=False, plot=False,
                      use_forces=False, schedule="constant", checkpoint_every=0)
    tr = Trainer(cfg, ts, valid=ts.subset(np.arange(min(64, len(ts)))))
    tr.fit()  # compiles
    tr.config.epochs = 1 + epochs
    res = tr.fit()
    secs = sum(h["seconds"] for h in res.history[1:])
    return epochs * len(ts) / secs, len(res.history)


def torchani_rate(ts, members: int, batch_size: int, epochs: int, threads: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        import torchani
    from phai.train import ANI1X_HIDDEN, ani1x_aev
    from phai.units import EV_TO_HARTREE

    torch.set_num_threads(threads)
    p = ani1x_aev()
    aev = torchani.AEVComputer(p.Rcr, p.Rca, torch.tensor(p.EtaR), torch.tensor(p.ShfR), torch.tensor(p.EtaA),
                               torch.tensor(p.Zeta), torch.tensor(p.ShfA), torch.tensor(p.ShfZ), len(p.species))

    def net(widths):
        layers, w = [], (p.length, *widths)
        for a, b in itertools.pairwise(w):
            layers += [torch.nn.Linear(a, b), torch.nn.CELU(0.1)]
        return torch.nn.Sequential(*layers, torch.nn.Linear(w[-1], 1))

    models = [torchani.ANIModel([net(ANI1X_HIDDEN[s]) for s in p.species]) for _ in range(members)]
    params = [q for m in models for q in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-5)
    z2s = {1: 0, 6: 1, 7: 2, 8: 3}
    batches = []
    order = np.random.default_rng(0).permutation(len(ts))
    for k in range(0, len(ts), batch_size):
        idx = order[k:k + batch_size]
        amax = max(len(ts.numbers[c]) for c in idx)
        sp = torch.full((len(idx), amax), -1, dtype=torch.long)
        xyz = torch.zeros((len(idx), amax, 3))
        for r, c in enumerate(idx):
            a = len(ts.numbers[c])
            sp[r, :a] = torch.tensor([z2s[int(z)] for z in ts.numbers[c]])
            xyz[r, :a] = torch.tensor(ts.positions[c], dtype=torch.float32)
        e = torch.tensor(ts.energies[idx] * EV_TO_HARTREE, dtype=torch.float32)
        batches.append((sp, xyz, e, (sp >= 0).sum(1).float()))

    def epoch():
        for sp, xyz, e, n in batches:
            _, g = aev((sp, xyz))
            loss = 0.0
            for m in models:
                _, pred = m((sp, g))
                loss = loss + (((pred - e) ** 2) / n).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    epoch()  # warm-up
    t = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return epochs * len(ts) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--conformations", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args()
    import os

    threads = args.threads or os.cpu_count()
    ts = conformations(args.conformations)
    atoms = np.mean([len(z) for z in ts.numbers])
    print(f"{len(ts)} conformations ({atoms:.1f} atoms on average), batch {args.batch_size}, "
          f"{args.members} members, ANI-1x architecture, float32, energy loss, AdamW")
    r_t = torchani_rate(ts, args.members, args.batch_size, args.epochs, threads)
    print(f"TorchANI 2.2.4 loop ({threads} threads): {r_t:8.1f} conformations/s")
    r_p, _ = phai_rate(ts, args.members, args.batch_size, args.epochs)
    print(f"phai Trainer:                    {r_p:8.1f} conformations/s")
    print(f"ratio phai / TorchANI: {r_p / r_t:.2f}x (target >= {TARGET:g}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
