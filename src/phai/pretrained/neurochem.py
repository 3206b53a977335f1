"""Readers for NeuroChem model files (the format of TorchANI's shipped ANI ensembles).

A NeuroChem model directory holds ``rHCNO-....params`` (AEV constants, see
:meth:`phai.descriptors.AEVParams.from_neurochem`), ``sae_linfit.dat`` (self atomic
energies in Hartree, ``H,0=-0.60...``) and ``train{m}/networks/ANN-{X}.nnf`` per member
``m`` and element ``X``. An ``.nnf`` file is a decimal byte count, ``=``, a newline and a
bzip2 stream of a small text format listing the layers; each layer names its raw
little-endian float32 weight (``[out, in]``, row-major) and bias files.

Everything here reads bytes through a ``read(relative_path) -> bytes`` callable, so a
wheel can be read straight from its zip archive with no extraction and no torch import.
"""

from __future__ import annotations

import bz2
import re
from collections.abc import Callable

import numpy as np

from ..errors import ModelFileError

ACTIVATIONS = {5: "gaussian", 6: "linear", 9: "celu0.1"}
"""NeuroChem activation codes (TorchANI ``neurochem._get_activation``)."""

Reader = Callable[[str], bytes]


def parse_sae(text: str, species: tuple[str, ...]) -> np.ndarray:
    """Self atomic energies ``[S]`` float64 (Hartree) in the order of ``species``."""
    table = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"(\w+)\s*,\s*(\d+)\s*=\s*(\S+)", line)
        if not m:
            raise ModelFileError(f"sae_linfit.dat: cannot read line {line!r}")
        table[m.group(1)] = (int(m.group(2)), float(m.group(3)))
    missing = [s for s in species if s not in table]
    if missing:
        raise ModelFileError(f"sae_linfit.dat has no self energy for {missing}")
    for k, s in enumerate(species):
        if table[s][0] != k:
            raise ModelFileError(f"sae_linfit.dat puts {s} at index {table[s][0]}, the .params file at {k}")
    return np.array([table[s][1] for s in species], dtype=np.float64)


def decompress_nnf(raw: bytes) -> str:
    """The text of an ``.nnf`` file (strip the ``<size>=\\n`` header, then bunzip2)."""
    eq = raw.find(b"=")
    if eq < 0:
        raise ModelFileError("not a NeuroChem .nnf file: no '=' header")
    try:
        text = bz2.decompress(raw[eq + 2:])
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"corrupt .nnf file: {exc}") from None
    return text.rstrip(b"\x00").decode("ascii").strip()


_LAYER = re.compile(r"layer\s*\[(.*?)\](?!\s*;)", re.DOTALL)
_ASSIGN = re.compile(r"(\w+)\s*=\s*([^;]+);")


def parse_nnf(text: str) -> list[dict]:
    """Layers of an ``.nnf`` text: dicts with ``blocksize``, ``nodes``, ``activation`` and
    ``weights``/``biases`` as ``(file name, element count)``."""
    layers = []
    for body in _LAYER.findall(text):
        fields = {}
        for key, value in _ASSIGN.findall(body):
            value = value.strip()
            m = re.fullmatch(r"FILE:([\w.\-]+)\[(\d+)\]", value)
            fields[key] = (m.group(1), int(m.group(2))) if m else value
        for key in ("blocksize", "nodes", "activation", "weights", "biases"):
            if key not in fields:
                raise ModelFileError(f".nnf layer lacks {key!r}")
        fields["blocksize"] = int(fields["blocksize"])
        fields["nodes"] = int(fields["nodes"])
        fields["activation"] = int(fields["activation"])
        layers.append(fields)
    if not layers:
        raise ModelFileError(".nnf text lists no layers")
    return layers


def read_network(read: Reader, network_dir: str, element: str) -> list[dict]:
    """One element network: a list of ``{"W": [in, out] f32, "b": [out] f32, "activation": str}``."""
    name = f"{network_dir}/ANN-{element}.nnf"
    layers = []
    for spec in parse_nnf(decompress_nnf(read(name))):
        n_in, n_out = spec["blocksize"], spec["nodes"]
        wfile, wsize = spec["weights"]
        bfile, bsize = spec["biases"]
        if wsize != n_in * n_out or bsize != n_out:
            raise ModelFileError(f"{name}: layer {n_in}->{n_out} declares {wsize} weights and {bsize} biases")
        w = np.frombuffer(read(f"{network_dir}/{wfile}"), dtype="<f4")
        b = np.frombuffer(read(f"{network_dir}/{bfile}"), dtype="<f4")
        if w.size != wsize or b.size != bsize:
            raise ModelFileError(f"{network_dir}/{wfile}: expected {wsize} weights and {bsize} biases, "
                                 f"found {w.size} and {b.size}")
        if spec["activation"] not in ACTIVATIONS:
            raise ModelFileError(f"{name}: unknown NeuroChem activation code {spec['activation']}")
        layers.append({"W": w.reshape(n_out, n_in).T.copy(), "b": b.copy(),
                       "activation": ACTIVATIONS[spec["activation"]]})
    return layers
