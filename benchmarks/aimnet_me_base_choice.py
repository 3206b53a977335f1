"""Which pretrained AIMNet2 to use as the base of a Δ AIMNet-ME model, chosen without test molecules.

For every outer fold of ``aimnet_me_experiment.py --folds K`` (the same folds: same
``folds_by_molecule`` and fold seed), each candidate base is scored by an **inner** K-fold
cross-validation over that fold's *training* molecules only: the floor of the Δ model, the
base's energies plus self energies per element and per (charge, multiplicity) fitted on the
inner training molecules (``phai.train.aimnet_me.fit_self_energies``; no network, seconds),
and its pooled R² of χ, η and ω on the inner held-out molecules. The base with the larger
mean R² is the one that outer fold would train on. The outer test molecules are never used.

The bases' energies of every label come from ``base_state_predictions`` (float64, cached under
``$PHAI_CACHE/aimnet_me_base``: computed once, ~0.1 s per state and base).

Run::

    PYTHONPATH=src python benchmarks/aimnet_me_base_choice.py [DATA] [--folds 5] [--fold-seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aimnet_me_experiment import folds_by_molecule, offsets_baseline

from phai.train.aimnet_me import (
    base_cache_path,
    base_state_predictions,
    load_base,
    read_charge_data,
)

ROOT = Path(__file__).resolve().parents[1]
BASES = ("aimnet2-wb97m-d3", "aimnet2-b973c")
INDICES = ("ip", "ea", "chi", "eta", "omega")


def floor_r2(data, base_energy, molecules, folds: int, seed: int) -> dict:
    """R² of IP, EA, χ, η, ω of base + fitted self energies (``offsets_baseline``, the Δ run's
    floor), cross-validated over ``molecules`` (a K-fold split of them drawn with ``seed``),
    pooled over their held-out geometries."""
    elements = sorted({int(z) for n in data.numbers for z in n})
    keep = np.isin(data.molecule, list(molecules))
    sub = data.subset(np.flatnonzero(keep))
    m = offsets_baseline(sub, folds_by_molecule(sub, folds, seed), elements, max_multiplicity=4,
                         base_energy=base_energy[keep])
    return {k: m["cdft"][k]["r2"] for k in INDICES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(ROOT / "tests/data/charge_labels/charge_labels.h5"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold-seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = read_charge_data(args.data)
    energies = {b: base_state_predictions(data, load_base(b, "float64"), base_cache_path(b, "float64"))[0]
                for b in BASES}
    print("| outer fold | " + " | ".join(f"{b}: inner-CV R² χ / η / ω" for b in BASES) + " | chosen |")
    print("|---" * (len(BASES) + 2) + "|")
    for k, test_names in enumerate(folds_by_molecule(data, args.folds, args.fold_seed)):
        train = sorted(set(data.molecule.tolist()) - set(test_names))
        scores = {b: floor_r2(data, energies[b], train, args.folds, args.fold_seed + 1) for b in BASES}
        best = max(BASES, key=lambda b: np.mean([scores[b][i] for i in ("chi", "eta", "omega")]))
        cells = " | ".join(" / ".join(f"{scores[b][i]:.3f}" for i in ("chi", "eta", "omega")) for b in BASES)
        print(f"| {k} | {cells} | {best} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
