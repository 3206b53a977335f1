"""Quantum-chemistry labellers with one interface.

``labeller.label(numbers [A], positions [A, 3] Å, charge=0, multiplicity=1) -> dict`` with
``energy`` (eV, float), ``forces`` (eV/Å, ``[A, 3]``, or ``None`` when the method gives
energies only) and method-specific extras (eV); ``labeller.level`` names the level of
theory (``"wb97x/6-31g*"``, ``"ccsd(t)/cc-pvdz"``, ``"gfn2-xtb"``) and
``labeller.provenance()`` the program and version. Hartree appears only inside these
functions and is converted with :mod:`phai.units` (TorchANI's constant).

A charge/multiplicity that does not fit the electron count raises
:class:`phai.errors.InputError` before any computation; a calculation that runs but fails
(SCF or CCSD not converged) raises :class:`LabelFailed` with the reason, which
:func:`phai.labels.store.label_many` records as a failed label.

* :class:`PySCFLabeller`: Kohn-Sham DFT or HF with PySCF; restricted for singlets,
  unrestricted (UKS/UHF) for ``multiplicity > 1``. Default ``method="wb97x"`` and
  ``basis="6-31g*"`` with **Cartesian d functions** (``cart=True``, six d components): the
  ANI-1x level as Gaussian computes it (Gaussian's 6-31G(d) uses 6D by default, and the
  ANI-1x data were computed with Gaussian 09). PySCF's ``xc="wb97x"`` is libxc's
  ``HYB_GGA_XC_WB97X`` (Chai & Head-Gordon 2008), the functional Gaussian calls ωB97X.
  Grid: PySCF's default (``grids.level = 3``), SCF ``conv_tol = 1e-10`` Hartree.
  Forces are minus PySCF's analytic nuclear gradient (grid-weight derivatives not included,
  PySCF's default).
* :class:`PySCFUKSLabeller`: unrestricted Kohn-Sham (UKS, or UHF) for **every** charge and
  multiplicity, closed-shell singlets included, with spin-resolved atomic populations:
  extras ``pop_alpha``, ``pop_beta`` (electrons, ``[A]``, meta-Löwdin), ``q_alpha``,
  ``q_beta``, ``charges`` and ``spin`` (``[A]``, e). Conventions in the class docstring.
* :class:`PySCFCCSDTLabeller`: HF -> CCSD -> (T) with frozen 1s cores on C, N, O (and F),
  default basis cc-pVDZ (spherical). Energies only; ``extras`` carry ``hf_energy``,
  ``ccsd_correlation`` and ``triples_correlation`` (eV). This is CCSD(T)/cc-pVDZ, **not**
  the complete-basis-set CCSD(T)*/CBS of ANI-1ccx.
* :class:`TBLiteLabeller`: GFN2-xTB (or GFN1-xTB) through tblite; energies and forces.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import InputError, PhaiError
from ..units import BOHR_TO_ANGSTROM, HARTREE_TO_EV


class LabelFailed(PhaiError, RuntimeError):
    """A calculation ran but gave no trustworthy label (e.g. SCF not converged)."""


def check_electrons(numbers, charge: int = 0, multiplicity: int = 1) -> tuple[int, int]:
    """Validate the charge and multiplicity against the electron count.

    Returns ``(n_alpha, n_beta)``. Raises InputError when the multiplicity is not a positive
    integer, the electron count is negative, or ``N_e`` and ``multiplicity - 1`` have
    different parity (e.g. a doublet with an even number of electrons).
    """
    z = np.asarray(numbers)
    if z.ndim != 1 or z.size == 0:
        raise InputError(f"numbers must be a non-empty 1-D array of atomic numbers, got shape {z.shape}")
    if int(charge) != charge:
        raise InputError(f"charge must be an integer, got {charge}")
    if int(multiplicity) != multiplicity or multiplicity < 1:
        raise InputError(f"multiplicity must be a positive integer (2S+1), got {multiplicity}")
    ne = int(z.sum()) - int(charge)
    unpaired = int(multiplicity) - 1
    if ne < 0:
        raise InputError(f"charge {charge} leaves {ne} electrons")
    if unpaired > ne or (ne - unpaired) % 2:
        raise InputError(f"{ne} electrons (charge {charge}) cannot have multiplicity {multiplicity}: "
                         f"the number of electrons and multiplicity - 1 must have the same parity "
                         f"(try multiplicity {1 if ne % 2 == 0 else 2})")
    return (ne + unpaired) // 2, (ne - unpaired) // 2


def _check_geometry(numbers, positions) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(numbers, np.int64)
    x = np.asarray(positions, np.float64)
    if x.shape != (len(z), 3):
        raise InputError(f"positions must have shape ({len(z)}, 3) Å, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("positions contain NaN or inf")
    if np.any(z < 1) or np.any(z > 118):
        raise InputError(f"atomic numbers must be in 1..118, got {sorted(set(z.tolist()))}")
    return z, x


def _checked_state(numbers, positions, charge, multiplicity) -> tuple[np.ndarray, np.ndarray]:
    """``(numbers, positions)`` checked (:func:`_check_geometry`), and the charge and
    multiplicity checked against their electron count (:func:`check_electrons`)."""
    z, x = _check_geometry(numbers, positions)
    check_electrons(z, charge, multiplicity)
    return z, x


class Labeller:
    """Base class: ``label(numbers, positions, charge, multiplicity) -> dict`` (see module docstring)."""

    level: str = ""
    has_forces: bool = True

    def label(self, numbers, positions, charge: int = 0, multiplicity: int = 1) -> dict[str, Any]:
        z, x = _checked_state(numbers, positions, charge, multiplicity)
        t0 = time.perf_counter()
        out = self._compute(z, x, int(charge), int(multiplicity))
        out["seconds"] = time.perf_counter() - t0
        return out

    def _compute(self, numbers, positions, charge, multiplicity) -> dict[str, Any]:
        raise NotImplementedError

    def provenance(self) -> dict[str, str]:
        return {}

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable): ``type(self)(**config())`` rebuilds it."""
        return {}


