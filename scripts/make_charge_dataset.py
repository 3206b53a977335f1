"""Build phai's charge/spin data set (tests/data/charge_labels/, recipe in RECIPE.md there).

Small closed- and open-shell CHNO molecules, each geometry labelled **vertically** at charge
-1, 0 and +1 (the same coordinates for all three states) with unrestricted ωB97X/6-31+G(d)
(:class:`phai.labels.PySCFUKSLabeller`): energies, forces and meta-Löwdin α/β atomic
populations. Issue 5 (AIMNet-ME, conceptual-DFT indices IP = E(+1) - E(0), EA = E(0) - E(-1)).

Stages (each resumable; the store keeps every finished label):

    python scripts/make_charge_dataset.py sample --store STORE     # conformers -> STORE/conformers.json
    python scripts/make_charge_dataset.py label --store STORE [--processes 2]
    python scripts/make_charge_dataset.py export --store STORE --out tests/data/charge_labels/charge_labels.h5
    python scripts/make_charge_dataset.py summary --store STORE
    python scripts/make_charge_dataset.py check --out tests/data/charge_labels/charge_labels.h5   # CDFT table

Run with ``OMP_NUM_THREADS=1`` and ``PYTHONPATH=src``. Labels are computed sample round by
sample round (sample 0 of every molecule, cheapest first, then sample 1, ...), and the three charge states of
a geometry one after the other, so a run stopped early still covers every molecule with
complete (-1, 0, +1) triples.

Multiplicities: the lowest sensible one per state. A closed-shell neutral (singlet) gives
doublet ions; a neutral radical (doublet) gives singlet ions (its cation and anion close the
shell: CH3+ / CH3-, allyl+/-, NO2+ / NO2-, HCO+ / HCO-, ...). NO, whose anion is a triplet,
is left out so that no state's ground multiplicity is in doubt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from phai.atomic import atomic_output
from phai.labels.conformers import Conformer, MoleculeSpec, sample_molecules
from phai.labels.labellers import PySCFUKSLabeller
from phai.labels.store import (
    label_many,
    load_conformers,
    load_records,
    save_conformers,
    summary,
)

SEED = 0
TEMPERATURE = 600.0  # K: as the CHNO set (ANI-Tools' NMS temperature)
NUM_EMBED = 3
CONFORMERS = 4  # normal-mode samples per molecule of the first build (the first FIRST_BUILD of MOLECULES)
ADDED_CONFORMERS = 1  # samples per molecule added later: more molecules beat more geometries (RECIPE.md)
FIRST_BUILD = 33
LEVEL_KW = {"method": "wb97x", "basis": "6-31+g*", "density_fit": True, "conv_tol": 1e-9}
PREFIX = "wb97x_pd"  # dataset prefix: ωB97X/6-31+G(d) ("p" = the diffuse +, "d" = polarisation)
STATES = ((-1, "anion"), (0, "neutral"), (1, "cation"))

# (name, SMILES, neutral multiplicity, split). Closed shells from the CHNO set, plus radicals.
MOLECULES: tuple[tuple[str, str, int, str], ...] = (
    ("methane", "C", 1, "train"),
    ("water", "O", 1, "train"),
    ("ammonia", "N", 1, "train"),
    ("hydrogen_cyanide", "C#N", 1, "train"),
    ("ethane", "CC", 1, "train"),
    ("ethylene", "C=C", 1, "train"),
    ("acetylene", "C#C", 1, "train"),
    ("formaldehyde", "C=O", 1, "train"),
    ("methanol", "CO", 1, "train"),
    ("methylamine", "CN", 1, "train"),
    ("hydroxylamine", "NO", 1, "test"),
    ("acetonitrile", "CC#N", 1, "train"),
    ("acetaldehyde", "CC=O", 1, "train"),
    ("ethanol", "CCO", 1, "train"),
    ("formamide", "NC=O", 1, "train"),
    ("formic_acid", "OC=O", 1, "train"),
    ("propane", "CCC", 1, "train"),
    ("dimethyl_ether", "COC", 1, "test"),
    ("propene", "C=CC", 1, "test"),
    ("acetic_acid", "CC(=O)O", 1, "train"),
    ("acetone", "CC(C)=O", 1, "train"),
    ("methyl_formate", "COC=O", 1, "test"),
    ("urea", "NC(N)=O", 1, "train"),
    ("glycine", "NCC(=O)O", 1, "train"),
    # neutral radicals (doublets): their ions are closed-shell singlets
    ("methyl", "[CH3]", 2, "train"),
    ("hydroxymethyl", "[CH2]O", 2, "train"),
    ("methoxy", "C[O]", 2, "test"),
    ("formyl", "[CH]=O", 2, "train"),
    ("ethyl", "C[CH2]", 2, "train"),
    ("vinyl", "C=[CH]", 2, "train"),
    ("allyl", "C=C[CH2]", 2, "test"),
    ("nitrogen_dioxide", "[O]N=O", 2, "train"),
    ("acetyl", "C[C]=O", 2, "train"),
    # second build: ADDED_CONFORMERS (one) geometry each (CONFORMERS only for the 33 above). Closed
    # shells chosen for spread in IP/EA: small inorganics, N-N and N-O bonds, imines, nitriles,
    # nitro, N-oxides, carbonyls, acids, amides, alcohols, ethers, small rings, alkenes/alkynes.
    # Heteroaromatics and 5-heavy-atom acids/esters were planned too but not reached (RECIPE.md).
    ("carbon_monoxide", "[C-]#[O+]", 1, "train"),
    ("dinitrogen", "N#N", 1, "train"),
    ("carbon_dioxide", "O=C=O", 1, "train"),
    ("nitrous_oxide", "[N-]=[N+]=O", 1, "test"),
    ("nitroxyl", "N=O", 1, "train"),
    ("hydrogen_peroxide", "OO", 1, "train"),
    ("hydrazine", "NN", 1, "train"),
    ("diazene", "N=N", 1, "test"),
    ("isocyanic_acid", "N=C=O", 1, "train"),
    ("hydrazoic_acid", "N=[N+]=[N-]", 1, "train"),
    ("nitrous_acid", "ON=O", 1, "train"),
    ("nitric_acid", "O[N+](=O)[O-]", 1, "train"),
    ("ketene", "C=C=O", 1, "train"),
    ("cyanamide", "NC#N", 1, "test"),
    ("methanimine", "C=N", 1, "train"),
    ("diazomethane", "C=[N+]=[N-]", 1, "train"),
    ("methyl_isocyanide", "[C-]#[N+]C", 1, "train"),
    ("cyanogen", "N#CC#N", 1, "train"),
    ("glyoxal", "O=CC=O", 1, "train"),
    ("formaldoxime", "C=NO", 1, "test"),
    ("nitrosomethane", "CN=O", 1, "train"),
    ("nitromethane", "C[N+](=O)[O-]", 1, "train"),
    ("nitramide", "N[N+](=O)[O-]", 1, "test"),
    ("carbonic_acid", "OC(=O)O", 1, "train"),
    ("carbamic_acid", "NC(=O)O", 1, "train"),
    ("formamidine", "NC=N", 1, "train"),
    ("methanediol", "OCO", 1, "test"),
    ("formohydroxamic_acid", "O=CNO", 1, "train"),
    ("methyl_hydroxylamine", "CNO", 1, "train"),
    ("oxirane", "C1CO1", 1, "train"),
    ("aziridine", "C1CN1", 1, "test"),
    ("propyne", "C#CC", 1, "train"),
    ("allene", "C=C=C", 1, "train"),
    ("cyanoacetylene", "C#CC#N", 1, "train"),
    ("diacetylene", "C#CC#C", 1, "test"),
    ("cyclopropene", "C1=CC1", 1, "train"),
    ("methyl_isocyanate", "CN=C=O", 1, "train"),
    ("methyl_nitrite", "CON=O", 1, "train"),
    ("vinyl_alcohol", "C=CO", 1, "train"),
    ("acetaldimine", "CC=N", 1, "test"),
    ("n_methylmethanimine", "C=NC", 1, "train"),
    ("glycolaldehyde", "OCC=O", 1, "train"),
    ("acetamide", "CC(N)=O", 1, "train"),
    ("n_methylformamide", "CNC=O", 1, "test"),
    ("guanidine", "NC(N)=N", 1, "train"),
    ("acrylonitrile", "C=CC#N", 1, "train"),
    ("acrolein", "C=CC=O", 1, "train"),
    ("aminoacetonitrile", "NCC#N", 1, "test"),
    ("ethylene_glycol", "OCCO", 1, "train"),
    ("acetaldoxime", "CC=NO", 1, "train"),
    ("dimethylamine", "CNC", 1, "test"),
    ("ethylamine", "CCN", 1, "train"),
    ("ethanolamine", "NCCO", 1, "train"),
    ("ethylenediamine", "NCCN", 1, "train"),
    ("methyl_vinyl_ether", "C=COC", 1, "train"),
    ("methoxymethanol", "COCO", 1, "train"),
    ("n_methylnitrone", "C=[N+]([O-])C", 1, "train"),
    ("propanal", "CCC=O", 1, "train"),
    ("propionitrile", "CCC#N", 1, "train"),
    ("vinylacetylene", "C=CC#C", 1, "test"),
    ("butadiene", "C=CC=C", 1, "train"),
    ("cyclopropane", "C1CC1", 1, "train"),
    ("cyclobutene", "C1=CCC1", 1, "train"),
    ("oxetane", "C1COC1", 1, "test"),
    ("cyclopropanone", "O=C1CC1", 1, "train"),
    ("ethyl_methyl_ether", "CCOC", 1, "train"),
    ("allyl_alcohol", "C=CCO", 1, "train"),
    ("isobutene", "C=C(C)C", 1, "test"),
    ("trans_2_butene", "C/C=C/C", 1, "train"),
    ("isopropanol", "CC(C)O", 1, "test"),
    # radicals whose cation and anion are closed-shell singlets (no aminyl, alkoxyl, peroxyl or
    # cyano radicals: their cations' ground states are triplets or in doubt)
    ("nitroxide", "N[O]", 2, "train"),
    ("aminomethyl", "N[CH2]", 2, "train"),
    ("hydroxycarbonyl", "O[C]=O", 2, "test"),
    ("propargyl", "C#C[CH2]", 2, "train"),
    ("hydroxyethyl", "C[CH]O", 2, "train"),
    ("methoxymethyl", "CO[CH2]", 2, "test"),
    ("isopropyl", "C[CH]C", 2, "train"),
    ("propionyl", "CC[C]=O", 2, "train"),
    ("dimethylnitroxide", "CN(C)[O]", 2, "test"),
    ("methylallyl", "C=C(C)[CH2]", 2, "train"),
)


def state_multiplicity(neutral_multiplicity: int, charge: int) -> int:
    """Lowest sensible multiplicity: neutral as given; ions of a singlet are doublets, of a doublet singlets."""
    if charge == 0:
        return neutral_multiplicity
    return {1: 2, 2: 1}[neutral_multiplicity]


def labeller() -> PySCFUKSLabeller:
    return PySCFUKSLabeller(**LEVEL_KW)


def _log(line: str) -> None:
    print(line, flush=True)


def conformer_counts(molecules=MOLECULES) -> dict[str, int]:
    """Samples per molecule: CONFORMERS for the first build's molecules, ADDED_CONFORMERS for the rest."""
    first = {name for name, *_ in MOLECULES[:FIRST_BUILD]}
    return {name: CONFORMERS if name in first else ADDED_CONFORMERS for name, *_ in molecules}


