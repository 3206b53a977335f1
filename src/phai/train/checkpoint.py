"""Checkpoints and trained-model folders.

A training run writes into one output folder ``DIR``:

``DIR/config.json``, ``DIR/arrays.npz``
    The trained ensemble (each member's best-validation weights and the fitted self
    energies) in phai's model format (:mod:`phai.pretrained.store`), so that
    ``phai.load(DIR)`` and ``phai energy --model DIR`` evaluate it. Each file is written to
    a temporary name, fsynced and moved into place (``arrays.npz`` first; its SHA-256 is in
    ``config.json``, so a crash between the two moves is detected on load, never
    silently mixed).
``DIR/checkpoint/``
    The full training state, also in the model format (so it is itself loadable): the
    current weights, ``best/...`` weights, every optimizer-state leaf as ``opt/NNNN``, and in
    ``config.json`` the epoch, the batch index within the epoch, the step, the learning
    rate and plateau counters, the per-member best validation losses, the running sums of
    the unfinished epoch, the padded shapes used and the metrics history. Written with
    :func:`phai.pretrained.store.save` (temporary folder, fsync, ``os.replace``), so a kill
    at any moment leaves either the previous or the new checkpoint. No pickle anywhere.
``DIR/metrics.jsonl``, ``DIR/metrics.csv``, ``DIR/learning_curve.png``
    One row per epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

from ..atomic import atomic_output
from ..pretrained import store


def flatten_params(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """``{symbol: [{"W", "b"}, ...]}`` -> ``{"{prefix}{X}/{l}/W": array, ...}`` (store keys)."""
    out = {}
    for s, layers in params.items():
        for l, layer in enumerate(layers):
            for k in ("W", "b"):
                out[f"{prefix}{s}/{l}/{k}"] = np.asarray(layer[k])
    return out


def unflatten_params(arrays: dict, species, prefix: str = "") -> dict:
    """Inverse of :func:`flatten_params` (NumPy arrays)."""
    out = {}
    for s in species:
        layers, l = [], 0
        while f"{prefix}{s}/{l}/W" in arrays:
            layers.append({"W": np.asarray(arrays[f"{prefix}{s}/{l}/W"]), "b": np.asarray(arrays[f"{prefix}{s}/{l}/b"])})
            l += 1
        out[s] = layers
    return out


def flatten_tree(tree, prefix: str) -> dict[str, np.ndarray]:
    """Every leaf of a pytree (an optimizer state) as ``{prefix}{k:04d}``, in tree order
    (scalars such as the step count stay 0-d)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return {f"{prefix}{k:04d}": np.asarray(v) for k, v in enumerate(leaves)}


def unflatten_tree(template, arrays: dict, prefix: str):
    """Refill ``template``'s structure with ``{prefix}NNNN`` arrays, checking shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    keys = sorted(k for k in arrays if k.startswith(prefix))
    if len(keys) != len(leaves):
        raise ValueError(f"checkpoint holds {len(keys)} optimizer arrays, the optimizer has {len(leaves)}: "
                         f"was it written with other optimizer settings?")
    new = []
    for k, t in zip(keys, leaves):
        a = arrays[k]
        if np.shape(t) == () and a.shape == (1,):  # checkpoints of phai <= 0.1 stored scalars as [1]
            a = a.reshape(())
        if a.shape != np.shape(t) or a.dtype != np.asarray(t).dtype:
            raise ValueError(f"checkpoint array {k} is {a.shape} {a.dtype}, expected {np.shape(t)} {np.asarray(t).dtype}")
        new.append(a)
    return jax.tree_util.tree_unflatten(treedef, new)


def write_checkpoint(folder: os.PathLike, arrays: dict, model_config: dict, training: dict) -> Path:
    """Atomically write a checkpoint folder (see the module docstring)."""
    config = dict(model_config)
    config["training"] = training
    return store.save(folder, arrays, config)


def read_checkpoint(folder: os.PathLike) -> tuple[dict, dict]:
    """``(arrays, config)`` of a checkpoint folder, checksum verified."""
    return store.load(folder)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (:func:`phai.atomic.atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_model_files(folder: os.PathLike, arrays: dict, config: dict) -> Path:
    """Write ``arrays.npz`` and ``config.json`` of a model into ``folder`` without touching
    other files there (the checkpoint, the logs): each file atomically, the arrays first."""
    import io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    store.write_npz(buf, arrays)
    _atomic_write_bytes(folder / "arrays.npz", buf.getvalue())
    config = store.finish_config(config, arrays, folder / "arrays.npz")
    _atomic_write_bytes(folder / "config.json", json.dumps(config, indent=1, sort_keys=True).encode())
    return folder


def write_text_atomic(path: os.PathLike, text: str) -> None:
    _atomic_write_bytes(Path(path), text.encode())
