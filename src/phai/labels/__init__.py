"""Labels from real quantum chemistry: conformers, labellers, a durable resumable store.

* :mod:`~phai.labels.conformers`: RDKit ETKDG + MMFF embedding, GFN2-xTB minima and
  Hessians, ANI-1 normal-mode sampling (:func:`sample_conformers`; :func:`sample_molecules`
  for a list of :class:`MoleculeSpec`).
* :mod:`~phai.labels.labellers`: :class:`PySCFLabeller` (ωB97X/6-31G(d) by default, the
  ANI-1x level), :class:`PySCFCCSDTLabeller` (CCSD(T)/cc-pVDZ energies),
  :class:`TBLiteLabeller` (GFN2-xTB); ``label(numbers, positions Å, charge, multiplicity)``
  -> ``{"energy": eV, "forces": eV/Å, ...}``; :class:`PySCFUKSLabeller` (unrestricted,
  any charge/multiplicity, with meta-Löwdin α/β atomic populations).
* :mod:`~phai.labels.store`: :func:`label_many` (parallel processes, one durable file per
  label, resumes without recomputing), :func:`export_ani_h5` (ANI-1x HDF5 layout),
  :func:`save_conformers`/:func:`load_conformers` (a recipe's ``conformers.json``) and
  :func:`atomic_output` (from :mod:`phai.atomic`: any file written whole or not at all).

PySCF, tblite and RDKit are imported only inside the functions that use them.
"""

from ..atomic import atomic_output
from .conformers import (
    Conformer,
    MoleculeSpec,
    nms_sample,
    sample_conformers,
    sample_molecules,
)
from .labellers import (
    LabelFailed,
    Labeller,
    PySCFCCSDTLabeller,
    PySCFLabeller,
    PySCFUKSLabeller,
    TBLiteLabeller,
    check_electrons,
    labeller_from_level,
)
from .store import (
    collect,
    export_ani_h5,
    label_key,
    label_many,
    level_prefix,
    load_conformers,
    load_records,
    save_conformers,
    summary,
)

__all__ = [
    "Conformer", "LabelFailed", "Labeller", "MoleculeSpec", "PySCFCCSDTLabeller", "PySCFLabeller", "PySCFUKSLabeller",
    "TBLiteLabeller", "atomic_output", "check_electrons", "collect", "export_ani_h5", "label_key", "label_many",
    "labeller_from_level", "level_prefix", "load_conformers", "load_records", "nms_sample", "sample_conformers",
    "sample_molecules", "save_conformers", "summary",
]
