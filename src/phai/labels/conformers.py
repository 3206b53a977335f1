"""Conformers for labelling: RDKit ETKDG embedding, then ANI-1-style normal-mode sampling.

Pipeline for one molecule (all seeded, so the same call gives the same geometries):

1. **Embedding.** ``Chem.AddHs(Chem.MolFromSmiles(smiles))``, ETKDGv3 ``EmbedMultipleConfs``
   (``randomSeed`` from the seed) for up to ``num_embed`` conformers pruned at 0.5 Å heavy-atom
   RMSD, each relaxed with MMFF94 (``MMFFOptimizeMoleculeConfs``).
2. **Reference minimum and Hessian (GFN2-xTB).** Every embedded conformer is relaxed with
   GFN2-xTB (tblite; L-BFGS on the analytic gradient until the largest force component is
   below ``fmax``), and its Cartesian Hessian is built by central finite differences of the
   GFN2-xTB gradient (step ``0.005`` Å, symmetrised). Conformers that relax onto the same
   minimum (all interatomic distances within 0.05 Å) are kept once. Why GFN2-xTB: the
   ANI-1 recipe displaces along the normal modes of a minimum of a quantum-chemical
   potential; GFN2-xTB is quantum-chemical, covers every element, costs milliseconds here,
   and (unlike ANI-1x) is not one of the models that will be compared on these data, so the
   sampling does not favour it. MMFF would do, but RDKit exposes no MMFF Hessian.
3. **Normal modes** as :func:`phai.md.vibrations.harmonic_analysis` computes them
   (translations and rotations projected out; :func:`vibrational_modes`): ``N_f = 3A - 6``
   (``3A - 5`` linear) Cartesian displacement patterns ``d_i`` normalised to 1 Å, and the
   force constant along each,
   ``K_i = d_i^T H d_i`` (eV/Å², the reduced mass times ω², Gaussian's "Frc consts"),
   floored at ``min_force_constant`` (imaginary or soft modes get the floor).
4. **Normal-mode sampling** (ANI-1; the recipe as J. Smith's ``nmsgenerator`` in
   Jussmith01/ANI-Tools ``lib/nmstools.py`` codes it). Per sample::

       u_i ~ U(0, 1) (i = 1..N_f),   s ~ U(0, 1)
       c_i = s u_i / Σ_j u_j                      (so Σ c_i = s ≤ 1)
       R_i = ±sqrt(c_i N_f k_B T / K_i)           (sign ±1 with probability 1/2; Å)
       R_i = clip(R_i, -max_step, max_step)
       x   = x_eq + Σ_i R_i d_i

   The harmonic energy put into mode ``i`` is ``K_i R_i²/2 = c_i N_f k_B T / 2``, i.e. a
   random fraction ``c_i`` of ``N_f k_B T / 2`` (the equipartition potential energy of
   ``N_f`` modes at ``T``); the total is ``s N_f k_B T / 2``. A sample is rejected and drawn
   again (up to 100 times) when two atoms come closer than ``0.006 Z_i Z_j + 0.6`` Å or any
   atom moved more than 2 Å from ``x_eq``, both as in ``nmstools.py``.

   Deliberate differences from that code: the step cap is symmetric (the code's
   ``min(R_i, maxd)`` caps only positive steps), and the random numbers come from a
   ``numpy.random.Generator`` seeded per molecule. The ANI-1 paper's text of the formula
   (with a factor 3 and the number of atoms) could not be checked here; this is the
   released code's form.

Base conformers are used in turn (sample ``k`` displaces base ``k mod n_base``), so flexible
molecules get displacements around each rotamer found.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..units import BOHR_TO_ANGSTROM, HARTREE_TO_EV
from .labellers import check_electrons

K_B_EV: float = 8.617333262e-5
"""Boltzmann constant (eV/K)."""

MIN_FORCE_CONSTANT: float = 0.05 * 1e-8 / 1e-10 / (1.602176634e-19 / 1e-20)
"""0.05 mDyn/Å (the ANI-Tools AL cycle's ``minfc``) in eV/Å²: 0.05 mDyn/Å = 5 N/m = 0.3121 eV/Å²."""


@dataclass(frozen=True)
class Conformer:
    """One geometry to label.

    Attributes:
      name: molecule name (groups conformers of one molecule; used for splits and export).
      numbers: ``[A]`` atomic numbers.
      positions: ``[A, 3]`` Å.
      charge: total charge (e).
      multiplicity: 2S + 1.
      info: free-form metadata (SMILES, sampler settings, index), JSON-serialisable.
    """

    name: str
    numbers: np.ndarray
    positions: np.ndarray
    charge: int = 0
    multiplicity: int = 1
    info: dict = field(default_factory=dict, compare=False)


def molecule_seed(seed: int, name: str) -> np.random.SeedSequence:
    """A per-molecule seed: ``SeedSequence([seed, crc32(name)])`` (independent of list order)."""
    return np.random.SeedSequence([int(seed), zlib.crc32(name.encode())])


def embed(smiles: str, num_embed: int = 3, seed: int = 0, prune_rmsd: float = 0.5):
    """RDKit ETKDGv3 conformers of ``smiles`` with hydrogens, MMFF94-relaxed.

    Returns ``(numbers [A], positions [C, A, 3] Å)`` with ``1 <= C <= num_embed``.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InputError(f"RDKit cannot parse the SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed) % (2**31 - 1)
    params.pruneRmsThresh = float(prune_rmsd)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(num_embed), params=params))
    if not ids:
        raise InputError(f"RDKit could not embed {smiles!r} in 3D")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int64)
    positions = np.stack([mol.GetConformer(i).GetPositions() for i in ids])
    return numbers, positions


def _xtb_energy_gradient(numbers, positions, charge=0, multiplicity=1):
    """GFN2-xTB energy (eV) and gradient (eV/Å) through tblite."""
    from tblite.interface import Calculator

    calc = Calculator("GFN2-xTB", np.asarray(numbers), np.asarray(positions, np.float64) / BOHR_TO_ANGSTROM,
                      charge=float(charge), uhf=int(multiplicity) - 1)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    e = float(res.get("energy")) * HARTREE_TO_EV
    g = np.asarray(res.get("gradient")) * HARTREE_TO_EV / BOHR_TO_ANGSTROM
    return e, g


def xtb_minimize(numbers, positions, charge=0, multiplicity=1, fmax: float = 0.005, steps: int = 500):
    """Relax with GFN2-xTB by L-BFGS until ``max |F| < fmax`` (eV/Å). Returns ``[A, 3]`` Å."""
    from scipy.optimize import minimize

    x0 = np.asarray(positions, np.float64).ravel()

    def fun(x):
        e, g = _xtb_energy_gradient(numbers, x.reshape(-1, 3), charge, multiplicity)
        return e, g.ravel()

    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": steps, "gtol": fmax, "ftol": 1e-14, "maxcor": 30})
    return res.x.reshape(-1, 3)


def xtb_hessian(numbers, positions, charge=0, multiplicity=1, step: float = 0.005) -> np.ndarray:
    """``[3A, 3A]`` eV/Å² by central differences of the GFN2-xTB gradient (symmetrised)."""
    x = np.asarray(positions, np.float64)
    n = x.size
    h = np.empty((n, n))
    for k in range(n):
        xp = x.ravel().copy()
        xp[k] += step
        xm = x.ravel().copy()
        xm[k] -= step
        gp = _xtb_energy_gradient(numbers, xp.reshape(-1, 3), charge, multiplicity)[1].ravel()
        gm = _xtb_energy_gradient(numbers, xm.reshape(-1, 3), charge, multiplicity)[1].ravel()
        h[k] = (gp - gm) / (2 * step)
    return 0.5 * (h + h.T)


def vibrational_modes(hessian, positions, masses) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic modes with translations and rotations projected out exactly.

    The same analysis as :func:`phai.md.vibrations.harmonic_analysis` (mass-weighted
    Hessian expressed in the orthonormal complement of the rigid-body vectors, then ``eigh``),
    kept here so that labelling never imports JAX (``phai.md`` does).

    Args:
      hessian: ``[3A, 3A]`` eV/Å². positions: ``[A, 3]`` Å. masses: ``[A]`` amu.

    Returns:
      ``modes [N_f, A, 3]``: Cartesian displacement patterns (mass-weighted eigenvectors
      divided by sqrt(m)) normalised to 1, by ascending eigenvalue; ``eigenvalues [N_f]``
      eV/(Å² amu).
    """
    h = 0.5 * (np.asarray(hessian, np.float64) + np.asarray(hessian, np.float64).T)
    m = np.asarray(masses, np.float64)
    x = np.asarray(positions, np.float64)
    a = len(m)
    sm = np.sqrt(m)
    xc = x - (m[:, None] * x).sum(0) / m.sum()
    vecs = []
    for k in range(3):
        t = np.zeros((a, 3))
        t[:, k] = sm
        vecs.append(t.ravel())
    inertia = (m[:, None, None] * (np.einsum("ai,ai->a", xc, xc)[:, None, None] * np.eye(3)
                                   - xc[:, :, None] * xc[:, None, :])).sum(0)
    moments, axes = np.linalg.eigh(inertia)
    for k in range(3):
        if a > 1 and moments[k] > 1e-6 * max(moments[-1], 1e-300):  # no rotation about a molecular axis
            vecs.append((np.cross(axes[:, k], xc) * sm[:, None]).ravel())
    rigid, _ = np.linalg.qr(np.stack(vecs, axis=1))
    u, _, _ = np.linalg.svd(rigid, full_matrices=True)
    d = u[:, rigid.shape[1]:]
    inv_sm = 1.0 / np.repeat(sm, 3)
    lam, vec = np.linalg.eigh(d.T @ (h * inv_sm[:, None] * inv_sm[None, :]) @ d)
    cart = (d @ vec) * inv_sm[:, None]
    cart /= np.linalg.norm(cart, axis=0, keepdims=True)
    return cart.T.reshape(-1, a, 3), lam


def normal_modes(numbers, positions, hessian, min_force_constant: float = MIN_FORCE_CONSTANT):
    """Modes ``[N_f, A, 3]`` (unit Cartesian patterns) and force constants ``[N_f]`` eV/Å².

    ``K_i = d_i^T H d_i`` (the curvature of the energy along the unit pattern ``d_i``),
    floored at ``min_force_constant``. Masses: ASE's standard atomic masses.
    """
    from ase.data import atomic_masses

    h = 0.5 * (np.asarray(hessian, np.float64) + np.asarray(hessian, np.float64).T)
    modes, _ = vibrational_modes(h, positions, atomic_masses[np.asarray(numbers)])
    d = modes.reshape(len(modes), -1)
    k = np.einsum("ki,ij,kj->k", d, h, d)
    return modes, np.maximum(k, min_force_constant)


def too_close(numbers, positions) -> bool:
    """ANI-Tools' rejection test: some pair closer than ``0.006 Z_i Z_j + 0.6`` Å."""
    z = np.asarray(numbers, np.float64)
    r = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    limit = 0.006 * z[:, None] * z[None] + 0.6
    iu = np.triu_indices(len(z), 1)
    return bool(np.any(r[iu] < limit[iu]))


def nms_displace(rng: np.random.Generator, positions, modes, force_constants, temperature: float,
                 max_step: float = 2.0) -> np.ndarray:
    """One normal-mode sample (no rejection): ``x_eq + Σ R_i d_i`` (Å), see the module docstring."""
    nf = len(force_constants)
    u = rng.random(nf)
    s = rng.random()
    c = s * u / u.sum()
    sign = np.where(rng.random(nf) < 0.5, -1.0, 1.0)
    r = sign * np.sqrt(c * nf * K_B_EV * temperature / force_constants)
    r = np.clip(r, -max_step, max_step)
    return positions + np.einsum("k,kac->ac", r, modes)


def nms_sample(rng: np.random.Generator, numbers, positions, modes, force_constants, temperature: float,
               max_step: float = 2.0, max_move: float = 2.0, tries: int = 100) -> np.ndarray:
    """A normal-mode sample that passes the distance checks, or InputError after ``tries``."""
    for _ in range(tries):
        x = nms_displace(rng, positions, modes, force_constants, temperature, max_step)
        moved = np.linalg.norm(x - positions, axis=1).max()
        if moved <= max_move and not too_close(numbers, x):
            return x
    raise InputError(f"no acceptable normal-mode sample in {tries} tries at T = {temperature} K")


def _same_minimum(a, b, tol=0.05) -> bool:
    da = np.linalg.norm(a[:, None] - a[None], axis=-1)
    db = np.linalg.norm(b[:, None] - b[None], axis=-1)
    return bool(np.abs(da - db).max() < tol)


@dataclass(frozen=True)
class Minimum:
    """A GFN2-xTB minimum with its normal modes (``modes [N_f, A, 3]``, ``force_constants [N_f]`` eV/Å²)."""

    numbers: np.ndarray
    positions: np.ndarray
    modes: np.ndarray
    force_constants: np.ndarray


def minima(smiles: str, num_embed: int = 3, seed: int = 0, charge: int = 0, multiplicity: int = 1,
           name: str | None = None) -> list[Minimum]:
    """Embed, relax with GFN2-xTB, drop duplicates and compute normal modes (see module docstring)."""
    ss = molecule_seed(seed, name or smiles)
    embed_seed = int(ss.generate_state(1)[0])
    numbers, confs = embed(smiles, num_embed=num_embed, seed=embed_seed)
    check_electrons(numbers, charge, multiplicity)
    out: list[Minimum] = []
    for x in confs:
        x = xtb_minimize(numbers, x, charge, multiplicity)
        if any(_same_minimum(x, m.positions) for m in out):
            continue
        h = xtb_hessian(numbers, x, charge, multiplicity)
        modes, k = normal_modes(numbers, x, h)
        out.append(Minimum(numbers, x, modes, k))
    return out


def sample_conformers(smiles: str, count: int, temperature: float = 600.0, *, name: str | None = None,
                      seed: int = 0, num_embed: int = 3, charge: int = 0, multiplicity: int = 1,
                      max_step: float = 2.0) -> list[Conformer]:
    """``count`` normal-mode samples of the molecule ``smiles`` at ``temperature`` (K).

    Deterministic in ``(smiles, name, seed, num_embed, temperature, count)`` on one machine
    (RDKit, tblite and NumPy versions fixed). ``info`` records the SMILES, the base minimum
    index, the sample index, the temperature and the seed.
    """
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    if not temperature > 0:
        raise InputError(f"temperature must be positive (K), got {temperature}")
    name = name or smiles
    base = minima(smiles, num_embed=num_embed, seed=seed, charge=charge, multiplicity=multiplicity, name=name)
    rng = np.random.default_rng(molecule_seed(seed, name).spawn(2)[1])
    out = []
    for k in range(count):
        m = base[k % len(base)]
        x = nms_sample(rng, m.numbers, m.positions, m.modes, m.force_constants, temperature, max_step)
        out.append(Conformer(name, m.numbers.copy(), x, charge, multiplicity,
                             {"smiles": smiles, "base": k % len(base), "sample": k,
                              "temperature": float(temperature), "seed": int(seed), "sampler": "nms/gfn2-xtb"}))
    return out


class MoleculeSpec(NamedTuple):
    """One molecule of a data set recipe: ``count`` normal-mode samples of ``smiles``, at
    ``multiplicity`` (2S + 1, neutral), for the ``split`` (``"train"`` or ``"test"``)."""

    name: str
    smiles: str
    count: int
    split: str = "train"
    multiplicity: int = 1


def sample_molecules(molecules: Iterable[MoleculeSpec], temperature: float = 600.0, *, seed: int = 0,
                     num_embed: int = 3, log: Callable[[str], None] | None = None) -> list[Conformer]:
    """:func:`sample_conformers` for each molecule in turn (neutral), ``info["split"]`` set.

    ``log`` (e.g. ``print``) gets one line per molecule: conformers, atoms, multiplicity,
    minima, seconds; None (default) is silent. Returns the conformers in molecule order.
    """
    out = []
    for m in molecules:
        t0 = time.perf_counter()
        cs = sample_conformers(m.smiles, m.count, temperature, name=m.name, seed=seed, num_embed=num_embed,
                               multiplicity=m.multiplicity)
        for c in cs:
            c.info["split"] = m.split
        out += cs
        if log is not None:
            log(f"{m.name:18s} {len(cs):3d} conformers, {len(cs[0].numbers):2d} atoms, mult {m.multiplicity}, "
                f"{len({c.info['base'] for c in cs})} minima, {time.perf_counter() - t0:.1f} s")
    return out