def sample(store: Path, molecules=MOLECULES, counts: dict[str, int] | None = None) -> list[Conformer]:
    """Neutral-state normal-mode samples (GFN2-xTB minima of the neutral, its multiplicity).

    Adds to ``STORE/conformers.json``: a molecule already there with its planned number of
    samples is kept as it is, the others are sampled (``counts``, default
    :func:`conformer_counts`); molecules no longer in ``molecules`` are dropped. The sampler's
    random stream is seeded per molecule name, so sampling molecules in several runs gives the
    same geometries as one run.
    """
    counts = conformer_counts(molecules) if counts is None else counts
    path = store / "conformers.json"
    have: dict[str, list[Conformer]] = {}
    for c in load_conformers(path) if path.exists() else []:
        have.setdefault(c.name, []).append(c)
    out, specs = [], []
    for name, smiles, mult, split in molecules:
        if len(have.get(name, ())) == counts[name]:
            out += have[name]
        else:
            specs.append(MoleculeSpec(name, smiles, counts[name], split, mult))
    out += sample_molecules(specs, TEMPERATURE, seed=SEED, num_embed=NUM_EMBED, log=_log)
    save_conformers(path, out)
    return out


def charge_states(conformers: list[Conformer]) -> list[Conformer]:
    """Each neutral geometry at charges -1, 0, +1 (same coordinates), ordered for a useful partial run.

    Order: sample index, then cost (heavy atoms, then atoms: a heavy atom brings ~10 times the
    basis functions of a hydrogen), then name, then charge (-1, 0, +1), so the three states of
    one geometry are labelled one after the other and a run stopped early has the most
    molecules it could have.
    """
    out = []
    for c in sorted(conformers, key=lambda c: (c.info["sample"], int(np.sum(np.asarray(c.numbers) > 1)),
                                               len(c.numbers), c.name)):
        for q, state in STATES:
            info = dict(c.info, state=state, neutral_multiplicity=int(c.multiplicity))
            out.append(Conformer(c.name, c.numbers, c.positions, q, state_multiplicity(c.multiplicity, q), info))
    return out


