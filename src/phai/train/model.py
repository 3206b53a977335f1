"""The trainable ANI model: architecture, initial weights, pretrained starting points.

Training uses exactly the functions inference uses (:func:`phai.models.ani.ani_member_energies`
on :func:`phai.descriptors.aev.aev`), so a trained model evaluates identically in
:class:`phai.potential.ANIPotential`. Weights are ``{symbol: [{"W": [M, in, out], "b": [M, out]}, ...]}``
with the ``M`` ensemble members stacked; network energies are in Hartree.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import jax
import numpy as np

from ..descriptors.aev import AEVParams
from ..errors import InputError

ANI1X_HIDDEN = {"H": (160, 128, 96), "C": (144, 112, 96), "N": (128, 112, 96), "O": (128, 112, 96)}
"""Hidden widths of the ani-1x_8x / ani-1ccx_8x element networks (NeuroChem ``inputtrain.ipt``)."""


def _f32(values):
    return tuple(float(np.float32(v)) for v in values)


def ani1x_aev() -> AEVParams:
    """The AEV of ani-1x_8x (``rHCNO-5.2R_16-3.5A_a4-8.params``), as float32 values like the
    converted pretrained model, so that scratch-trained and pretrained models share it."""
    return AEVParams(Rcr=5.2, Rca=3.5, EtaR=(16.0,), ShfR=_f32(0.9 + 0.26875 * np.arange(16)), EtaA=(8.0,),
                     Zeta=(32.0,), ShfA=_f32([0.9, 1.55, 2.2, 2.85]),
                     ShfZ=_f32(math.pi / 16 + np.arange(8) * math.pi / 8), species=("H", "C", "N", "O"))


@dataclasses.dataclass
class ModelSpec:
    """What :class:`phai.potential.ANIPotential` needs besides the weights."""

    aev: AEVParams
    activations: dict
    members: int
    name: str = "trained"
    description: str = ""
    delta: dict | None = None
    """Δ-learning record written into the model folder (:func:`phai.train.delta.delta_record`):
    what this ensemble's energies are a difference to; None for an ordinary model."""

    def to_config(self) -> dict:
        cfg = {"kind": "ani", "name": self.name, "description": self.description, "members": self.members,
               "aev": dataclasses.asdict(self.aev), "activations": self.activations, "energy_unit": "hartree"}
        if self.delta:
            cfg["delta"] = dict(self.delta)
        return cfg

    @classmethod
    def from_config(cls, cfg: dict) -> ModelSpec:
        aev = AEVParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["aev"].items()})
        return cls(aev, {s: list(v) for s, v in cfg["activations"].items()}, int(cfg["members"]),
                   cfg.get("name", "trained"), cfg.get("description", ""), cfg.get("delta"))


OUTPUT_SCALE = 0.01
"""Initial scale of the output layer's weights relative to ``1/sqrt(fan_in)``."""


def init_params(key, aev_length: int, hidden: dict, members: int, species, dtype=np.float32,
                output_scale: float = OUTPUT_SCALE) -> dict:
    """Fresh weights: ``W ~ N(0, 1/fan_in)`` (TorchANI's training example: Kaiming normal with
    ``a=1``), zero biases, an independent draw per member and element (keys folded from
    ``key`` by element and layer, then split over members).

    Deliberate difference: the output layer is drawn ``output_scale`` (0.01) times smaller,
    so a new model starts close to its self energies alone (atomic outputs ~0.01 Hartree
    instead of ~1 Hartree, i.e. hundreds of kcal/mol of random noise per atom), which
    matters on small data sets and for Δ models."""
    params = {}
    for si, s in enumerate(species):
        widths = (aev_length, *hidden[s], 1)
        layers = []
        for l, (i, o) in enumerate(itertools.pairwise(widths)):
            k = jax.random.fold_in(jax.random.fold_in(key, si), l)
            W = jax.random.normal(k, (members, i, o), dtype) / np.sqrt(i)
            if l == len(widths) - 2:
                W = W * output_scale
            layers.append({"W": np.asarray(W, dtype), "b": np.zeros((members, o), dtype)})
        params[s] = layers
    return params


def scratch_model(key, members: int, hidden: dict | None = None, aev: AEVParams | None = None,
                  activation: str = "celu0.1"):
    """``(params, ModelSpec)`` of a new ANI-1x-architecture ensemble."""
    aev = aev or ani1x_aev()
    hidden = {s: tuple(v) for s, v in (hidden or ANI1X_HIDDEN).items()}
    missing = set(aev.species) - set(hidden)
    if missing:
        raise InputError(f"no hidden widths for {sorted(missing)}")
    params = init_params(key, aev.length, hidden, members, aev.species)
    acts = {s: [activation] * len(hidden[s]) + ["linear"] for s in aev.species}
    return params, ModelSpec(aev, acts, members)


def load_start(init: str, members: int | None = None):
    """``(params, sae_hartree, ModelSpec)`` of a starting model: a pretrained name
    (``"ani-1x"``), a model folder, or a training output folder (its best weights).
    ``members`` keeps only the first ``members`` of the ensemble."""
    from ..pretrained import load_arrays, store
    from .checkpoint import unflatten_params

    p = Path(init)
    if p.is_dir():
        if not (p / "config.json").is_file() and (p / "checkpoint" / "config.json").is_file():
            p = p / "checkpoint"
        arrays, cfg = store.load(p)
    else:
        arrays, cfg = load_arrays(init)
    if cfg.get("kind") != "ani":
        raise InputError(f"{init} is a {cfg.get('kind')!r} model; only ANI models can be fine-tuned")
    spec = ModelSpec.from_config(cfg)
    params = unflatten_params(arrays, spec.aev.species)
    if members is not None:
        if members > spec.members:
            raise InputError(f"{init} has {spec.members} members, {members} requested")
        params = jax.tree_util.tree_map(lambda a: np.asarray(a[:members]), params)
        spec.members = members
    return params, np.asarray(arrays["sae"], np.float64), spec
