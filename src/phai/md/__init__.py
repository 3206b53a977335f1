"""Molecular dynamics with jax-md: energy functions for phai potentials, periodic cells,
neighbor lists with overflow handling.

>>> from jax_md import space, simulate
>>> import phai, phai.md
>>> pot = phai.load("ani-1x")
>>> displacement, shift = space.free()
>>> energy_fn = phai.md.ani_energy(pot, displacement, numbers)        # eV of R [A, 3] (Å)
>>> init, apply = simulate.nve(energy_fn, shift, dt=0.5 * phai.md.FS)  # time in phai.md units
>>> aim = phai.load("aimnet2-wb97m-d3")                                # free space only (no Ewald)
>>> energy_fn = phai.md.aimnet2_energy(aim, displacement, numbers, charge=1)
"""

from ..geometry.cell import (
    box_from_cell,
    box_matrix,
    check_cell,
    minimum_image,
    perpendicular_widths,
    wrap_positions,
)
from .aimnet2 import (
    aimnet2_energy,
    aimnet2_energy_from_neighbors,
    aimnet2_neighbor_list,
)
from .energy import (
    ALL_PAIRS_MAX_ATOMS,
    ANINeighborList,
    ANINeighborListFns,
    NeighborListOverflow,
    all_pair_lists,
    ani_energy,
    ani_energy_from_lists,
    ani_neighbor_list,
    run_chunked,
    safe_update,
)

FS: float = 0.09822694788464063
"""One femtosecond in jax-md's time unit for Å, eV and amu (Å sqrt(amu/eV) = 10.18 fs); ``ase.units.fs``."""
KB: float = 8.617330337217213e-05
"""Boltzmann constant (eV/K), ``ase.units.kB``: ``kT = KB * 300.0``."""

__all__ = [
    "ALL_PAIRS_MAX_ATOMS",
    "FS",
    "KB",
    "ANINeighborList",
    "ANINeighborListFns",
    "NeighborListOverflow",
    "aimnet2_energy",
    "aimnet2_energy_from_neighbors",
    "aimnet2_neighbor_list",
    "all_pair_lists",
    "ani_energy",
    "ani_energy_from_lists",
    "ani_neighbor_list",
    "box_from_cell",
    "box_matrix",
    "check_cell",
    "minimum_image",
    "perpendicular_widths",
    "run_chunked",
    "safe_update",
    "wrap_positions",
]
