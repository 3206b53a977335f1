"""Properties that need no oracle: derivatives, invariances, padding, compilation count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import pick, random_rotation

import phai


@pytest.fixture(scope="module")
def pot64():
    return phai.load("ani-1x", precision="float64")


def test_forces_are_negative_gradient(frames, pot64, x64):
    """Central finite differences of the float64 energy: h = 1e-5 Å gives a truncation error
    ~h^2 |E'''| / 6 ~ 1e-8 and a rounding error ~1e-12 eV / h ~ 1e-7 eV/Å."""
    frame = pick(frames, "alanine_dipeptide", "distorted")
    z, r = frame.numbers, frame.positions
    f = pot64(z, r).forces
    rng = np.random.default_rng(0)
    h = 1e-5
    for atom, axis in zip(rng.choice(len(z), 6, replace=False), rng.integers(0, 3, 6)):
        rp, rm = r.copy(), r.copy()
        rp[atom, axis] += h
        rm[atom, axis] -= h
        fd = -(pot64.energy(z, rp) - pot64.energy(z, rm)) / (2 * h)
        assert f[atom, axis] == pytest.approx(fd, abs=1e-6)


@pytest.mark.parametrize("name", ["water", "ethanol", "glycine"])
def test_hessian_matches_finite_differences_of_forces(frames, pot64, name, x64):
    """Autodiff Hessian vs central differences of the forces (h = 1e-5 Å).

    CELU's second derivative jumps (from 1/alpha to 0) where a pre-activation crosses 0,
    so a finite difference is only valid where no unit crosses zero within +-h. Such
    crossings are rare; a column is compared only when halving h changes its finite
    difference by less than 1e-6 (it has converged), and nearly all columns must pass.
    """
    frame = pick(frames, name)
    z, r = frame.numbers, frame.positions
    H = pot64.hessian(z, r)
    assert H.shape == (3 * len(z), 3 * len(z))
    np.testing.assert_allclose(H, H.T, atol=1e-8)

    def fd_column(k, h):
        rp, rm = r.copy().reshape(-1), r.copy().reshape(-1)
        rp[k] += h
        rm[k] -= h
        return -(pot64.forces(z, rp.reshape(-1, 3)) - pot64.forces(z, rm.reshape(-1, 3))).reshape(-1) / (2 * h)

    compared = 0
    for k in range(0, 3 * len(z), 4):
        col, col_half = fd_column(k, 1e-5), fd_column(k, 5e-6)
        if np.abs(col - col_half).max() < 1e-6:
            np.testing.assert_allclose(H[:, k], col, atol=1e-5)
            compared += 1
    assert compared >= 0.8 * len(range(0, 3 * len(z), 4))


def test_invariance_rotation_translation_permutation(frames, pot64, x64):
    frame = pick(frames, "alanine_dipeptide")
    z, r = frame.numbers, frame.positions
    ref = pot64(z, r)
    Q = random_rotation(1)
    rot = pot64(z, r @ Q.T + np.array([3.0, -7.0, 11.0]))
    assert rot.energy == pytest.approx(ref.energy, abs=1e-9)
    np.testing.assert_allclose(rot.forces, ref.forces @ Q.T, atol=1e-8)
    perm = np.random.default_rng(2).permutation(len(z))
    p = pot64(z[perm], r[perm])
    assert p.energy == pytest.approx(ref.energy, abs=1e-9)
    np.testing.assert_allclose(p.forces, ref.forces[perm], atol=1e-9)


def test_padding_garbage_changes_nothing(frames, pot64, x64):
    """Fill every padding slot with garbage positions and species: no energy changes and
    the padding slots get exactly zero gradient."""
    structures = [(f.numbers, f.positions) for f in frames[:6]]
    packed = pot64.pack(structures)
    pad = ~packed.atom_mask
    assert pad.sum() > 0
    rng = np.random.default_rng(3)
    R_bad = packed.R.copy()
    R_bad[pad] = rng.normal(scale=1.0, size=(pad.sum(), 3))  # right on top of real atoms
    species_bad = packed.species.copy()
    species_bad[pad] = rng.integers(0, 4, pad.sum())
    params = pot64._cast_params()

    def energies(R, species):
        args = (R, species) + packed.device_args[2:]
        return pot64._forces_jit(params, *args, **packed.static_args)  # the compiled path users run

    e0, f0 = energies(jnp.asarray(packed.R), packed.species)
    e1, f1 = energies(jnp.asarray(R_bad), species_bad)
    np.testing.assert_array_equal(np.asarray(e0), np.asarray(e1))
    np.testing.assert_array_equal(np.asarray(f1)[pad], 0.0)
    assert np.all(np.isfinite(np.asarray(f1)))
    np.testing.assert_allclose(np.asarray(f0)[~pad], np.asarray(f1)[~pad], atol=1e-12)


def test_mixed_size_batch_equals_one_by_one_float32(frames):
    """float32: a batch and a lone molecule pad differently, so sums run in another order;
    2e-4 eV bounds that rounding for energies of ~1e4 eV (measured ~1e-5)."""
    pot = phai.load("ani-1x")
    picks = [frames[k] for k in (0, 3, 9, 26, 40, 42)]
    batch = pot.evaluate(picks)
    for frame, b in zip(picks, batch):
        single = pot(frame)
        assert b.energy == pytest.approx(single.energy, abs=2e-4)
        np.testing.assert_allclose(b.forces, single.forces, atol=2e-4)
        assert b.energy_std == pytest.approx(single.energy_std, abs=2e-4)


def test_no_recompilation_within_a_bucket(frames):
    """Molecules of different size and composition in one size bucket share a compilation;
    the 44 test frames (3 to 27 atoms) one by one compile at most 7 times."""
    pot = phai.load("ani-1x")
    para = pick(frames, "paracetamol")  # C8H9NO2, 20 atoms
    pot(para)
    traces = pot.traces
    pot(pick(frames, "paracetamol", "distorted"))
    pot(para.numbers, para.positions + 0.01)
    pot(pick(frames, "hexanoic_acid"))  # C6H12O2, 20 atoms
    pot(pick(frames, "alanine_dipeptide"))  # C6H12N2O2, 22 atoms
    assert pot.traces == traces
    for frame in frames:
        pot(frame)
    assert pot.traces <= 7


def test_isolated_fragments_do_not_interact(frames, pot64, x64):
    """Two molecules 20 Å apart in one structure: energy is the sum, forces are separate."""
    a, b = pick(frames, "ethanol"), pick(frames, "methane")
    z = np.concatenate([a.numbers, b.numbers])
    r = np.concatenate([a.positions, b.positions + np.array([20.0, 0, 0])])
    both = pot64(z, r)
    assert both.energy == pytest.approx(pot64.energy(a) + pot64.energy(b), abs=1e-8)


def test_flax_module_with_pretrained_weights(frames):
    """The flax wrapper takes the store's arrays as its parameters, unchanged."""
    import jax

    from phai.models.ani import ANIEnsemble
    from phai.pretrained import load_arrays
    from phai.units import HARTREE_TO_EV

    pot = phai.load("ani-1x")
    frame = pick(frames, "caffeine")
    packed = pot.pack([(frame.numbers, frame.positions)])
    model = ANIEnsemble(pot.config.aev, hidden={"H": (160, 128, 96), "C": (144, 112, 96),
                                                "N": (128, 112, 96), "O": (128, 112, 96)}, members=8)
    args = (jnp.asarray(packed.R, jnp.float32),) + packed.device_args[1:]
    init = model.init(jax.random.PRNGKey(0), *args, num_molecules=packed.num_molecules)
    arrays, _ = load_arrays("ani-1x")
    params = {k: jnp.asarray(v) for k, v in arrays.items() if k != "sae"}
    assert jax.tree_util.tree_map(jnp.shape, init["params"]) == jax.tree_util.tree_map(jnp.shape, params)
    e = np.asarray(model.apply({"params": params}, *args, num_molecules=packed.num_molecules))[:, 0]
    sae = arrays["sae"][pot.species_indices(frame.numbers)].sum()
    np.testing.assert_allclose((e + sae) * HARTREE_TO_EV, pot(frame).member_energies, atol=2e-4)


def test_jax_md_free_space_displacement_gives_the_same_aevs(frames, pot64, x64):
    """The geometry layer takes jax-md displacement functions (free space here)."""
    from jax_md import space

    from phai.descriptors.aev import aev

    frame = pick(frames, "glycine")
    p = pot64.pack([(frame.numbers, frame.positions)])
    disp, _ = space.free()
    R = jnp.asarray(p.R)
    a0 = aev(R, p.species, p.pairs, p.triples, pot64.config.aev)
    a1 = aev(R, p.species, p.pairs, p.triples, pot64.config.aev, displacement_fn=disp)
    np.testing.assert_allclose(np.asarray(a0), np.asarray(a1), atol=1e-14)
    assert np.array_equal(np.asarray(a0)[len(frame):], np.zeros_like(np.asarray(a0)[len(frame):]))


def test_jax_md_neighbor_lists_give_the_host_aevs(frames, pot64, x64):
    """The in-jit path (jax-md Dense neighbor lists -> flat pairs and triples) equals the
    host-built lists, so jax-md simulations and the API compute the same descriptor."""
    from jax_md import partition, space

    from phai.descriptors.aev import aev
    from phai.geometry import pairs_from_dense, triples_from_dense

    frame = pick(frames, "tryptophan", "distorted")
    R = jnp.asarray(frame.positions - frame.positions.min(0) + 1.0)
    disp, _ = space.free()
    lists = [partition.neighbor_list(disp, box=100.0, r_cutoff=rc, format=partition.Dense,
                                     disable_cell_list=True).allocate(R) for rc in (5.2, 3.5)]
    assert not any(bool(nl.did_buffer_overflow) for nl in lists)
    species = jnp.asarray(pot64.species_indices(frame.numbers))
    g = jax.jit(lambda R, ir, ia: aev(R, species, pairs_from_dense(ir), triples_from_dense(ia),
                                      pot64.config.aev, disp))(R, lists[0].idx, lists[1].idx)
    np.testing.assert_allclose(np.asarray(g), pot64.aev(frame), atol=1e-12)
