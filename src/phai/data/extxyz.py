"""Extended XYZ conformation sets, read and written through ASE.

Each frame is one conformation. Labels live where ASE's extended XYZ puts them: the energy
(eV) in the comment line (``energy=-1234.5``, ``atoms.info[energy_key]``) and forces (eV/Å)
as a per-atom column (``atoms.arrays[forces_key]``); if those keys are absent, the results
of a ``SinglePointCalculator`` written by ASE are used (``energy``/``forces``).

Frames become molecules (groups) as described in :meth:`Conformations.from_ase`: by the
comment-line key ``molecule=...`` when present (recommended for strongly distorted
conformers), else by formula, atom order and connectivity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_output
from ..errors import InputError
from .conformations import Conformations

__all__ = ["read_extxyz", "write_extxyz"]


def read_extxyz(path, energy_key: str | None = "energy", forces_key: str | None = "forces", *,
                molecule_key: str = "molecule", properties: Sequence[str] = ()) -> Conformations:
    """Read every frame of an extended XYZ file into a :class:`Conformations` (eV, eV/Å).

    ``energy_key``/``forces_key`` name the comment-line key and the per-atom column (None: do
    not read that label); ``properties`` names further comment-line keys or per-atom columns
    to keep. Frames of one molecule must list the same atoms in the same order.
    """
    from ase.io import read

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        frames = read(p, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 - ASE raises many types for a malformed file
        raise InputError(f"{p}: not a readable extended XYZ file ({type(exc).__name__}: {exc})") from None
    try:
        return Conformations.from_ase(frames, energy_key, forces_key, forces=forces_key is not None,
                                      molecule_key=molecule_key, properties=tuple(properties))
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None


def write_extxyz(path, conformations: Conformations, energy_key: str = "energy", forces_key: str = "forces") -> Path:
    """Write one frame per conformation (global order), atomically (temp file, fsync, ``os.replace``).

    The comment line carries ``molecule=<id>``, ``group=<name>``, the energy as
    ``energy_key`` (eV) and per-conformation properties; forces (eV/Å) and per-atom properties
    are columns. :func:`read_extxyz` with the same keys gives back the same set: same groups,
    molecules and energies (exact: the comment line keeps every digit), while positions, forces
    and per-atom properties are rounded to the 8 decimals of ASE's columns (``%16.8f``: 1e-8 Å,
    1e-8 eV/Å). Use :func:`phai.data.write_ani_h5` for a bit-exact copy.
    """
    from ase.io import write

    if not isinstance(conformations, Conformations):
        raise InputError(f"write_extxyz takes a Conformations, got {type(conformations).__name__}")
    frames = conformations.to_ase(energy_key=energy_key, forces_key=forces_key)
    for atoms in frames:
        atoms.calc = None  # labels are in info/arrays under the chosen keys
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "w") as fh:
        write(fh, frames, format="extxyz")
    return path
