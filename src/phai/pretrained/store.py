"""phai's own weight format: a folder with ``arrays.npz`` and ``config.json``.

``arrays.npz`` is a plain NumPy archive read with ``allow_pickle=False`` (no code can run
on load); ``config.json`` carries the hyperparameters, the expected shape of every array,
the provenance of the weights and the SHA-256 of ``arrays.npz``, which is checked on every
load. Folders are written to a temporary name and moved into place with ``os.replace``,
so a killed process never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ModelFileError

FORMAT_VERSION = 1


def cache_dir() -> Path:
    """Where converted models live: ``$PHAI_CACHE``, else ``$XDG_CACHE_HOME/phai``, else
    ``~/.cache/phai``."""
    env = os.environ.get("PHAI_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "phai"


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a NumPy archive to the open binary file ``f``, each array
    C-contiguous with its shape kept (0-d scalars stay 0-d)."""
    np.savez(f, **{k: np.asarray(v, order="C") for k, v in arrays.items()})


def finish_config(config: dict, arrays: dict[str, np.ndarray], npz_path: os.PathLike) -> dict:
    """``config`` plus the format version, every array's shape and dtype and the SHA-256
    of the archive at ``npz_path`` (what :func:`load` checks)."""
    config = dict(config)
    config["format_version"] = FORMAT_VERSION
    config["shapes"] = {k: list(np.shape(v)) for k, v in arrays.items()}
    config["dtypes"] = {k: str(np.asarray(v).dtype) for k, v in arrays.items()}
    config["arrays_sha256"] = sha256_file(npz_path)
    return config


def save(folder: os.PathLike, arrays: dict[str, np.ndarray], config: dict) -> Path:
    """Write ``arrays`` and ``config`` atomically to ``folder`` (replacing an old copy)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with open(tmp / "arrays.npz", "wb") as f:
            write_npz(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        config = finish_config(config, arrays, tmp / "arrays.npz")
        with open(tmp / "config.json", "w") as f:
            json.dump(config, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load(folder: os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a model folder, checking its checksum, format version, shapes and dtypes."""
    folder = Path(folder)
    cfg_path, arr_path = folder / "config.json", folder / "arrays.npz"
    if not cfg_path.is_file() or not arr_path.is_file():
        raise ModelFileError(f"{folder} is not a phai model folder (needs config.json and arrays.npz)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{cfg_path} is not valid JSON: {exc}") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{folder}: format version {config.get('format_version')}, expected {FORMAT_VERSION}")
    digest = sha256_file(arr_path)
    if digest != config.get("arrays_sha256"):
        raise ModelFileError(f"{arr_path} is corrupt: SHA-256 {digest[:12]}... does not match config.json; "
                             f"delete {folder} and load the model again")
    with np.load(arr_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    shapes, dtypes = config.get("shapes", {}), config.get("dtypes", {})
    if set(arrays) != set(shapes):
        raise ModelFileError(f"{folder}: arrays {sorted(set(arrays) ^ set(shapes))} disagree with config.json")
    for k, v in arrays.items():
        if list(v.shape) != list(shapes[k]) or str(v.dtype) != dtypes[k]:
            raise ModelFileError(f"{folder}: array {k} has shape {v.shape} {v.dtype}, "
                                 f"config.json says {shapes[k]} {dtypes[k]}")
    return arrays, config
