"""Data sets for training: conformation sets, the ANI HDF5 layout, extended XYZ, batches.

>>> from phai.data import read_ani_h5, iter_batches
>>> data = read_ani_h5("ani1x-release.h5", "wb97x_dz.energy", "wb97x_dz.forces")   # eV, eV/Å
>>> train, valid, test = data.split_by_molecule((0.8, 0.1, 0.1), seed=0)
>>> for batch in iter_batches(train, 256, species=(1, 6, 7, 8), seed=0, epoch=3):
...     ...   # batch.packed -> phai.models.ani.ani_member_energies; batch.energy [B] eV

Files larger than memory: ``open_ani_h5(path, ...)`` indexes the file and ``iter_batches(ds,
..., window=100_000)`` keeps one window of groups in memory.

This package also ships the example molecules in ``molecules/*.xyz`` (package data).
"""

from .ani_h5 import (
           ANIH5Dataset,
           ani_h5_keys,
           iter_ani_h5,
           open_ani_h5,
           read_ani_h5,
           write_ani_h5,
           write_ani_h5_arrays,
)
from .batches import Batch, batch_plan, iter_batches, num_batches
from .conformations import Conformations, ConformerGroup, connectivity, formula
from .extxyz import read_extxyz, write_extxyz

__all__ = [
           "ANIH5Dataset",
           "Batch",
           "Conformations",
           "ConformerGroup",
           "ani_h5_keys",
           "batch_plan",
           "connectivity",
           "formula",
           "iter_ani_h5",
           "iter_batches",
           "num_batches",
           "open_ani_h5",
           "read_ani_h5",
           "read_extxyz",
           "write_ani_h5",
           "write_ani_h5_arrays",
           "write_extxyz",
]