def _pyscf_mol(numbers, positions, charge, multiplicity, basis, cart):
    from pyscf import gto

    return gto.M(atom=[(int(z), tuple(p)) for z, p in zip(numbers, positions)], unit="Angstrom",
                 basis=basis, charge=charge, spin=multiplicity - 1, cart=cart, verbose=0)


class PySCFLabeller(Labeller):
    """DFT (any PySCF ``xc``) or Hartree-Fock (``method="hf"``) energies and forces.

    Args:
      method: PySCF/libxc functional name (``"wb97x"``, ``"b3lyp"``, ...) or ``"hf"``.
      basis: basis-set name (PySCF's library).
      cart: Cartesian d (and f) functions; ``None`` picks True for Pople 6-31G-type bases
        (Gaussian's default 6D for them, as in the ANI-1x data) and False otherwise.
      grid_level: PySCF ``grids.level`` (3 = PySCF default).
      conv_tol: SCF energy convergence (Hartree).
      max_cycle: SCF iterations before :class:`LabelFailed`.

    Subclasses change what differs through the class attributes below (set per instance
    for :attr:`density_fit`) and :meth:`_extras`; the SCF set-up, the convergence check and
    the analytic gradient are shared.
    """

    unrestricted: bool = False
    """Run UKS/UHF for every multiplicity (else RKS/RHF for singlets, UKS/UHF otherwise)."""
    density_fit: bool = False
    """Density-fitted Coulomb and exchange (PySCF's default auxiliary basis)."""
    newton_fallback: bool = False
    """Give an SCF that DIIS does not converge one second-order (Newton) attempt."""

    def __init__(self, method: str = "wb97x", basis: str = "6-31g*", cart: bool | None = None,
                 grid_level: int = 3, conv_tol: float = 1e-10, max_cycle: int = 100):
        self.method = method.lower()
        self.basis = basis.lower()
        self.cart = self.basis.startswith("6-3") if cart is None else bool(cart)
        self.grid_level = int(grid_level)
        self.conv_tol = float(conv_tol)
        self.max_cycle = int(max_cycle)
        self.level = f"{self.method}/{self.basis}"

    def config(self):
        return {"method": self.method, "basis": self.basis, "cart": self.cart, "grid_level": self.grid_level,
                    "conv_tol": self.conv_tol, "max_cycle": self.max_cycle}

    def provenance(self):
        import pyscf

        return {"program": "pyscf", "version": pyscf.__version__, "cart": str(self.cart),
                "grid_level": str(self.grid_level)}

    def scf(self, mol, multiplicity: int):
        """The PySCF SCF object (not yet run) for ``mol``: RKS/RHF for a singlet unless
        :attr:`unrestricted`, else UKS/UHF; density-fitted if :attr:`density_fit`."""
        from pyscf import dft, scf

        open_shell = self.unrestricted or multiplicity > 1
        if self.method == "hf":
            mf = scf.UHF(mol) if open_shell else scf.RHF(mol)
        else:
            mf = dft.UKS(mol) if open_shell else dft.RKS(mol)
            mf.xc = self.method
            mf.grids.level = self.grid_level
        if self.density_fit:
            mf = mf.density_fit()  # PySCF's default auxiliary basis for the orbital basis
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        return mf

    def _converged_scf(self, mol, multiplicity: int):
        """``(mf, energy in Hartree)`` of a converged SCF; :class:`LabelFailed` otherwise."""
        mf = self.scf(mol, multiplicity)
        e = mf.kernel()
        if mf.converged:
            return mf, e
        if not self.newton_fallback:
            raise LabelFailed(f"{self.level}: SCF did not converge in {self.max_cycle} cycles (last E = {e} Ha)")
        # one second-order (Newton) attempt from where DIIS stopped: anions with diffuse
        # functions occasionally oscillate
        mf = mf.newton()
        e = mf.kernel(mf.make_rdm1())
        if not mf.converged:
            raise LabelFailed(f"{self.level}: SCF did not converge (DIIS {self.max_cycle} cycles, then Newton; "
                              f"last E = {e} Ha)")
        return mf, e

    def _extras(self, mol, mf, numbers) -> dict[str, Any]:
        """Method-specific results beside energy and forces (none here)."""
        return {}

    def energy(self, numbers, positions, charge: int = 0, multiplicity: int = 1) -> float:
        """The converged SCF energy alone (eV, float): no gradient and no extras, so about half
        the cost of :meth:`label` for a UKS state. The same checks and SCF (Newton fallback
        included) as :meth:`label`; :class:`LabelFailed` if it does not converge."""
        z, x = _checked_state(numbers, positions, charge, multiplicity)
        mol = _pyscf_mol(z, x, int(charge), int(multiplicity), self.basis, self.cart)
        return float(self._converged_scf(mol, int(multiplicity))[1]) * HARTREE_TO_EV

    def _compute(self, numbers, positions, charge, multiplicity):
        mol = _pyscf_mol(numbers, positions, charge, multiplicity, self.basis, self.cart)
        mf, e = self._converged_scf(mol, multiplicity)
        grad = mf.nuc_grad_method().kernel()
        return {"energy": float(e) * HARTREE_TO_EV,
                "forces": -np.asarray(grad) * (HARTREE_TO_EV / BOHR_TO_ANGSTROM),
                **self._extras(mol, mf, numbers)}