def export(store: Path, out_path: Path, level: str | None = None, molecules=MOLECULES) -> dict:
    """Write the store's labels as HDF5, one leaf group per molecule and charge state (see RECIPE.md).

    ``/<molecule>/<state>`` (state ``anion``, ``neutral``, ``cation``), each with
    ``atomic_numbers [A]`` uint8, ``coordinates [C, A, 3]`` Å, ``charge [C]``,
    ``multiplicity [C]`` (int8), ``<PREFIX>.energy [C]`` Hartree, ``<PREFIX>.forces [C, A, 3]``
    Hartree/Å, and ``<PREFIX>.{charges, q_alpha, q_beta, pop_alpha, pop_beta, spin} [C, A]``
    (e or electrons). The C conformations of a molecule are the same geometries, in the same
    order, in all three state groups (NaN labels where a state is not computed), so
    ``E_cation[c] - E_neutral[c]`` is a vertical IP. Only the ``molecules`` named in the recipe
    are written (a store may hold labels of molecules since dropped from it). Written atomically.
    """
    import h5py

    from phai.units import HARTREE_TO_EV

    level = level or labeller().level
    names = {name for name, *_ in molecules}
    recs = [r for r in load_records(store, level=level) if r["name"] in names]
    by_mol: dict[str, dict] = {}
    for r in recs:
        geom = np.round(np.asarray(r["positions"], np.float64), 8).tobytes()
        m = by_mol.setdefault(r["name"], {"numbers": r["numbers"], "geoms": {}, "info": r["info"]})
        g = m["geoms"].setdefault(geom, {"positions": r["positions"], "sample": r["info"].get("sample", 0),
                                         "states": {}})
        g["states"][r["info"]["state"]] = r
    per_atom = ("charges", "q_alpha", "q_beta", "pop_alpha", "pop_beta", "spin")
    stats = {"molecules": 0, "geometries": 0, "labels": 0, "complete_triples": 0}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["level"] = level
        f.attrs["states"] = json.dumps({s: q for q, s in STATES})
        for name in sorted(by_mol):
            m = by_mol[name]
            geoms = sorted(m["geoms"].values(), key=lambda g: (g["sample"], g["positions"]))
            z = np.asarray(m["numbers"], np.int64)
            a, c = len(z), len(geoms)
            x = np.stack([np.asarray(g["positions"], np.float64) for g in geoms])
            mol = f.create_group(name)
            for k in ("smiles", "split", "temperature", "seed", "sampler", "neutral_multiplicity"):
                if k in m["info"]:
                    mol.attrs[k] = m["info"][k]
            stats["molecules"] += 1
            stats["geometries"] += c
            stats["complete_triples"] += sum(len(g["states"]) == len(STATES) for g in geoms)
            for q, state in STATES:
                mult = state_multiplicity(int(m["info"]["neutral_multiplicity"]), q)
                grp = mol.create_group(state)
                grp.attrs["charge"] = q
                grp.attrs["multiplicity"] = mult
                grp.create_dataset("atomic_numbers", data=z.astype(np.uint8))
                grp.create_dataset("coordinates", data=x)
                grp.create_dataset("charge", data=np.full(c, q, np.int8))
                grp.create_dataset("multiplicity", data=np.full(c, mult, np.int8))
                e = np.full(c, np.nan)
                frc = np.full((c, a, 3), np.nan)
                props = {k: np.full((c, a), np.nan) for k in per_atom}
                for i, g in enumerate(geoms):
                    r = g["states"].get(state)
                    if r is None:
                        continue
                    stats["labels"] += 1
                    e[i] = r["energy"] / HARTREE_TO_EV
                    frc[i] = np.asarray(r["forces"]) / HARTREE_TO_EV
                    for k in per_atom:
                        props[k][i] = r["extras"][k]
                grp.create_dataset(f"{PREFIX}.energy", data=e).attrs["units"] = "Hartree"
                grp.create_dataset(f"{PREFIX}.forces", data=frc).attrs["units"] = "Hartree/Angstrom"
                for k, v in props.items():
                    grp.create_dataset(f"{PREFIX}.{k}", data=v).attrs["units"] = (
                        "electrons" if k.startswith("pop") or k == "spin" else "e")
    return stats


