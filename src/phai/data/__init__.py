"""Data sets for training: conformation sets, the ANI HDF5 layout, extended XYZ, batches.

>>> from phai.data import Conformations, read_ani_h5, iter_batches
>>> data = read_ani_h5("ani1x-release.h5", "wb97x_dz.energy", "wb97x_dz.forces")   # eV, eV/Å
>>> train, valid, test = data.split_by_molecule((0.8, 0.1, 0.1), seed=0)
>>> for batch in iter_batches(train, 256, species=(1, 6, 7, 8), seed=0, epoch=3):
...     ...   # batch.packed -> phai.models.ani.ani_member_energies; batch.energy [B] eV

This package also ships the example molecules in ``molecules/*.xyz`` (package data).
"""

from .batches import Batch, batch_plan, iter_batches, num_batches
from .conformations import ConformerGroup, Conformations, connectivity, formula

__all__ = ["Batch", "ConformerGroup", "Conformations", "batch_plan", "connectivity", "formula",
           "iter_batches", "num_batches"]
