"""The CDFT metrics of ``benchmarks/aimnet_me_experiment.py``: the weighted R² and ``--rescore``,
which recomputes them from a committed run's stored held-out predictions (no training)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "aimnet_me_delta_b973c_chargeterms_254mol.json"
DATA = ROOT / "tests" / "data" / "charge_labels" / "charge_labels.h5"


@pytest.fixture(scope="module")
def experiment():
    spec = importlib.util.spec_from_file_location("aimnet_me_experiment", ROOT / "benchmarks" / "aimnet_me_experiment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_weighted_r2_equals_r2_of_repeated_rows(experiment):
    rng = np.random.default_rng(0)
    t = rng.normal(size=12)
    p = t + 0.3 * rng.normal(size=12)
    w = rng.integers(1, 5, size=12)
    expect = experiment.r2(np.repeat(p, w), np.repeat(t, w))
    assert experiment.r2(p, t, w) == pytest.approx(expect, abs=1e-12)
    assert experiment.r2(p, t, w / 7.0) == pytest.approx(expect, abs=1e-12)   # only ratios matter
    assert experiment.r2(p, t) == pytest.approx(experiment.r2(p, t, np.ones(12)), abs=1e-15)


def test_rescore_reproduces_the_stored_run_and_weights_molecules_once(experiment, tmp_path):
    from phai.train.aimnet_me import read_charge_data

    stored = json.loads(RESULTS.read_text())["test"]["cdft"]
    data = read_charge_data(DATA)
    out = tmp_path / "rescored.json"
    res = experiment.rescore(data, [RESULTS], out)
    assert json.loads(out.read_text())["cdft"]["n"] == stored["n"] == 353
    for k in ("ip", "ea", "chi", "eta", "omega"):
        assert res["cdft"][k]["r2"] == pytest.approx(stored[k]["r2"], abs=1e-12)
        assert res["cdft"][k]["r2_95_bootstrap_molecules"] == pytest.approx(stored[k]["r2_95_bootstrap_molecules"],
                                                                              abs=1e-12)
    # the molecule-weighted R² by hand: each molecule's geometries weigh 1/n
    pred = json.loads(RESULTS.read_text())["predictions"]
    e = {(g, int(q)): v for v, g, q in zip(pred["energy"], pred["geometry"], pred["charge"])}
    energy = np.array([e[(str(g), int(q))] for g, q in zip(data.geometry, data.charge)])
    rows = experiment.cdft_rows(data, energy, molecules=True)
    names = [r[2] for r in rows]
    assert len(set(names)) == 254 and max(names.count(m) for m in names) == 4
    w = np.array([1.0 / names.count(m) for m in names])
    chi_p, chi_t = np.array([r[0][2] for r in rows]), np.array([r[1][2] for r in rows])
    mean = np.sum(w * chi_t) / w.sum()
    by_hand = 1 - np.sum(w * (chi_p - chi_t) ** 2) / np.sum(w * (chi_t - mean) ** 2)
    assert res["cdft"]["chi"]["r2_molecules_weighted"] == pytest.approx(by_hand, abs=1e-12)
    assert res["cdft"]["chi"]["r2_molecules_weighted"] != pytest.approx(res["cdft"]["chi"]["r2"], abs=1e-3)


def test_errors_by_kind_partition_the_chi_error(experiment):
    # closed-shell and radical neutrals split the triples; their χ squared errors add up to the
    # pooled one that the R² uses (R² = 1 - SSE / SST)
    from phai.train.aimnet_me import read_charge_data

    data = read_charge_data(DATA)
    res = experiment.rescore(data, [RESULTS])
    kinds = res["by_kind"]
    assert kinds["closed"]["n"] + kinds["radical"]["n"] == 353
    assert kinds["closed"]["chi_sse_share"] + kinds["radical"]["chi_sse_share"] == pytest.approx(1.0, abs=1e-12)
    assert kinds["closed, EA < 0"]["n"] < kinds["closed"]["n"]
    sse = sum(v["n"] * v["chi_rmse_ev"] ** 2 for k, v in kinds.items() if k in ("closed", "radical"))
    sst = 353 * res["cdft"]["chi"]["ref_std_ev"] ** 2
    assert 1 - sse / sst == pytest.approx(res["cdft"]["chi"]["r2"], abs=1e-10)


def test_chi_error_by_molecule_shares_add_up(experiment):
    from phai.train.aimnet_me import read_charge_data

    data = read_charge_data(DATA)
    pred = json.loads(RESULTS.read_text())["predictions"]
    e = {(g, int(q)): v for v, g, q in zip(pred["energy"], pred["geometry"], pred["charge"])}
    energy = np.array([e[(str(g), int(q))] for g, q in zip(data.geometry, data.charge)])
    every = experiment.chi_error_by_molecule(data, energy, top=1000)
    assert len(every) == 254 and sum(v["geometries"] for v in every) == 353
    assert sum(v["share"] for v in every) == pytest.approx(1.0, abs=1e-12)
    shares = [v["share"] for v in every]
    assert shares == sorted(shares, reverse=True)
    assert experiment.chi_error_by_molecule(data, energy, top=3) == every[:3]