def check(path: Path) -> str:
    """Sum rules and vertical conceptual-DFT indices per molecule (eV), from the exported file.

    For every geometry with all three states: IP = E(+1) - E(0), EA = E(0) - E(-1),
    χ = (IP + EA)/2, η = (IP - EA)/2, ω = χ²/(2η) (AIMNet-NSE ``eval.py`` conventions).
    Also the largest violation of Σq = Q, Σpop_α = N_α, Σpop_β = N_β, Σspin = M - 1.
    """
    import h5py

    from phai.units import HARTREE_TO_EV

    lines = ["| molecule | split | mult(0) | triples | IP | EA | χ | η | ω |", "|---|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    with h5py.File(path) as f:
        for name in f:
            mol = f[name]
            e = {}
            for q, state in STATES:
                g = mol[state]
                z = g["atomic_numbers"][()].astype(int)
                mult = int(g.attrs["multiplicity"])
                n_a, n_b = (z.sum() - q + mult - 1) / 2, (z.sum() - q - mult + 1) / 2
                ok = np.isfinite(g[f"{PREFIX}.energy"][()])
                for key, target in (("charges", q), ("pop_alpha", n_a), ("pop_beta", n_b), ("spin", mult - 1)):
                    v = g[f"{PREFIX}.{key}"][()][ok]
                    if len(v):
                        worst = max(worst, float(np.abs(v.sum(1) - target).max()))
                e[q] = g[f"{PREFIX}.energy"][()] * HARTREE_TO_EV
            ok = np.isfinite(e[-1]) & np.isfinite(e[0]) & np.isfinite(e[1])
            if not ok.any():
                continue
            ip = e[1][ok] - e[0][ok]
            ea = e[0][ok] - e[-1][ok]
            chi, eta = (ip + ea) / 2, (ip - ea) / 2
            omega = chi**2 / (2 * eta)
            lines.append(f"| {name} | {mol.attrs.get('split', '')} | {mol.attrs.get('neutral_multiplicity', '')} | "
                         f"{int(ok.sum())} | {ip.mean():.2f} | {ea.mean():.2f} | {chi.mean():.2f} | {eta.mean():.2f} | "
                         f"{omega.mean():.2f} |")
    lines.append(f"\nLargest sum-rule violation (charges, populations, spin): {worst:.1e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["sample", "label", "export", "summary", "check"])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.stage == "sample":
        sample(args.store)
    elif args.stage == "label":
        confs = charge_states(load_conformers(args.store / "conformers.json"))
        stats = label_many(labeller(), confs, args.store, processes=args.processes, progress=True)
        print(json.dumps(stats))
    elif args.stage == "export":
        print(json.dumps(export(args.store, args.out)))
    elif args.stage == "check":
        print(check(args.out))
    else:
        print(json.dumps(summary(args.store), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