class PySCFUKSLabeller(PySCFLabeller):
    """Unrestricted DFT (UKS; UHF for ``method="hf"``) for every state, with spin-resolved charges.

    Every charge and multiplicity, closed-shell singlets included, runs unrestricted, so all
    states of a molecule come from one method (the same functional, grid and code path). For
    a closed-shell singlet UKS started from the restricted guess stays spin-symmetric and its
    energy equals RKS's (tested). Default level ``wb97x/6-31+g*`` (ωB97X, 6-31+G(d) with
    Cartesian d as in :class:`PySCFLabeller`): the ANI-1x level plus diffuse sp shells on the
    heavy atoms, which anions need.

    Results (``label(...)``): ``energy`` (eV), ``forces`` (eV/Å, ``[A, 3]``, minus the
    analytic UKS gradient) and the extras, all ``[A]``:

    * ``pop_alpha``, ``pop_beta``: electrons of spin α / β on each atom (meta-Löwdin
      populations, below); ``sum(pop_alpha) = N_α``, ``sum(pop_beta) = N_β`` (to the SCF
      convergence), with ``N_α - N_β = multiplicity - 1``.
    * ``q_alpha = Z/2 - pop_alpha``, ``q_beta = Z/2 - pop_beta`` (e): spin-resolved atomic
      charges, half the nuclear charge per spin channel, so that ``sum(q_alpha) = Q_α =
      (Q - M + 1)/2`` and ``sum(q_beta) = Q_β = (Q + M - 1)/2``: AIMNet-NSE's convention
      (isayevlab/aimnetnse ``eval.py``) for the total α/β charges of a molecule with charge
      ``Q`` and multiplicity ``M``.
    * ``charges = q_alpha + q_beta = Z - pop_alpha - pop_beta`` (e), summing to ``Q``.
    * ``spin = pop_alpha - pop_beta`` (electrons; the atomic spin population), summing to
      ``M - 1``.

    Charge model: **meta-Löwdin** populations (PySCF ``lo.orth_ao(mol, "meta_lowdin")``, the
    scheme behind PySCF's own ``mulliken_meta`` analysis; Sun et al., J. Chem. Phys. 153,
    024109 (2020)). The AO basis is orthogonalised atom-block-wise with ANO-projected
    pre-orthogonalisation, the α and β density matrices are expressed in that orthonormal
    basis (``D' = Cᵀ S D S C``), and an atom's population is the trace of its block. Why:
    Mulliken populations are notoriously unstable once diffuse functions are in the basis
    (the diffuse shells on one atom carry density belonging to its neighbours); meta-Löwdin
    populations are well defined for any basis, need nothing beyond PySCF core (Hirshfeld,
    CM5 and MBIS are not in it), sum exactly to the electron count of each spin, and change
    little between basis sets. They are not NBO charges (AIMNet-NSE's labels).

    Args: as :class:`PySCFLabeller` (default basis ``6-31+g*``), plus ``density_fit``:
    density-fitted Coulomb and exchange with PySCF's default auxiliary basis (``level`` then
    ends in ``/df``; about 1e-5 Hartree per atom from the exact integrals, smooth in the
    geometry). A SCF that DIIS does not converge gets one second-order (Newton) attempt
    before :class:`LabelFailed`.
    """

    unrestricted = True
    newton_fallback = True

    def __init__(self, method: str = "wb97x", basis: str = "6-31+g*", cart: bool | None = None,
                 grid_level: int = 3, conv_tol: float = 1e-10, max_cycle: int = 100, density_fit: bool = False):
        super().__init__(method=method, basis=basis, cart=cart, grid_level=grid_level, conv_tol=conv_tol,
                         max_cycle=max_cycle)
        self.density_fit = bool(density_fit)
        self.level = f"u{self.method}/{self.basis}" + ("/df" if self.density_fit else "")

    def config(self):
        return {**super().config(), "density_fit": self.density_fit}

    def provenance(self):
        out = super().provenance()
        out["populations"] = "meta-lowdin (ANO pre-orthogonalisation)"
        out["density_fit"] = str(self.density_fit)
        return out

    def _extras(self, mol, mf, numbers):
        pop_a, pop_b = spin_populations(mol, mf.make_rdm1())
        half_z = numbers.astype(np.float64) / 2.0
        return {"pop_alpha": pop_a, "pop_beta": pop_b, "q_alpha": half_z - pop_a, "q_beta": half_z - pop_b,
                "charges": numbers - pop_a - pop_b, "spin": pop_a - pop_b}


