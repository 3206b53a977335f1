"""Physical constants and unit conversions used at phai's boundaries.

phai's public units are ASE's: Å, eV, fs, amu, elementary charge. Hartree appears only
inside readers of reference files (NeuroChem self energies, ANI HDF5 labels) and is
converted with TorchANI's constant, which equals ``ase.units.Hartree`` (CODATA 2014), so
that numbers agree with TorchANI to the last digit.
"""

HARTREE_TO_EV: float = 27.211386024367243
"""eV per Hartree (CODATA 2014; TorchANI's ``HARTREE_TO_EV`` and ASE's ``units.Hartree``)."""

EV_TO_HARTREE: float = 1.0 / HARTREE_TO_EV

BOHR_TO_ANGSTROM: float = 0.5291772105638411
"""Å per bohr (ASE's ``units.Bohr``)."""

EV_TO_KCALMOL: float = 23.060547830619026
"""kcal/mol per eV (ASE: ``1 / (units.kcal / units.mol)``)."""

HARTREE_TO_KCALMOL: float = HARTREE_TO_EV * EV_TO_KCALMOL
