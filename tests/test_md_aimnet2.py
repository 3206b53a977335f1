"""phai.md.aimnet2: AIMNet2 as jax-md energy functions (free space, fixed total charge).

Oracle: AIMNet2's own evaluation (:class:`phai.models.aimnet2.AIMNet2`, itself checked
against the shipped TorchScript ensemble in tests/test_aimnet2*.py), in float64.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.io import read
from jax_md import simulate, space

import phai
import phai.md
from phai.errors import InputError, UnsupportedElementError

MOLECULES = Path(phai.__file__).parent / "data" / "molecules"


@pytest.fixture(scope="module")
def aim64():
    return phai.load("aimnet2-wb97m-d3", precision="float64")


@pytest.fixture(scope="module")
def ethanol():
    return read(MOLECULES / "ethanol.xyz")


def test_neighbor_list_energy_matches_aimnet2_and_nve_runs_under_jit(aim64, ethanol, x64):
    """The ethanol cation (charge +1): energy and forces of the jax-md neighbor-list energy
    function equal AIMNet2's own (float64), and NVE steps run in a jitted lax.scan with the
    list updated every step, conserving the total energy (the CLI test below runs NVE through
    phai.md.run_md with the all-pairs function)."""
    z, R = ethanol.numbers, jnp.asarray(ethanol.positions)
    ref = aim64(z, ethanol.positions, charge=1)
    disp, shift = space.free()
    span = float(np.ptp(ethanol.positions, axis=0).max() + 10.0)
    nfn, efn = phai.md.aimnet2_neighbor_list(aim64, disp, span, z, charge=1, disable_cell_list=True)
    nbrs = nfn.allocate(R)
    init, apply = simulate.nve(efn, shift, 0.5 * phai.md.FS)
    mass = jnp.asarray(ethanol.get_masses())[:, None]

    @jax.jit
    def run(R, nbrs):
        state = init(jax.random.PRNGKey(0), R, kT=300 * phai.md.KB, mass=mass, neighbor=nbrs)

        def body(carry, _):
            s, n = carry
            s = apply(s, neighbor=n)
            return (s, nfn.update(s.position, n)), None

        (s, n), _ = jax.lax.scan(body, (state, nbrs), None, length=6)
        e0 = efn(R, nbrs)
        kinetic = [0.5 * jnp.sum(x.momentum ** 2 / x.mass) for x in (state, s)]
        return e0, state.force, e0 + kinetic[0], efn(s.position, n) + kinetic[1], s.position, n

    e, f, etot0, etot6, R6, n6 = run(R, nbrs)
    assert abs(float(e) - ref.energy) < 1e-8
    np.testing.assert_allclose(np.asarray(f), ref.forces, rtol=0, atol=1e-8)
    assert not bool(n6.did_buffer_overflow)
    assert float(jnp.max(jnp.abs(R6 - R))) > 1e-4  # the atoms moved
    assert np.isfinite(float(etot6)) and abs(float(etot6 - etot0)) < 2e-3  # eV, 3 fs of velocity Verlet


def test_all_pairs_energy_matches_aimnet2(aim64, ethanol, x64):
    """The all-pairs energy function (every other atom as a neighbor) of the neutral
    molecule: energy and forces equal AIMNet2's own (float64), a different charge gives a
    different energy, and the result does not depend on the atoms' absolute position."""
    z, R = ethanol.numbers, jnp.asarray(ethanol.positions)
    ref = aim64(z, ethanol.positions, charge=0)
    disp, _ = space.free()
    efn = phai.md.aimnet2_energy(aim64, disp, z, charge=0)
    vg = jax.jit(jax.value_and_grad(efn))
    e, g = vg(R)
    assert abs(float(e) - ref.energy) < 1e-8
    np.testing.assert_allclose(-np.asarray(g), ref.forces, rtol=0, atol=1e-8)
    e_moved, _ = vg(R + jnp.asarray([[30.0, -12.0, 7.5]]))
    assert abs(float(e_moved) - float(e)) < 1e-8
    assert abs(aim64(z, ethanol.positions, charge=1).energy - ref.energy) > 1.0  # charge matters


def test_periodic_spaces_bad_charges_and_elements_are_refused(aim64, ethanol):
    from phai.md.run import run_md

    z = ethanol.numbers
    disp_p, _ = space.periodic(20.0)
    with pytest.raises(InputError, match="free space only.*Ewald"):
        phai.md.aimnet2_energy(aim64, disp_p, z)
    box = jnp.eye(3) * 20.0
    disp_g, _ = space.periodic_general(box, fractional_coordinates=False)
    with pytest.raises(InputError, match="free space only"):
        phai.md.aimnet2_neighbor_list(aim64, disp_g, box, z)
    disp, _ = space.free()
    with pytest.raises(InputError, match="not an integer"):
        phai.md.aimnet2_energy(aim64, disp, z, charge=0.5)
    with pytest.raises(InputError, match="too positive"):
        phai.md.aimnet2_energy(aim64, disp, z, charge=30)
    with pytest.raises(UnsupportedElementError, match="Li"):
        phai.md.aimnet2_energy(aim64, disp, [3, 1])
    cell = ethanol.copy()
    cell.set_cell([20.0, 20.0, 20.0])
    cell.pbc = True
    with pytest.raises(InputError, match="molecules only.*Ewald"):
        run_md(cell, aim64, steps=2, log_every=1)


def test_phai_md_command_runs_aimnet2_with_a_charge(tmp_path, capsys):
    from phai.cli import main

    traj, log = tmp_path / "md.extxyz", tmp_path / "md.csv"
    argv = ["md", str(MOLECULES / "ethanol.xyz"), "--model", "aimnet2-wb97m-d3", "--charge", "1",
            "--ensemble", "nve", "--steps", "4", "--log-every", "2", "--no-progress", "--traj", str(traj),
            "--log", str(log)]
    assert main(argv) == 0
    assert "aimnet2-wb97m-d3" in capsys.readouterr().out
    rows = log.read_text().splitlines()
    assert rows[0] == "time_fs,potential_eV,kinetic_eV,total_eV,temperature_K" and len(rows) == 4
    total = np.array([float(r.split(",")[3]) for r in rows[1:]])
    assert np.ptp(total) < 0.01  # eV, float32
    frames = read(traj, ":")
    assert len(frames) == 3 and all(f.info["charge"] == 1 for f in frames)
    # ANI is charge-blind: a charge is refused with a clear message (exit 2)
    assert main(["md", str(MOLECULES / "ethanol.xyz"), "--charge", "1", "--steps", "2", "--no-progress",
                 "--traj", str(traj), "--log", str(log)]) == 2
    assert "neutral" in capsys.readouterr().err