def spin_populations(mol, dm) -> tuple[np.ndarray, np.ndarray]:
    """Meta-Löwdin α and β electron populations per atom, ``([A], [A])`` electrons.

    ``dm``: ``[2, nao, nao]`` α and β AO density matrices (an unrestricted SCF's
    ``make_rdm1()``); a ``[nao, nao]`` total density is split in equal halves.
    """
    from pyscf import lo

    dm = np.asarray(dm)
    if dm.ndim == 2:
        dm = np.stack([dm / 2, dm / 2])
    c = lo.orth_ao(mol, "meta_lowdin")
    sc = mol.intor_symmetric("int1e_ovlp") @ c
    atom_of_ao = np.array([int(label.split()[0]) for label in mol.ao_labels()])
    pops = []
    for d in dm:
        occ = np.einsum("ik,ij,jk->k", sc, d, sc)  # diag(Cᵀ S D S C)
        pops.append(np.bincount(atom_of_ao, weights=occ, minlength=mol.natm))
    return pops[0], pops[1]


class PySCFCCSDTLabeller(Labeller):
    """CCSD(T) total energies (no forces) with PySCF; frozen core by default.

    Args:
      basis: basis set (default cc-pVDZ; spherical functions, as Dunning bases are defined).
      frozen_core: freeze the 1s orbital of every atom from Li to Ne (one orbital each).
      conv_tol: HF convergence (Hartree); CCSD uses PySCF's defaults.
    """

    has_forces = False

    def __init__(self, basis: str = "cc-pvdz", frozen_core: bool = True, conv_tol: float = 1e-10):
        self.basis = basis.lower()
        self.frozen_core = bool(frozen_core)
        self.conv_tol = float(conv_tol)
        self.level = f"ccsd(t)/{self.basis}"

    def config(self):
        return {"basis": self.basis, "frozen_core": self.frozen_core, "conv_tol": self.conv_tol}

    def provenance(self):
        import pyscf

        return {"program": "pyscf", "version": pyscf.__version__, "frozen_core": str(self.frozen_core)}

    def _compute(self, numbers, positions, charge, multiplicity):
        from pyscf import cc, scf

        if np.any(numbers > 10):
            raise InputError("PySCFCCSDTLabeller's frozen core covers H-Ne only; got an element beyond Ne")
        mol = _pyscf_mol(numbers, positions, charge, multiplicity, self.basis, False)
        mf = scf.RHF(mol) if multiplicity == 1 else scf.UHF(mol)
        mf.conv_tol = self.conv_tol
        ehf = mf.kernel()
        if not mf.converged:
            raise LabelFailed(f"{self.level}: HF did not converge (last E = {ehf} Ha)")
        ncore = int(np.sum(numbers > 2)) if self.frozen_core else 0
        mcc = (cc.CCSD if multiplicity == 1 else cc.UCCSD)(mf, frozen=ncore or None)
        ecorr, _, _ = mcc.kernel()
        if not mcc.converged:
            raise LabelFailed(f"{self.level}: CCSD amplitudes did not converge")
        et = mcc.ccsd_t()
        e = ehf + ecorr + et
        return {"energy": float(e) * HARTREE_TO_EV, "forces": None,
                "hf_energy": float(ehf) * HARTREE_TO_EV,
                "ccsd_correlation": float(ecorr) * HARTREE_TO_EV,
                "triples_correlation": float(et) * HARTREE_TO_EV}


