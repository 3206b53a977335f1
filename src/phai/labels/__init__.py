"""Labels from real quantum chemistry: conformers, labellers, a durable resumable store.

* :mod:`~phai.labels.conformers`: RDKit ETKDG + MMFF embedding, GFN2-xTB minima and
  Hessians, ANI-1 normal-mode sampling (:func:`sample_conformers`).
* :mod:`~phai.labels.labellers`: :class:`PySCFLabeller` (ωB97X/6-31G(d) by default, the
  ANI-1x level), :class:`PySCFCCSDTLabeller` (CCSD(T)/cc-pVDZ energies),
  :class:`TBLiteLabeller` (GFN2-xTB); ``label(numbers, positions Å, charge, multiplicity)``
  -> ``{"energy": eV, "forces": eV/Å, ...}``; :class:`PySCFUKSLabeller` (unrestricted,
  any charge/multiplicity, with meta-Löwdin α/β atomic populations).
* :mod:`~phai.labels.store`: :func:`label_many` (parallel processes, one durable file per
  label, resumes without recomputing), :func:`export_ani_h5` (ANI-1x HDF5 layout).

PySCF, tblite and RDKit are imported only inside the functions that use them.
"""

from .conformers import Conformer, nms_sample, sample_conformers
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
    load_records,
    summary,
)

__all__ = [
    "Conformer", "LabelFailed", "Labeller", "PySCFCCSDTLabeller", "PySCFLabeller", "PySCFUKSLabeller", "TBLiteLabeller",
    "check_electrons", "collect", "export_ani_h5", "label_key", "label_many", "labeller_from_level",
    "level_prefix", "load_records", "nms_sample", "sample_conformers", "summary",
]
