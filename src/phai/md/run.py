"""Molecular dynamics runs with jax-md integrators: the driver behind ``phai md``.

:func:`run_md` integrates Newton's equations (NVE, ``jax_md.simulate.nve``, velocity
Verlet) or samples the canonical ensemble (NVT) with ``jax_md.simulate.nvt_langevin``
(default; BAOAB-like Langevin, friction ``friction`` in 1/fs, centre-of-mass velocity kept
at zero) or ``jax_md.simulate.nvt_nose_hoover`` (``thermostat="nose-hoover"``, a chain of
5 thermostats with time constant ``tau`` fs). Steps run inside jitted ``lax.scan`` chunks
of ``log_every`` steps; after each chunk the host logs one frame.

Energy functions come from :mod:`phai.md.energy`: all pairs and triples for molecules up to
``ALL_PAIRS_LIMIT`` atoms, jax-md neighbor lists (overflow detected; the chunk is redone
with a larger list) for larger molecules and for periodic cells (``pbc`` all True;
positions are wrapped into the cell). AIMNet2 (:mod:`phai.md.aimnet2`) runs molecules only,
with a fixed total ``charge`` (all pairs up to ``AIMNET2_ALL_PAIRS_LIMIT`` atoms, a jax-md
neighbor list beyond); a periodic cell is refused (its Coulomb term would need Ewald sums).

Units: Å, eV, fs, amu, K. jax-md is unit-free; with Å, eV and amu its time unit is
``Å sqrt(amu/eV) = 10.18 fs`` (``phai.md.FS`` per fs), and momenta come out in ASE's units
(amu Å / ASE time), so ``atoms.set_momenta`` takes them as they are.

Initial momenta: Maxwell-Boltzmann at ``temperature`` from ``numpy.random.default_rng(seed)``,
minus their mean (zero total momentum). Reported temperature: ``2 KE / (k_B dof)`` with
``dof = 3A - 3`` (the total momentum is zero and stays so; ``3`` for one atom). jax-md's
Nose-Hoover chain targets ``KE = 3A k_B T / 2`` (all ``3A`` coordinates), so with it the
reported mean temperature sits ``3A / (3A - 3)`` above the target (5% for 21 atoms);
Langevin dynamics thermalises each degree of freedom and has no such offset.

Divergence: after every step the positions and the kinetic energy must be finite and the
instantaneous temperature below ``max(10 T, 5000 K)``; at every logged frame the potential
energy must be finite and, in NVE, the total energy within ``max_energy_jump`` eV/atom of
its initial value. A violation raises :class:`TrajectoryDiverged` naming the step; the
trajectory and log files keep every frame written before it (each is flushed as written).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import time
import warnings
from typing import NamedTuple

import numpy as np

from ..errors import InputError, PhaiError

LOG_COLUMNS = ("time_fs", "potential_eV", "kinetic_eV", "total_eV", "temperature_K")
ENSEMBLES = ("nve", "nvt")
THERMOSTATS = ("langevin", "nose-hoover")
MAX_DT_FS = 5.0  # above: an error (hydrogen vibrations have ~9 fs periods; Verlet is unstable)
WARN_DT_FS = 2.0  # above: a warning (energy conservation with hydrogens degrades)
MAX_TEMPERATURE_K = 10_000.0  # above: an error (far outside any molecular potential's data)
ALL_PAIRS_LIMIT = 64  # free-space molecules up to this size use all pairs/triples (A^3 triples)
AIMNET2_ALL_PAIRS_LIMIT = 200  # AIMNet2 molecules up to this size list every other atom (A^2 slots)
DEFAULT_FRICTION = 0.01  # 1/fs (Langevin; 100 fs relaxation time)
DEFAULT_TAU = 100.0  # fs (Nose-Hoover chain time constant)
DEFAULT_MAX_ENERGY_JUMP = 0.05  # eV/atom (NVE total-energy change that counts as divergence)


class TrajectoryDiverged(PhaiError):
    """The trajectory blew up (NaN, runaway temperature or an NVE energy jump).

    Attributes:
      step: the first step found bad.
      result: :class:`MDResult` up to the last good logged frame.
    """

    def __init__(self, message: str, step: int, result: MDResult):
        super().__init__(message)
        self.step = step
        self.result = result


@dataclasses.dataclass(frozen=True)
class MDSettings:
    """Options of :func:`run_md` (validated by :meth:`check`). Units: K, fs, 1/fs, eV/atom."""

    ensemble: str = "nvt"
    temperature: float = 300.0
    dt: float = 0.5
    steps: int = 1000
    log_every: int = 10
    seed: int = 0
    thermostat: str = "langevin"
    friction: float = DEFAULT_FRICTION
    tau: float = DEFAULT_TAU
    max_energy_jump: float = DEFAULT_MAX_ENERGY_JUMP

    def check(self) -> MDSettings:
        if self.ensemble not in ENSEMBLES:
            raise InputError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.thermostat not in THERMOSTATS:
            raise InputError(f"thermostat must be one of {', '.join(THERMOSTATS)}, got {self.thermostat!r}")
        t = self.temperature
        if not math.isfinite(t) or t < 0:
            raise InputError(f"temperature must be a finite number of kelvin >= 0, got {t}")
        if t > MAX_TEMPERATURE_K:
            raise InputError(f"temperature {t} K is beyond {MAX_TEMPERATURE_K:.0f} K, far outside what a "
                             f"molecular potential describes")
        if self.ensemble == "nvt" and t == 0:
            raise InputError("NVT needs a temperature above 0 K")
        if not math.isfinite(self.dt) or self.dt <= 0:
            raise InputError(f"the time step must be a positive number of fs, got {self.dt}")
        if self.dt > MAX_DT_FS:
            raise InputError(f"time step {self.dt} fs is above {MAX_DT_FS} fs: bonds to hydrogen vibrate "
                             f"with ~9 fs periods and the integration would blow up; use 0.5-1 fs")
        if int(self.steps) != self.steps or self.steps <= 0:
            raise InputError(f"steps must be a positive integer, got {self.steps}")
        if int(self.log_every) != self.log_every or self.log_every <= 0:
            raise InputError(f"log_every must be a positive integer, got {self.log_every}")
        if self.ensemble == "nvt":
            if self.thermostat == "langevin" and not (math.isfinite(self.friction) and self.friction > 0):
                raise InputError(f"friction must be a positive rate in 1/fs, got {self.friction}")
            if self.thermostat == "nose-hoover" and not (math.isfinite(self.tau) and self.tau > self.dt):
                raise InputError(f"tau must be a time in fs longer than the time step, got {self.tau}")
        if not (math.isfinite(self.max_energy_jump) and self.max_energy_jump > 0):
            raise InputError(f"max_energy_jump must be positive (eV/atom), got {self.max_energy_jump}")
        if self.dt > WARN_DT_FS:
            warnings.warn(f"time step {self.dt} fs is above {WARN_DT_FS} fs: expect poor energy conservation "
                          f"with hydrogen atoms", stacklevel=3)
        return self


class MDResult(NamedTuple):
    """A finished (or stopped) run; arrays hold one entry per logged frame, step 0 first.

    Attributes:
      atoms: ``ase.Atoms`` at the last good logged frame (positions Å, momenta set).
      steps: ``[F]`` step index of each frame.
      time_fs, potential, kinetic, total, temperature: ``[F]`` fs, eV, eV, eV, K.
      wall_time: seconds spent integrating (compilation included).
      settings: the :class:`MDSettings` used.
    """

    atoms: object
    steps: np.ndarray
    time_fs: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    total: np.ndarray
    temperature: np.ndarray
    wall_time: float
    settings: MDSettings

    @property
    def drift_per_atom(self) -> float:
        """``(E_total[-1] - E_total[0]) / A`` (eV/atom)."""
        return float((self.total[-1] - self.total[0]) / len(self.atoms))


def maxwell_boltzmann_momenta(masses: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """``[A, 3]`` momenta (amu Å / ASE time) from Maxwell-Boltzmann at ``temperature`` K,
    with the mean momentum removed so the total momentum is zero."""
    from ase import units

    m = np.asarray(masses, np.float64)
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((len(m), 3)) * np.sqrt(m * units.kB * temperature)[:, None]
    if len(m) > 1:
        p -= p.mean(axis=0, keepdims=True)
    return p


def degrees_of_freedom(num_atoms: int) -> int:
    """``3A - 3`` (zero total momentum), ``3`` for one atom."""
    return 3 * num_atoms - 3 if num_atoms > 1 else 3


class _System(NamedTuple):
    energy_fn: object  # (R, neighbor=None) -> eV
    shift_fn: object
    neighbor_fn: object  # None for all pairs
    box: object  # None in free space (jax-md box otherwise)


def _system(potential, atoms, R, charge: int = 0) -> _System:
    """jax-md energy function, shift and (optionally) neighbor-list functions for ``atoms``."""
    import jax.numpy as jnp
    from jax_md import space

    from . import aimnet2 as md_aimnet2
    from . import box_from_cell
    from . import energy as md_energy

    pbc = np.asarray(atoms.pbc, bool)
    if pbc.any() and not pbc.all():
        raise InputError(f"mixed periodicity (pbc={pbc.tolist()}) is not supported: use all True (a periodic "
                         f"cell) or all False (a molecule)")
    numbers = atoms.get_atomic_numbers()
    if md_aimnet2.is_aimnet2(potential):
        if pbc.any():
            raise InputError(f"{potential.name} runs molecules only (pbc all False): its Coulomb and D3 terms "
                             f"sum over all pairs, and a periodic cell would need Ewald summation, which phai "
                             f"does not implement")
        disp, shift = space.free()
        if len(numbers) <= AIMNET2_ALL_PAIRS_LIMIT:
            e_all = md_aimnet2.aimnet2_energy(potential, disp, numbers, charge=charge)
            return _System(lambda R_, neighbor=None, **kw: e_all(R_, **kw), shift, None, None)
        span = np.ptp(np.asarray(atoms.positions), axis=0).max() + 2 * potential.cfg.cutoff
        nfn, efn = md_aimnet2.aimnet2_neighbor_list(potential, disp, float(span), numbers, charge=charge,
                                                    disable_cell_list=True)
        return _System(efn, shift, nfn, None)
    if pbc.all():
        box = jnp.asarray(box_from_cell(atoms.cell), R.dtype)
        off_diagonal = np.asarray(box) - np.diag(np.diag(np.asarray(box)))
        if np.allclose(off_diagonal, 0.0):
            box = jnp.diag(box)
            disp, shift = space.periodic(box)
        else:
            disp, shift = space.periodic_general(box, fractional_coordinates=False)
        nfn, efn = md_energy.ani_neighbor_list(potential, disp, box, numbers)
        return _System(efn, shift, nfn, box)
    disp, shift = space.free()
    if len(numbers) <= ALL_PAIRS_LIMIT:
        e_all = md_energy.ani_energy(potential, disp, numbers)
        return _System(lambda R_, neighbor=None, **kw: e_all(R_, **kw), shift, None, None)
    span = np.ptp(np.asarray(atoms.positions), axis=0).max() + 2 * potential.cutoff
    nfn, efn = md_energy.ani_neighbor_list(potential, disp, float(span), numbers, disable_cell_list=True)
    return _System(efn, shift, nfn, None)


def _simulator(system: _System, s: MDSettings):
    from jax_md import simulate

    from . import FS, KB

    dt = s.dt * FS
    kT = s.temperature * KB
    if s.ensemble == "nve":
        return simulate.nve(system.energy_fn, system.shift_fn, dt=dt)
    if s.thermostat == "langevin":
        return simulate.nvt_langevin(system.energy_fn, system.shift_fn, dt=dt, kT=kT, gamma=s.friction / FS)
    return simulate.nvt_nose_hoover(system.energy_fn, system.shift_fn, dt=dt, kT=kT, tau=s.tau * FS)


def _make_chunk(apply_fn, system: _System, length: int, dof: int, t_limit: float):
    """Jitted ``(state, nbrs) -> (state, nbrs, bad_step, potential)``: ``length`` steps in
    ``lax.scan``; ``bad_step`` is the 0-based index of the first step with non-finite
    positions/kinetic energy or a runaway temperature (``length`` if none)."""
    import jax
    import jax.numpy as jnp

    from . import KB

    nfn = system.neighbor_fn

    def body(carry, _):
        state, nbrs = carry
        state = apply_fn(state, neighbor=nbrs) if nfn is not None else apply_fn(state)
        if nfn is not None:
            nbrs = nfn.update(state.position, nbrs)
        ke = 0.5 * jnp.sum(state.momentum ** 2 / state.mass)  # mass [A, 1] (jax-md's canonical shape)
        temp = 2 * ke / (dof * KB)
        ok = jnp.all(jnp.isfinite(state.position)) & jnp.isfinite(ke) & (temp < t_limit)
        return (state, nbrs), ok

    @jax.jit
    def chunk(state, nbrs):
        (state, nbrs), ok = jax.lax.scan(body, (state, nbrs), None, length=length)
        bad = jnp.where(jnp.all(ok), length, jnp.argmin(ok))
        return state, nbrs, bad, system.energy_fn(state.position, neighbor=nbrs)

    return chunk


class _Writers:
    """The trajectory (extended XYZ) and CSV log, each flushed after every frame."""

    def __init__(self, trajectory, log):
        self._files = contextlib.ExitStack()
        self.traj = self._files.enter_context(open(trajectory, "w")) if trajectory else None  # noqa: SIM115 (closed by close())
        self.log = self._files.enter_context(open(log, "w", newline="")) if log else None  # noqa: SIM115
        self.csv = csv.writer(self.log) if self.log else None
        if self.csv:
            self.csv.writerow(LOG_COLUMNS)
            self.log.flush()

    def frame(self, atoms, t_fs, epot, ekin, temp):
        import ase.io

        if self.traj:
            ase.io.write(self.traj, atoms, format="extxyz")
            self.traj.flush()
        if self.csv:
            self.csv.writerow([f"{t_fs:.6g}", f"{epot:.8f}", f"{ekin:.8f}", f"{epot + ekin:.8f}", f"{temp:.4f}"])
            self.log.flush()

    def close(self):
        self._files.close()


def run_md(atoms, potential="ani-1x", *, trajectory=None, log=None, progress: bool = False,
           momenta=None, settings: MDSettings | None = None, charge=None, **options) -> MDResult:
    """Run molecular dynamics of ``atoms`` with a phai potential and jax-md.

    Args:
      atoms: ``ase.Atoms``, a molecule (``pbc`` all False) or a periodic cell (all True).
        Not modified.
      potential: model name for :func:`phai.load` (float32) or a loaded ANI or AIMNet2
        potential, or a base + Δ :class:`phai.train.DeltaPotential` of ANI parts (a ``phai
        train --base`` folder); a float64 potential runs the whole trajectory in float64. AIMNet2 runs
        molecules only (a periodic cell is an :class:`InputError`).
      trajectory: path of an extended XYZ file written frame by frame (step 0 first),
        with ``time_fs``, ``step``, ``potential_eV``, ``kinetic_eV``, ``temperature_K`` in
        each frame's info and momenta (amu Å / ASE time unit).
      log: path of a CSV log with the columns :data:`LOG_COLUMNS`.
      progress: show a tqdm progress bar (on stderr).
      momenta: ``[A, 3]`` initial momenta (amu Å / ASE time, e.g. ``atoms.get_momenta()`` of
        a previous run's last frame) instead of Maxwell-Boltzmann ones.
      charge: total charge (e), fixed along the run; None: ``atoms.info["charge"]`` (default
        0). Only charge-aware models (AIMNet2) take a non-zero charge.
      settings: an :class:`MDSettings`, or its fields as keywords (``ensemble``,
        ``temperature`` K, ``dt`` fs, ``steps``, ``log_every``, ``seed``, ``thermostat``,
        ``friction`` 1/fs, ``tau`` fs, ``max_energy_jump`` eV/atom).

    Returns:
      :class:`MDResult` with one entry per logged frame (every ``log_every`` steps and the
      last step). Raises :class:`TrajectoryDiverged` (with the partial result) if the run
      blows up, after the files received every good frame.
    """
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from ..structures import validate_structure
    from .optimize import resolve_potential

    s = (settings or MDSettings()).check() if not options else dataclasses.replace(
        settings or MDSettings(), **options).check()
    from .aimnet2 import is_aimnet2

    pot = resolve_potential(potential, None if not isinstance(potential, str) else "float32")
    aimnet = is_aimnet2(pot)
    if not aimnet and (not hasattr(pot, "config") or not hasattr(getattr(pot, "config", None), "aev")):
        raise InputError(f"MD supports ANI and AIMNet2 potentials, not {type(pot).__name__}")
    if charge is None:
        charge = atoms.info.get("charge", 0)
        charge = 0 if charge is None else charge
    if aimnet:
        from ..models.aimnet2 import check_charge_multiplicity

        charge, _ = check_charge_multiplicity(atoms.get_atomic_numbers(), charge,
                                              atoms.info.get("multiplicity"))
    elif charge != 0:
        raise InputError(f"{pot.name} is trained on neutral molecules; the structure has charge {charge} "
                         f"(use a charge-aware model such as aimnet2-wb97m-d3)")
    supported = pot.elements if aimnet else pot.atomic_numbers
    z, _ = validate_structure(atoms.get_atomic_numbers(), atoms.get_positions(), supported=supported,
                              model=pot.name)
    x64 = pot.precision == "float64"
    a = len(z)
    dof = degrees_of_freedom(a)
    masses = atoms.get_masses()
    if momenta is None:
        p0 = maxwell_boltzmann_momenta(masses, s.temperature, s.seed)
    else:
        p0 = np.asarray(momenta, np.float64)
        if p0.shape != (len(masses), 3) or not np.all(np.isfinite(p0)):
            raise InputError(f"momenta must be finite with shape ({len(masses)}, 3), got {p0.shape}")
    t_limit = max(10.0 * s.temperature, 5000.0)
    energy_limit = s.max_energy_jump * a
    base = atoms.copy()
    base.calc = None
    base.set_constraint()
    if aimnet:
        base.info["charge"] = int(charge)  # frames re-read later keep the charge they were run with

    ctx = jax.enable_x64(True) if x64 else contextlib.nullcontext()
    writers = _Writers(trajectory, log)
    rec = {"steps": [], "time": [], "epot": [], "ekin": [], "temp": []}
    last_atoms = base
    start = time.perf_counter()
    bar = None

    def partial_result():
        return MDResult(last_atoms, np.array(rec["steps"]), np.array(rec["time"]), np.array(rec["epot"]),
                        np.array(rec["ekin"]), np.array(rec["epot"]) + np.array(rec["ekin"]),
                        np.array(rec["temp"]), time.perf_counter() - start, s)

    def record(step, state, epot):
        nonlocal last_atoms
        R = np.asarray(state.position, np.float64)
        p = np.asarray(state.momentum, np.float64)
        ekin = float(0.5 * np.sum(p * p / masses[:, None]))
        temp = 2 * ekin / (dof * _kb())
        fr = base.copy()
        fr.positions = R
        fr.set_momenta(p, apply_constraint=False)
        t_fs = step * s.dt
        fr.info.update({"step": int(step), "time_fs": t_fs, "potential_eV": epot, "kinetic_eV": ekin,
                        "temperature_K": temp})
        writers.frame(fr, t_fs, epot, ekin, temp)
        for k, v in zip(("steps", "time", "epot", "ekin", "temp"), (step, t_fs, epot, ekin, temp)):
            rec[k].append(v)
        last_atoms = fr

    try:
        # jax-md's periodic shift broadcasts [A, 3] against the [3] box sides: allow rank
        # promotion here even when an application (or the test suite) makes it an error
        with ctx, jax.numpy_rank_promotion("allow"), warnings.catch_warnings():
            # jax-md's Nose-Hoover asks for float64 sums, which float32 runs truncate (harmless)
            warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
            dtype = jnp.float64 if x64 else jnp.float32
            R0 = jnp.asarray(atoms.get_positions(), dtype)
            eng = _engine(pot, atoms, s, x64, dof, t_limit, charge)
            system = eng.system
            if system.box is not None:
                from . import wrap_positions

                R0 = wrap_positions(R0, system.box)
            nbrs = system.neighbor_fn.allocate(R0) if system.neighbor_fn is not None else None
            state, e0 = eng.start(jax.random.PRNGKey(s.seed), R0, jnp.asarray(masses, dtype),
                                 jnp.asarray(p0, dtype), nbrs)
            e0 = float(e0)
            if not math.isfinite(e0):
                raise TrajectoryDiverged("the potential energy of the initial structure is not finite", 0,
                                         partial_result())
            record(0, state, e0)
            etot0 = rec["epot"][0] + rec["ekin"][0]
            bar = tqdm(total=s.steps, unit="step", disable=not progress, desc=f"MD {s.ensemble}")
            done = 0
            while done < s.steps:
                length = min(s.log_every, s.steps - done)
                new_state, new_nbrs, bad, epot = eng.chunk(length)(state, nbrs)
                if nbrs is not None and bool(new_nbrs.did_buffer_overflow):
                    # redo the chunk from its start with a larger list (no step used the overflowed one)
                    try:
                        nbrs = _reallocate(system.neighbor_fn, state.position)
                    except RuntimeError as exc:  # phai.md.NeighborListOverflow
                        raise TrajectoryDiverged(f"between steps {done} and {done + length}: {exc}; kept "
                                                 f"{len(rec['steps'])} good frames", done + 1,
                                                 partial_result()) from None
                    continue
                bad = int(bad)
                epot = float(epot)
                if bad < length:
                    step = done + bad + 1
                    raise TrajectoryDiverged(
                        f"the trajectory diverged at step {step} (t = {step * s.dt:g} fs): non-finite positions "
                        f"or a temperature above {t_limit:.0f} K; kept {len(rec['steps'])} good frames up to "
                        f"step {done}. Use a smaller time step or check the structure", step, partial_result())
                if not math.isfinite(epot):
                    step = done + length
                    raise TrajectoryDiverged(
                        f"the potential energy is not finite at step {step}; kept {len(rec['steps'])} good "
                        f"frames up to step {done}", step, partial_result())
                if s.ensemble == "nve":
                    p = np.asarray(new_state.momentum, np.float64)
                    etot = epot + float(0.5 * np.sum(p * p / masses[:, None]))
                    if abs(etot - etot0) > energy_limit:
                        step = done + length
                        raise TrajectoryDiverged(
                            f"NVE total energy changed by {etot - etot0:+.4g} eV (more than {s.max_energy_jump:g} "
                            f"eV/atom) between steps {done} and {step}; kept {len(rec['steps'])} good frames up "
                            f"to step {done}. Use a smaller time step", step, partial_result())
                state, nbrs = new_state, new_nbrs
                done += length
                record(done, state, epot)
                bar.update(length)
    finally:
        if bar is not None:
            bar.close()
        writers.close()
    return partial_result()


class _Engine:
    """The jitted pieces of one kind of run: start (init + energy) and ``lax.scan`` chunks.

    Kept in a small cache (:func:`_engine`) so that repeated runs of one system in one
    process (a reproducibility check, an NVT run continued, the CLI called twice) reuse the
    compiled code instead of tracing new closures.
    """

    def __init__(self, pot, atoms, s: MDSettings, x64: bool, dof: int, t_limit: float, charge: int = 0):
        import jax
        import jax.numpy as jnp

        self.system = _system(pot, atoms, jnp.zeros((len(atoms), 3), jnp.float64 if x64 else jnp.float32), charge)
        init_fn, self.apply_fn = _simulator(self.system, s)
        extra = {"kT": s.temperature * _kb()} if s.ensemble == "nve" else {}
        system = self.system

        def start(key, R, mass, momenta, nbrs):
            kw = {"neighbor": nbrs} if nbrs is not None else {}
            st = init_fn(key, R, mass=mass, momenta=momenta, **extra, **kw)
            return st, system.energy_fn(R, neighbor=nbrs)

        self.start = jax.jit(start)  # eager evaluation would dispatch op by op (tens of seconds)
        self._chunks: dict = {}
        self._dof, self._t_limit = dof, t_limit

    def chunk(self, length: int):
        if length not in self._chunks:
            self._chunks[length] = _make_chunk(self.apply_fn, self.system, length, self._dof, self._t_limit)
        return self._chunks[length]


_ENGINES: dict = {}
_MAX_ENGINES = 4


def _engine(pot, atoms, s: MDSettings, x64: bool, dof: int, t_limit: float, charge: int = 0) -> _Engine:
    key = (pot, tuple(atoms.get_atomic_numbers().tolist()), tuple(bool(b) for b in atoms.pbc),
           np.asarray(atoms.cell, np.float64).tobytes() if any(atoms.pbc) else None, x64, s.ensemble, s.thermostat,
           s.dt, s.temperature, s.friction, s.tau, dof, t_limit, int(charge))
    if key not in _ENGINES:
        if len(_ENGINES) >= _MAX_ENGINES:
            _ENGINES.pop(next(iter(_ENGINES)))
        _ENGINES[key] = _Engine(pot, atoms, s, x64, dof, t_limit, int(charge))
    return _ENGINES[key]


def _reallocate(neighbor_fn, R):
    from .energy import NeighborListOverflow

    extra = 0
    for _ in range(4):
        nbrs = neighbor_fn.allocate(R, extra_capacity=extra)
        if not bool(nbrs.did_buffer_overflow):
            return nbrs
        extra = max(8, 2 * extra)
    raise NeighborListOverflow("the neighbor list kept overflowing after re-allocation: atoms are probably "
                               "collapsing onto each other (diverging trajectory)")


def _kb() -> float:
    from . import KB

    return KB
