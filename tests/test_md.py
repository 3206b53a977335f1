"""phai.md: jax-md energy functions (free, periodic orthorhombic and triclinic), neighbor
lists and their overflow handling, the periodic host path (ANIPotential, ASE calculator).

Oracles: the free-space model on an explicit replicated cluster (periodic energies), ASE's
numerical stress, central finite differences (forces), and each path against the others.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.io import read
from jax_md import minimize, quantity, simulate, space

import phai
import phai.ase
import phai.md
from phai.errors import InputError
from phai.md.systems import water_box

MOLECULES = Path(phai.__file__).parent / "data" / "molecules"


@pytest.fixture(scope="module")
def ani64():
    return phai.load("ani-1x", precision="float64")


@pytest.fixture(scope="module")
def ani32():
    return phai.load("ani-1x")


@pytest.fixture(scope="module")
def small_box():
    """64 waters in a 12.4 Å cube (widths above 2 x 5.2 Å)."""
    return water_box(64, seed=3)


def triclinic(atoms):
    """The same atoms in a sheared cell whose widths still exceed 10.4 Å."""
    t = atoms.copy()
    cell = t.cell.array.copy()
    cell[1, 0] += 2.0
    cell[2, 0] += 1.0
    cell[2, 1] -= 1.5
    t.set_cell(cell, scale_atoms=True)
    assert phai.md.perpendicular_widths(cell.T).min() > 10.4
    return t


def jaxmd_periodic(pot, atoms, jit=True, **kw):
    """(neighbor_fn, energy_fn, R) for ``atoms`` with jax-md's periodic_general space.

    ``jit``: the energy function wrapped in ``jax.jit``, for the tests that call it directly
    (jax-md's energy functions are plain functions, compiled by the caller's ``jit``; called
    outside one they run op by op, 5-10x slower to first result). Not inside another trace:
    jax-md's ``NeighborList`` keeps a jax scalar among its static fields."""
    box = jnp.asarray(phai.md.box_from_cell(atoms.cell))
    disp, _ = space.periodic_general(box, fractional_coordinates=False)
    nfn, efn = phai.md.ani_neighbor_list(pot, disp, box, atoms.numbers, **kw)
    return nfn, (jax.jit(efn) if jit else efn), jnp.asarray(atoms.positions)


def cluster_energy(pot, atoms):
    """Energy (eV) of the cell's atoms in an explicit free-space cluster of periodic images.

    Every image within the cutoff of the cell is included; the model's free-space code sums
    the atomic energies of the original atoms only (molecule 0), the images being their
    environment (molecule 1)."""
    from phai.geometry import host_pair_lists
    from phai.models.ani import ani_member_energies
    from phai.units import HARTREE_TO_EV

    n = len(atoms)
    frac = atoms.get_scaled_positions(wrap=True)
    margin = pot.cutoff / phai.md.perpendicular_widths(atoms.cell.array.T) + 1e-6
    pts, owner, central = [], [], []
    for shift in np.array(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij")).reshape(3, -1).T:
        s = frac + shift
        keep = np.all((s > -margin) & (s < 1 + margin), axis=1) if shift.any() else np.ones(n, bool)
        pts.append(s[keep] @ atoms.cell.array)
        owner.append(np.nonzero(keep)[0])
        central.append(np.full(keep.sum(), not shift.any()))
    R, owner, central = np.concatenate(pts), np.concatenate(owner), np.concatenate(central)
    z = atoms.numbers[owner]
    species = pot.species_indices(z).astype(np.int32)
    m = len(R)
    lists = host_pair_lists(R, np.ones(m, bool), np.zeros(m, np.int32), pot.cutoff, pot.config.aev.Rca)
    slots = tuple(np.nonzero(species == s)[0].astype(np.int32) for s in range(len(pot.species)))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), pot.params)
    e = jax.jit(lambda p, r: ani_member_energies(  # lists and layout are constants of the compiled function
        p, pot.config.aev, pot.config.activations, r, species, np.ones(m, bool), (~central).astype(np.int32),
        lists.pairs, lists.triples, slots, 2))(params, jnp.asarray(R))
    sae = pot.sae[pot.species_indices(atoms.numbers)].sum()
    return float((np.mean(np.asarray(e)[:, 0]) + sae) * HARTREE_TO_EV)