class TBLiteLabeller(Labeller):
    """GFN2-xTB (default) or GFN1-xTB energies and forces with tblite."""

    def __init__(self, method: str = "GFN2-xTB", accuracy: float = 1.0, max_iter: int = 250):
        if method not in ("GFN2-xTB", "GFN1-xTB"):
            raise InputError(f"unknown tblite method {method!r}; use 'GFN2-xTB' or 'GFN1-xTB'")
        self.method = method
        self.accuracy = float(accuracy)
        self.max_iter = int(max_iter)
        self.level = method.lower()

    def config(self):
        return {"method": self.method, "accuracy": self.accuracy, "max_iter": self.max_iter}

    def provenance(self):
        from importlib.metadata import version

        return {"program": "tblite", "version": version("tblite")}

    def _compute(self, numbers, positions, charge, multiplicity):
        from tblite.interface import Calculator

        calc = Calculator(self.method, numbers, positions / BOHR_TO_ANGSTROM, charge=float(charge),
                          uhf=multiplicity - 1)
        calc.set("verbosity", 0)
        calc.set("accuracy", self.accuracy)
        calc.set("max-iter", self.max_iter)
        try:
            res = calc.singlepoint()
        except RuntimeError as exc:  # tblite raises RuntimeError when the SCC does not converge
            raise LabelFailed(f"{self.level}: {exc}") from None
        return {"energy": float(res.get("energy")) * HARTREE_TO_EV,
                "forces": -np.asarray(res.get("gradient")) * (HARTREE_TO_EV / BOHR_TO_ANGSTROM)}


_BY_TYPE = {"PySCFLabeller": PySCFLabeller, "PySCFUKSLabeller": PySCFUKSLabeller, "PySCFCCSDTLabeller": PySCFCCSDTLabeller,
            "TBLiteLabeller": TBLiteLabeller}


def labeller_from_level(level: str) -> Labeller:
    """``"wb97x/6-31g*"``, ``"hf/cc-pvdz"``, ``"ccsd(t)/cc-pvdz"``, ``"gfn2-xtb"``, ``"gfn1-xtb"`` -> a labeller.

    A ``u`` before the method (``"uwb97x/6-31+g*"``, ``"uhf/cc-pvdz"``) gives the
    always-unrestricted :class:`PySCFUKSLabeller`.
    """
    text = level.strip().lower()
    if text in ("gfn2-xtb", "gfn2", "xtb"):
        return TBLiteLabeller("GFN2-xTB")
    if text in ("gfn1-xtb", "gfn1"):
        return TBLiteLabeller("GFN1-xTB")
    if "/" not in text:
        raise InputError(f"level {level!r}: write METHOD/BASIS (e.g. wb97x/6-31g*, ccsd(t)/cc-pvdz) or gfn2-xtb")
    method, basis = text.split("/", 1)
    if method == "ccsd(t)":
        return PySCFCCSDTLabeller(basis=basis)
    if method.startswith("u") and len(method) > 1:  # "uwb97x/6-31+g*", "uhf/...": PySCFUKSLabeller
        return PySCFUKSLabeller(method=method[1:], basis=basis)
    return PySCFLabeller(method=method, basis=basis)


def labeller_from_config(kind: str, config: dict) -> Labeller:
    """Rebuild a labeller from ``type(l).__name__`` and ``l.config()``."""
    if kind not in _BY_TYPE:
        raise InputError(f"unknown labeller type {kind!r}")
    return _BY_TYPE[kind](**config)