# ----------------------------------------------------------------------------- energy conservation
def nve_total_energies(pot, atoms, dtype, steps, dt_fs=0.5, every=10):
    disp, shift = space.free()
    efn = phai.md.ani_energy(pot, disp, atoms.numbers)
    init, apply = simulate.nve(efn, shift, dt_fs * phai.md.FS)
    mass = jnp.asarray(atoms.get_masses(), dtype)[:, None]
    state = init(jax.random.PRNGKey(0), jnp.asarray(atoms.positions, dtype), kT=300.0 * phai.md.KB, mass=mass)

    @jax.jit
    def run(state):
        def block(s, _):
            s = jax.lax.fori_loop(0, every, lambda _, x: apply(x), s)
            return s, efn(s.position) + quantity.kinetic_energy(momentum=s.momentum, mass=s.mass)

        return jax.lax.scan(block, state, None, length=steps // every)

    _, total = run(state)
    return np.asarray(total, np.float64)


def drift_and_spread(total, atoms):
    """(drift, spread) in eV/atom: the change of the mean total energy between the first and
    the last tenth of the run, and the largest excursion from the starting value (velocity
    Verlet's bounded oscillation of the shadow Hamiltonian, ~0.2 meV/atom at 0.5 fs)."""
    k = max(1, len(total) // 10)
    return abs(total[-k:].mean() - total[:k].mean()) / len(atoms), np.max(np.abs(total - total[0])) / len(atoms)


@pytest.mark.slow
def test_nve_conserves_energy_float64(ani64, x64):
    """Ethanol, 300 K, 5 ps at 0.5 fs (10,000 velocity-Verlet steps in lax.scan), float64.

    Measured (this machine): drift 0.057 meV/atom over 5 ps (change of the mean total energy
    between the first and last 0.5 ps), spread 0.51 meV/atom (largest |E(t) - E(0)|);
    asserted: drift < 0.2 meV/atom (target: well under 1) and spread < 1 meV/atom.
    Slow (~2-4 minutes on 2 shared cores: 10,000 small steps)."""
    atoms = read(MOLECULES / "ethanol.xyz")
    total = nve_total_energies(ani64, atoms, jnp.float64, 10_000)
    assert np.all(np.isfinite(total))
    drift, spread = drift_and_spread(total, atoms)
    print(f"float64 NVE 5 ps: drift {drift * 1e3:.4f} meV/atom, spread {spread * 1e3:.4f} meV/atom")
    assert drift < 2e-4
    assert spread < 1e-3


def test_nve_float32_figure(ani32):
    """float32 figure (0.5 ps, 1,000 steps): measured drift < 0.001 meV/atom, spread 0.22
    meV/atom (the total, ~ -4217 eV, is resolved to 0.5 meV = 0.05 meV/atom in float32);
    asserted < 1 meV/atom each."""
    atoms = read(MOLECULES / "ethanol.xyz")
    total = nve_total_energies(ani32, atoms, jnp.float32, 1_000)
    drift, spread = drift_and_spread(total, atoms)
    print(f"float32 NVE 0.5 ps: drift {drift * 1e3:.4f} meV/atom, spread {spread * 1e3:.4f} meV/atom")
    assert drift < 1e-3
    assert spread < 1e-3


# ----------------------------------------------------------------------------- periodic energies
@pytest.mark.parametrize("shape", ["orthorhombic", "triclinic"])
def test_periodic_energy_equals_replicated_cluster(ani64, x64, small_box, shape):
    atoms = small_box if shape == "orthorhombic" else triclinic(small_box)
    ref = cluster_energy(ani64, atoms)
    host = ani64(atoms)
    nfn, efn, R = jaxmd_periodic(ani64, atoms)
    e_md = float(efn(R, nfn.allocate(R)))
    assert abs(host.energy - ref) < 1e-8 * len(atoms)
    assert abs(e_md - ref) < 1e-8 * len(atoms)
    # and the energy is that of a condensed phase, not of a gas: the images matter
    assert abs(ani64(atoms.numbers, atoms.positions).energy - ref) > 1.0


@pytest.mark.parametrize("shape", ["orthorhombic", "triclinic"])
def test_neighbor_list_all_pairs_and_host_paths_agree(ani64, x64, small_box, shape):
    atoms = small_box if shape == "orthorhombic" else triclinic(small_box)
    box = jnp.asarray(phai.md.box_from_cell(atoms.cell))
    R = jnp.asarray(atoms.positions)
    disp, _ = space.periodic_general(box, fractional_coordinates=False)
    e_all = jax.jit(phai.md.ani_energy(ani64, disp, atoms.numbers, box=box))
    nfn, e_nl, _ = jaxmd_periodic(ani64, atoms)
    nbrs = nfn.allocate(R)
    # fractional coordinates (jax-md's cell list in triclinic cells)
    disp_f, _ = space.periodic_general(box, fractional_coordinates=True)
    nfn_f, e_f = phai.md.ani_neighbor_list(ani64, disp_f, box, atoms.numbers, fractional_coordinates=True)
    e_f = jax.jit(e_f)
    S = jnp.asarray(atoms.get_scaled_positions())
    f_nl = -np.asarray(jax.grad(e_nl)(R, nbrs))
    host = ani64(atoms)
    calc_atoms = atoms.copy()
    calc_atoms.calc = phai.ase.PhaiCalculator(ani64)
    for e in (float(e_all(R)), float(e_nl(R, nbrs)), float(e_f(S, nfn_f.allocate(S))),
              calc_atoms.get_potential_energy()):
        assert abs(e - host.energy) < 1e-9 * len(atoms)
    np.testing.assert_allclose(f_nl, host.forces, atol=1e-10)
    np.testing.assert_allclose(-np.asarray(jax.grad(e_all)(R)), host.forces, atol=1e-10)
    np.testing.assert_allclose(calc_atoms.get_forces(), host.forces, atol=1e-10)
    if shape == "orthorhombic":  # space.periodic with side lengths
        side = jnp.asarray(atoms.cell.lengths())
        d_o, _ = space.periodic(side)
        nfn_o, e_o = phai.md.ani_neighbor_list(ani64, d_o, side, atoms.numbers)
        assert abs(float(e_o(R, nfn_o.allocate(R))) - host.energy) < 1e-9 * len(atoms)


def test_free_space_neighbor_list_equals_all_pairs(ani64, x64):
    atoms = read(MOLECULES / "caffeine.xyz")
    disp, _ = space.free()
    R = jnp.asarray(atoms.positions)
    e_all = jax.jit(phai.md.ani_energy(ani64, disp, atoms.numbers))
    nfn, e_nl = phai.md.ani_neighbor_list(ani64, disp, 100.0, atoms.numbers, disable_cell_list=True)
    e_nl = jax.jit(e_nl)
    ref = ani64(atoms)
    assert abs(float(e_all(R)) - ref.energy) < 1e-9
    assert abs(float(e_nl(R, nfn.allocate(R))) - ref.energy) < 1e-9


# ----------------------------------------------------------------------------- forces, stress
def test_periodic_forces_and_stress_by_finite_differences(ani64, x64, small_box):
    atoms = triclinic(small_box)
    nfn, efn, R = jaxmd_periodic(ani64, atoms)
    nbrs = nfn.allocate(R)
    f = -np.asarray(jax.grad(efn)(R, nbrs))
    host_f = ani64(atoms).forces
    h = 1e-4
    for atom, axis in [(0, 0), (1, 2), (57, 1), (191, 0)]:
        e = []
        for sgn in (1, -1):
            Rp = R.at[atom, axis].add(sgn * h)
            e.append(float(efn(Rp, nbrs)))
            moved = atoms.copy()
            moved.positions[atom, axis] += sgn * h
            e.append(ani64.energy(moved))
        fd_md, fd_host = -(e[0] - e[2]) / (2 * h), -(e[1] - e[3]) / (2 * h)
        # central differences with h = 1e-4 Å: truncation error ~2e-6 eV/Å measured
        assert abs(fd_md - f[atom, axis]) < 1e-5
        assert abs(fd_host - host_f[atom, axis]) < 1e-5
    atoms.calc = phai.ase.PhaiCalculator(ani64)
    stress = atoms.get_stress()
    numeric = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    np.testing.assert_allclose(stress, numeric, atol=1e-8)


# ----------------------------------------------------------------------------- bad input, wrapping
def test_too_small_or_partly_periodic_cells_are_refused(ani32):
    atoms = water_box(27, seed=0)  # 9.3 Å cube
    assert atoms.cell.lengths()[0] < 10.4
    box = jnp.asarray(atoms.cell.lengths())
    disp, _ = space.periodic(box)
    with pytest.raises(InputError, match="too small"):
        phai.md.ani_neighbor_list(ani32, disp, box, atoms.numbers)
    with pytest.raises(InputError, match="too small"):
        phai.md.ani_energy(ani32, disp, atoms.numbers, box=box)
    atoms.calc = phai.ase.PhaiCalculator(ani32)
    with pytest.raises(InputError, match="too small"):
        atoms.get_potential_energy()
    slab = water_box(64, seed=3)
    slab.pbc = [True, True, False]
    with pytest.raises(InputError, match="slabs"):
        ani32(slab)


def test_atoms_outside_the_cell_are_wrapped(ani64, x64, small_box):
    atoms = triclinic(small_box)
    moved = atoms.copy()
    rng = np.random.default_rng(0)
    moved.positions += rng.integers(-2, 3, size=(len(atoms), 3)) @ atoms.cell.array
    assert not np.allclose(moved.get_scaled_positions(wrap=False) % 1.0, moved.get_scaled_positions(wrap=False))
    ref, out = ani64(atoms), ani64(moved)
    assert abs(ref.energy - out.energy) < 1e-9
    np.testing.assert_allclose(out.forces, ref.forces, atol=1e-10)
    nfn, efn, _ = jaxmd_periodic(ani64, atoms)
    Rm = jnp.asarray(moved.positions)
    assert abs(float(efn(Rm, nfn.allocate(Rm))) - ref.energy) < 1e-9


# ----------------------------------------------------------------------------- overflow
def test_overflow_is_detected_and_the_list_rebuilt(ani64, x64, small_box):
    atoms = small_box
    nfn, efn, R = jaxmd_periodic(ani64, atoms, capacity_multiplier=1.0, dr_threshold=0.2)
    nbrs = nfn.allocate(R)
    ref = ani64(atoms).energy
    # compress the box's contents towards one corner: more neighbors than the list holds
    centre = jnp.asarray(atoms.cell.array.sum(0) / 2)[None, :]
    Rc = centre + 0.8 * (R - centre)
    up = jax.jit(nfn.update)(Rc, nbrs)
    assert bool(up.did_buffer_overflow)
    good, reallocated = phai.md.safe_update(nfn, Rc, nbrs)
    assert reallocated and not bool(good.did_buffer_overflow)
    compressed = atoms.copy()
    compressed.positions = np.asarray(Rc)
    assert abs(float(efn(Rc, good)) - ani64(compressed).energy) < 1e-8
    # too few slots for the triples within Rca at evaluation: NaN, never a wrong number,
    # and the next update raises the (sticky) flag
    small = nbrs.set(exact_capacity=nbrs.capacities["exact_triples"] // 2)
    assert np.isnan(float(efn(R, small)))
    assert bool(jax.jit(nfn.update)(R, small).did_buffer_overflow)
    assert abs(float(efn(R, nbrs)) - ref) < 1e-8


def test_run_chunked_redoes_an_overflowed_chunk(ani32, small_box):
    """Langevin NVT at 600 K in lax.scan chunks from a list sized with no spare room: a chunk
    that overflows is rerun with a bigger list, and the final list never overflowed."""
    with jax.numpy_rank_promotion("allow"):  # jax-md's space.periodic shift broadcasts [3] over [A, 3]
        _run_chunked_case(ani32, small_box)


def _run_chunked_case(ani32, small_box):
    atoms = small_box
    box = jnp.asarray(atoms.cell.lengths(), jnp.float32)
    disp, shift = space.periodic(box)
    nfn, efn = phai.md.ani_neighbor_list(ani32, disp, box, atoms.numbers, capacity_multiplier=1.0,
                                         dr_threshold=0.1)
    R = jnp.asarray(atoms.positions, jnp.float32)
    nbrs = nfn.allocate(R)
    init, apply = simulate.nvt_langevin(efn, shift, 0.5 * phai.md.FS, kT=600 * phai.md.KB, gamma=0.05)
    mass = jnp.asarray(atoms.get_masses(), jnp.float32)[:, None]
    state = init(jax.random.PRNGKey(1), R, mass=mass, neighbor=nbrs)
    redo = []

    @jax.jit
    def chunk(state, nbrs):
        def body(c, _):
            s, n = c
            s = apply(s, neighbor=n)
            return (s, nfn.update(s.position, n)), efn(s.position, n)

        (state, nbrs), e = jax.lax.scan(body, (state, nbrs), None, length=20)
        return state, nbrs, e

    def watch(k, state, e):
        redo.append(np.asarray(e))

    first = nbrs.capacities
    state, nbrs = phai.md.run_chunked(chunk, state, nbrs, nfn, 4, callback=watch)
    assert len(redo) == 4 and all(np.all(np.isfinite(e)) for e in redo)
    assert not bool(nbrs.did_buffer_overflow)
    assert nbrs.capacities != first  # at least one re-allocation happened


# ----------------------------------------------------------------------------- integrators
def test_integrators_and_fire_run_under_jit(ani32, small_box):
    atoms = triclinic(small_box)
    box = jnp.asarray(phai.md.box_from_cell(atoms.cell), jnp.float32)
    disp, shift = space.periodic_general(box, fractional_coordinates=True)
    nfn, efn = phai.md.ani_neighbor_list(ani32, disp, box, atoms.numbers, fractional_coordinates=True)
    S = jnp.asarray(atoms.get_scaled_positions(), jnp.float32)
    nbrs = nfn.allocate(S)
    mass = jnp.asarray(atoms.get_masses(), jnp.float32)[:, None]
    e0 = float(efn(S, nbrs))

    fire_init, fire_apply = minimize.fire_descent(efn, shift, dt_start=0.5 * phai.md.FS, dt_max=2 * phai.md.FS)

    @jax.jit
    def relax(s, n):
        def body(c, _):
            s, n = c
            s = fire_apply(s, neighbor=n)
            return (s, nfn.update(s.position, n)), None

        return jax.lax.scan(body, (s, n), None, length=30)[0]

    fs, n2 = relax(fire_init(S, neighbor=nbrs), nbrs)
    assert not bool(n2.did_buffer_overflow)
    assert float(efn(fs.position, n2)) < e0 - 1.0

    nh_init, nh_apply = simulate.nvt_nose_hoover(efn, shift, 0.5 * phai.md.FS, kT=300 * phai.md.KB)
    st = nh_init(jax.random.PRNGKey(0), fs.position, mass=mass, neighbor=n2)

    @jax.jit
    def nvt(s, n):
        def body(c, _):
            s, n = c
            s = nh_apply(s, neighbor=n)
            return (s, nfn.update(s.position, n)), efn(s.position, n)

        return jax.lax.scan(body, (s, n), None, length=20)

    (st, n3), e = nvt(st, n2)
    assert not bool(n3.did_buffer_overflow) and np.all(np.isfinite(np.asarray(e)))


# ----------------------------------------------------------------------------- chunked AEV sums
def test_chunked_aev_sums_equal_the_direct_ones(ani64, x64, small_box, monkeypatch):
    """Large systems sum pair and triple terms in rematerialised lax.scan chunks
    (phai.descriptors.aev.CHUNK_SIZE / CHUNK_ABOVE); forcing chunks of 97 entries on the
    64-water box (8,139 pairs, 72,941 triples: ragged last chunks) changes energies,
    forces and a Hessian-vector product only by the order of float64 additions."""
    from phai.descriptors import aev as aev_module

    nfn, _, R = jaxmd_periodic(ani64, small_box)
    nbrs = nfn.allocate(R)
    v = jnp.asarray(np.random.default_rng(0).normal(size=R.shape))
    out = {}
    for name, (size, above) in {"direct": (aev_module.CHUNK_SIZE, 1 << 40), "chunked": (97, 0)}.items():
        monkeypatch.setattr(aev_module, "CHUNK_SIZE", size)
        monkeypatch.setattr(aev_module, "CHUNK_ABOVE", above)
        _, efn, _ = jaxmd_periodic(ani64, small_box, jit=False)  # a fresh function: traced with these settings
        # one compilation: energy, gradient and a Hessian-vector product (forward over reverse)
        (e, g), (_, hv) = jax.jit(lambda r, f=efn: jax.jvp(jax.value_and_grad(lambda x: f(x, nbrs)), (r,), (v,)))(R)
        out[name] = (float(e), np.asarray(g), np.asarray(hv))
    assert nbrs.pairs.shape[1] > 97 and nbrs.triples.shape[1] % 97 != 0
    assert abs(out["chunked"][0] - out["direct"][0]) < 1e-10
    np.testing.assert_allclose(out["chunked"][1], out["direct"][1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["chunked"][2], out["direct"][2], rtol=0, atol=1e-9)
