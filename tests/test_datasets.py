"""Data sets: the conformation container, the ANI HDF5 layouts, extended XYZ, batches.

Oracles: TorchANI's own HDF5 tools (``torchani.data._pyanitools``: ``datapacker`` writes the
ANI-1 layout, ``anidataloader`` reads any ANI file), h5py for hand-built ANI-1x files and
broken files, ASE for extended XYZ, and phai's ANI-1x potential for the packed batches.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from phai.data import (
    ANIH5Dataset,
    Conformations,
    ConformerGroup,
    ani_h5_keys,
    batch_plan,
    iter_ani_h5,
    iter_batches,
    open_ani_h5,
    read_ani_h5,
    read_extxyz,
    write_ani_h5,
    write_extxyz,
)
from phai.errors import InputError
from phai.structures import bucket
from phai.units import HARTREE_TO_EV

FORMULAS = {"CH4": [6, 1, 1, 1, 1], "H2O": [8, 1, 1], "C2H6O": [6, 6, 8, 1, 1, 1, 1, 1, 1],
            "NH3": [7, 1, 1, 1], "CO2": [6, 8, 8], "HCN": [1, 6, 7]}


def make_set(seed: int = 0, conformations: int = 5, charges: bool = True) -> Conformations:
    """Random labelled conformations: several molecules, two of them sharing a formula."""
    rng = np.random.default_rng(seed)
    groups = []
    for k, (name, z) in enumerate(list(FORMULAS.items()) + [("C2H6O", FORMULAS["C2H6O"])]):
        c = conformations + k
        a = len(z)
        props = {"charges": rng.normal(size=(c, a)), "dipole": rng.normal(size=(c, 3))} if charges else {}
        groups.append(ConformerGroup(f"{name}" if k < len(FORMULAS) else "C2H6O_ether", z,
                                     rng.normal(size=(c, a, 3)) * 1.5, rng.normal(size=c) * 100 - 1000,
                                     rng.normal(size=(c, a, 3)), props,
                                     molecule=f"mol{k}"))
    return Conformations(groups)


def assert_same(a: Conformations, b: Conformations, *, exact: bool = True):
    """Same groups (matched by name) with the same arrays."""
    ga, gb = {g.name: g for g in a.groups}, {g.name: g for g in b.groups}
    assert sorted(ga) == sorted(gb)
    for name, x in ga.items():
        y = gb[name]
        assert x.molecule == y.molecule
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_array_equal(x.positions, y.positions)
        check = np.testing.assert_array_equal if exact else (
            lambda p, q: np.testing.assert_allclose(p, q, rtol=4e-16, atol=0))  # one rounding of x/h*h
        for p, q in ((x.energy, y.energy), (x.forces, y.forces)):
            assert (p is None) == (q is None)
            if p is not None:
                check(p, q)
        assert sorted(x.properties) == sorted(y.properties)
        for key in x.properties:
            np.testing.assert_array_equal(x.properties[key], y.properties[key])


# ----------------------------------------------------------------------------- container
def test_group_validation_names_group_and_field():
    z, r = [6, 1, 1, 1, 1], np.zeros((2, 5, 3)) + np.arange(5)[:, None]
    g = ConformerGroup("CH4", z, r, [1.0, 2.0])
    assert len(g) == 2 and g.molecule == "CH4" and g.formula == "CH4"
    assert not g.positions.flags.writeable
    assert len(ConformerGroup("one", z, r[0])) == 1  # a single [A, 3] structure
    np.testing.assert_array_equal(ConformerGroup("sym", ["C", "H", "H", "H", "H"], r).numbers, z)
    with pytest.raises(InputError, match="group 'sym': field 'numbers': atom 1: 'Q' is not a chemical symbol"):
        ConformerGroup("sym", ["C", "Q", "H", "H", "H"], r)
    cases = [
        ({"positions": np.zeros((2, 4, 3))}, "'positions'"),
        ({"energy": [1.0, 2.0, 3.0]}, "'energy'"),
        ({"energy": [1.0, np.nan]}, "'energy'"),
        ({"forces": np.zeros((2, 5, 2))}, "'forces'"),
        ({"numbers": [6, 1, 1, 1, 0]}, "'numbers'"),
        ({"properties": {"charges": np.zeros((3, 5))}}, "'charges'"),
    ]
    for change, field in cases:
        kw = {"name": "CH4", "numbers": z, "positions": r, "energy": [1.0, 2.0]} | change
        with pytest.raises(InputError, match=f"group 'CH4'.*{field}"):
            ConformerGroup(**kw)
    bad = r.copy()
    bad[1, 3, 2] = np.inf
    with pytest.raises(InputError, match=r"group 'CH4': field 'positions' has a non-finite value inf at index \(1, 3, 2\)"):
        ConformerGroup("CH4", z, bad)


def test_container_select_concat_iterate():
    data = make_set()
    assert len(data) == sum(len(g) for g in data.groups) == data.offsets[-1]
    assert data.num_groups == 7 and len(data.molecules) == 7
    flat = list(data.iter_conformations())
    assert len(flat) == len(data)
    for k in (0, 7, len(data) - 1):
        _z, r, e, _f = data.conformation(k)
        np.testing.assert_array_equal(r, flat[k][1])
        assert e == flat[k][2]
    pick = np.array([len(data) - 1, 3, 0, 12])
    sub = data.select(pick)
    assert len(sub) == 4
    for (_, r, e, _), k in zip(sub.iter_conformations(), sorted(pick)):
        np.testing.assert_array_equal(r, flat[k][1])
        assert e == flat[k][2]
    mask = np.zeros(len(data), bool)
    mask[pick] = True
    assert_same(sub, data.select(mask))
    with pytest.raises(InputError, match="duplicate"):
        data.select([1, 1])
    with pytest.raises(InputError, match="out of range"):
        data.select([len(data)])
    both = Conformations.concat(sub, data)
    assert len(both) == len(sub) + len(data) and len(sub + data) == len(both)
    lists = data.to_lists()
    assert len(lists["positions"]) == len(lists["molecules"]) == len(data)
    for k in (0, 9, len(data) - 1):
        np.testing.assert_array_equal(lists["positions"][k], flat[k][1])
        np.testing.assert_array_equal(lists["forces"][k], flat[k][3])
        np.testing.assert_array_equal(lists["numbers"][k], flat[k][0])
        assert lists["energies"][k] == flat[k][2]
        assert lists["molecules"][k] == data.groups[data.locate([k])[0][0]].molecule
    counts = data.element_counts(("H", "C", "N", "O"))
    assert counts.shape == (len(data), 4)
    np.testing.assert_array_equal(counts.sum(axis=1), data.num_atoms())
    np.testing.assert_array_equal(counts[data.offsets[2]], [6, 2, 0, 1])  # C2H6O
    np.testing.assert_array_equal(data.energies(), [e for _, _, e, _ in flat])
    with pytest.raises(InputError, match="element O is not among"):
        data.element_counts((1, 6, 7))
    stats = data.statistics()
    assert stats["num_conformations"] == len(data)
    assert stats["elements"]["O"]["atoms"] == sum(len(g) * int((g.numbers == 8).sum()) for g in data.groups)
    assert stats["energy"]["min"] == min(g.energy.min() for g in data.groups)
    assert list(stats["elements"]) == ["H", "C", "N", "O"]


def test_split_by_molecule_no_leakage_deterministic():
    groups = []
    rng = np.random.default_rng(1)
    for m in range(40):  # 40 molecules, each spread over two groups (e.g. two labelling runs)
        for part in range(2):
            c = int(rng.integers(1, 9))
            groups.append(ConformerGroup(f"m{m}-{part}", [8, 1, 1], rng.normal(size=(c, 3, 3)), rng.normal(size=c),
                                         molecule=f"m{m}"))
    data = Conformations(groups)
    parts = data.split_by_molecule((0.8, 0.1, 0.1), seed=3)
    mols = [set(p.molecules) for p in parts]
    assert not (mols[0] & mols[1] or mols[0] & mols[2] or mols[1] & mols[2])
    assert set().union(*mols) == set(data.molecules)
    assert sum(len(p) for p in parts) == len(data)
    assert abs(len(parts[0]) / len(data) - 0.8) < 0.1
    again = data.split_by_molecule((0.8, 0.1, 0.1), seed=3)
    assert [p.molecules for p in parts] == [p.molecules for p in again]
    other = data.split_by_molecule((0.8, 0.1, 0.1), seed=4)
    assert [set(p.molecules) for p in other] != mols
    with pytest.raises(InputError, match="sum to 1"):
        data.split_by_molecule((0.5, 0.2))


# ----------------------------------------------------------------------------- ANI HDF5
def test_ani_h5_round_trip_exact_and_in_hartree(tmp_path):
    data = make_set()
    write_ani_h5(tmp_path / "ev.h5", data, "wb97x_dz.energy", "wb97x_dz.forces", hartree=False)
    assert_same(data, read_ani_h5(tmp_path / "ev.h5", "wb97x_dz.energy", "wb97x_dz.forces", ("charges", "dipole")))
    path = write_ani_h5(tmp_path / "ha.h5", data)  # the public files' units
    back = read_ani_h5(path, "wb97x_dz.energy", "wb97x_dz.forces", ("charges", "dipole"))
    assert_same(data, back, exact=False)
    with h5py.File(path) as f:  # stored in Hartree and Hartree/Å
        g = data.groups[0]
        np.testing.assert_array_equal(f[g.name]["wb97x_dz.energy"][()], g.energy / HARTREE_TO_EV)
        np.testing.assert_array_equal(f[g.name]["wb97x_dz.forces"][()], g.forces / HARTREE_TO_EV)
        assert f[g.name].attrs["molecule"] == g.molecule
    assert ani_h5_keys(path) == {"layout": "ani1x", "groups": 7, "conformations": len(data),
                                 "keys": {"atomic_numbers": 7, "charges": 7, "coordinates": 7, "dipole": 7,
                                          "wb97x_dz.energy": 7, "wb97x_dz.forces": 7}}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_written_file_reads_with_torchani_loader(tmp_path):
    pyanitools = pytest.importorskip("torchani.data._pyanitools")
    data = make_set(charges=False)
    write_ani_h5(tmp_path / "x.h5", data)
    loader = pyanitools.anidataloader(str(tmp_path / "x.h5"))
    seen = {d["path"].strip("/"): d for d in loader}
    loader.cleanup()
    for g in data.groups:
        d = seen[g.name]
        np.testing.assert_array_equal(d["atomic_numbers"], g.numbers)
        np.testing.assert_array_equal(d["coordinates"], g.positions)
        np.testing.assert_allclose(d["wb97x_dz.energy"] * HARTREE_TO_EV, g.energy, rtol=4e-16, atol=0)


def test_ani1_layout_from_torchani_datapacker(tmp_path):
    """The older ANI-1 layout (nested groups, ``species`` strings, ``energies`` in Hartree),
    written by TorchANI's own ``datapacker``."""
    pyanitools = pytest.importorskip("torchani.data._pyanitools")
    rng = np.random.default_rng(2)
    path = tmp_path / "ani_gdb_s01.h5"
    packer = pyanitools.datapacker(str(path))
    expect = {}
    for k, species in enumerate([["C", "H", "H", "H", "H"], ["N", "H", "H", "H"], ["O", "H", "H"]]):
        c = 3 + k
        x = rng.normal(size=(c, len(species), 3)).astype(np.float32)  # ANI-1 stores float32 coordinates
        e = rng.normal(size=c) - 40.0
        packer.store_data(f"gdb11_s01/gdb11_s01-{k}", coordinates=x, energies=e, species=species,
                          smiles=list("CC"))
        expect[f"gdb11_s01/gdb11_s01-{k}"] = (species, x, e)
    packer.cleanup()
    keys = ani_h5_keys(path)
    assert keys["layout"] == "ani1" and keys["groups"] == 3 and keys["keys"]["energies"] == 3
    data = read_ani_h5(path, "energies")
    assert sorted(g.name for g in data.groups) == sorted(expect)
    for g in data.groups:
        species, x, e = expect[g.name]
        assert [int(z) for z in g.numbers] == [{"H": 1, "C": 6, "N": 7, "O": 8}[s] for s in species]
        np.testing.assert_array_equal(g.positions, x.astype(np.float64))
        np.testing.assert_array_equal(g.energy, e * HARTREE_TO_EV)  # Hartree -> eV, one multiplication
        assert g.forces is None and g.molecule == g.name


def ani1x_like(path, rng) -> dict:
    """A hand-built file in the ANI-1x release layout, float32 coordinates, NaN where a label
    was not computed (CCSD(T) for most conformations)."""
    truth = {}
    with h5py.File(path, "w") as f:
        for name, z in (("C2H6O", FORMULAS["C2H6O"]), ("CH4", FORMULAS["CH4"]), ("H2O", FORMULAS["H2O"])):
            c = 6
            g = f.create_group(name)
            g["atomic_numbers"] = np.array(z, dtype=np.uint8)
            g["coordinates"] = rng.normal(size=(c, len(z), 3)).astype(np.float32)
            e = rng.normal(size=c) - 100
            fr = rng.normal(size=(c, len(z), 3))
            cc = e + 0.01
            cc[::2] = np.nan
            fr[1] = np.nan  # forces missing for conformation 1
            g["wb97x_dz.energy"], g["wb97x_dz.forces"], g["ccsd(t)_cbs.energy"] = e, fr, cc
            g["wb97x_dz.cm5_charges"] = rng.normal(size=(c, len(z)))
            truth[name] = (g["coordinates"][()], e, fr, cc)
    return truth


def test_ani1x_layout_units_nan_dropping_and_streaming(tmp_path):
    path = tmp_path / "ani1x.h5"
    truth = ani1x_like(path, np.random.default_rng(5))
    with pytest.warns(UserWarning, match="dropped 3 of 18 conformations"):
        dft = read_ani_h5(path, "wb97x_dz.energy", "wb97x_dz.forces", ["wb97x_dz.cm5_charges"])
    for g in dft.groups:
        x, e, fr, _ = truth[g.name]
        keep = np.arange(6) != 1
        np.testing.assert_array_equal(g.positions, x[keep].astype(np.float64))
        np.testing.assert_array_equal(g.energy, e[keep] * HARTREE_TO_EV)
        np.testing.assert_array_equal(g.forces, fr[keep] * HARTREE_TO_EV)
    with pytest.warns(UserWarning, match="dropped 9 of 18"):
        cc = read_ani_h5(path, "ccsd(t)_cbs.energy")
    assert [len(g) for g in cc.groups] == [3, 3, 3]
    np.testing.assert_array_equal(cc.groups[1].energy, truth["CH4"][3][1::2] * HARTREE_TO_EV)
    with pytest.warns(UserWarning, match="dropped 3 of 18"):
        streamed = Conformations(iter_ani_h5(path, "wb97x_dz.energy", "wb97x_dz.forces", ["wb97x_dz.cm5_charges"]))
    with pytest.warns(UserWarning, match="dropped 3 of 18"):
        lazy = open_ani_h5(path, "wb97x_dz.energy", "wb97x_dz.forces", ["wb97x_dz.cm5_charges"])
    assert_same(dft, streamed)
    assert_same(dft, lazy.read())
    np.testing.assert_array_equal(lazy.group_sizes, dft.group_sizes)
    # another method's energies as a property, converted like the energy label (for Δ-learning)
    with pytest.warns(UserWarning, match="dropped 9 of 18"):
        delta = read_ani_h5(path, "wb97x_dz.energy", properties=["wb97x_dz.cm5_charges"],
                            hartree_properties=["ccsd(t)_cbs.energy"])
    for g in delta.groups:
        np.testing.assert_array_equal(g.properties["ccsd(t)_cbs.energy"], truth[g.name][3][1::2] * HARTREE_TO_EV)
        np.testing.assert_array_equal(g.energy, truth[g.name][1][1::2] * HARTREE_TO_EV)
    for hartree in (True, False):
        write_ani_h5(tmp_path / "delta.h5", delta, "wb97x_dz.energy", None, hartree=hartree,
                     hartree_properties=["ccsd(t)_cbs.energy"])
        again = read_ani_h5(tmp_path / "delta.h5", "wb97x_dz.energy", None, ["wb97x_dz.cm5_charges"],
                            hartree_properties=["ccsd(t)_cbs.energy"])
        assert_same(delta, again, exact=not hartree)
        for g, h in zip(delta.groups, again.groups):
            np.testing.assert_allclose(g.properties["ccsd(t)_cbs.energy"], h.properties["ccsd(t)_cbs.energy"],
                                       rtol=0 if not hartree else 4e-16, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped: no warning
        one = read_ani_h5(path, None, groups=["H2O"])
    assert one.num_groups == 1 and len(one) == 6 and one.groups[0].energy is None
    with pytest.raises(InputError, match="no group 'H2'"):
        read_ani_h5(path, None, groups=["H2"])


def broken(path, name: str):
    """An ANI-1x file with one defect."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        ok = f.create_group("CH4")
        ok["atomic_numbers"] = np.array([6, 1, 1, 1, 1])
        ok["coordinates"] = rng.normal(size=(4, 5, 3))
        ok["wb97x_dz.energy"] = rng.normal(size=4)
        ok["wb97x_dz.forces"] = rng.normal(size=(4, 5, 3))
        g = f.create_group("H2O")
        z, x, e = np.array([8, 1, 1]), rng.normal(size=(4, 3, 3)), rng.normal(size=4)
        if name == "missing coordinates":
            x = None
        elif name == "atoms mismatch":
            x = rng.normal(size=(4, 2, 3))
        elif name == "energy length":
            e = rng.normal(size=3)
        elif name == "nan coordinates":
            x[2, 1, 0] = np.nan
        elif name == "missing numbers":
            z = None
        elif name == "missing energy":
            e = None
        elif name == "forces shape":
            g["wb97x_dz.forces"] = rng.normal(size=(4, 3))
        for key, v in (("atomic_numbers", z), ("coordinates", x), ("wb97x_dz.energy", e)):
            if v is not None:
                g[key] = v


@pytest.mark.parametrize("defect, field", [
    ("missing coordinates", "coordinates"), ("atoms mismatch", "coordinates"), ("energy length", "wb97x_dz.energy"),
    ("nan coordinates", "coordinates"), ("missing numbers", "atomic_numbers"), ("missing energy", "wb97x_dz.energy"),
    ("forces shape", "wb97x_dz.forces")])
def test_inconsistent_file_names_file_group_and_field(tmp_path, defect, field):
    path = tmp_path / "bad.h5"
    broken(path, defect)
    forces = "wb97x_dz.forces" if defect == "forces shape" else None
    pattern = f"bad.h5: group 'H2O'.*{field}" if defect != "missing numbers" else "bad.h5: group 'H2O'.*atomic_numbers"
    with pytest.raises(InputError, match=pattern.replace("(", r"\(").replace(")", r"\)")):
        read_ani_h5(path, "wb97x_dz.energy", forces)
    with pytest.raises(InputError, match="group 'H2O'"):
        open_ani_h5(path, "wb97x_dz.energy", forces)


def test_not_hdf5_or_missing_file(tmp_path):
    (tmp_path / "text.h5").write_text("not an hdf5 file\n")
    with pytest.raises(InputError, match="text.h5: not a readable HDF5 file"):
        read_ani_h5(tmp_path / "text.h5", "wb97x_dz.energy")
    with pytest.raises(InputError, match="no such file"):
        ani_h5_keys(tmp_path / "absent.h5")


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "labels.h5"
    data = make_set(conformations=2)
    write_ani_h5(path, data)
    before = path.read_bytes()
    with pytest.raises(InputError, match="property 'missing'"):
        write_ani_h5(path, data, properties=["missing"])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.h5"]
    clash = Conformations([ConformerGroup("X", [1, 1], np.eye(2, 3)[None]),
                           ConformerGroup("X", [1, 8], np.eye(2, 3)[None])])
    with pytest.raises(InputError, match="group 'X' appears twice"):
        write_ani_h5(tmp_path / "clash.h5", clash)


def test_groups_sharing_a_name_are_merged(tmp_path):
    data = make_set(conformations=2)
    g = data.groups[0]
    twice = Conformations([g.take([0, 1]), data.groups[1], g.take(slice(2, None))])
    write_ani_h5(tmp_path / "m.h5", twice, hartree=False)
    back = read_ani_h5(tmp_path / "m.h5", "wb97x_dz.energy", "wb97x_dz.forces", ("charges", "dipole"))
    assert_same(Conformations([g, data.groups[1]]), back)


# ----------------------------------------------------------------------------- batches
def test_batches_cover_each_conformation_once_and_are_deterministic():
    data = make_set(conformations=7)
    plan = batch_plan(data, 4, seed=11, epoch=2)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(len(data)))
    assert all(1 <= len(b) <= 4 for b in plan)
    sizes = data.group_atoms[data.locate(flat)[0]]
    for b in plan:  # size buckets: a batch holds one bucket class
        assert len({bucket(a) for a in data.group_atoms[data.locate(b)[0]]}) == 1
    assert len(sizes) == len(data)
    assert all(np.array_equal(p, q) for p, q in zip(plan, batch_plan(data, 4, seed=11, epoch=2)))
    assert not all(np.array_equal(p, q) for p, q in zip(plan, batch_plan(data, 4, seed=11, epoch=3)))
    assert np.array_equal(np.concatenate(batch_plan(data, 4, shuffle=False, bucket_by_size=False)), np.arange(len(data)))
    dropped = batch_plan(data, 4, seed=1, drop_last=True)
    assert all(len(b) == 4 for b in dropped)

    batches = list(iter_batches(data, 4, species=(1, 6, 7, 8), seed=11, epoch=2,
                                properties=["dipole"], atom_properties=["charges"]))
    assert [b.step for b in batches] == list(range(len(plan)))
    for b, idx in zip(batches, plan):
        np.testing.assert_array_equal(b.index, idx)
        B = b.packed.num_molecules
        assert B == bucket(4, minimum=1) and b.mol_mask.sum() == len(idx) and b.energy.shape == (B,)
        for k, i in enumerate(idx):
            z, r, e, f = data.conformation(int(i))
            sl = slice(b.packed.offsets[k], b.packed.offsets[k + 1])
            np.testing.assert_array_equal(b.packed.R[sl], r)
            np.testing.assert_array_equal(b.numbers[sl], z)
            np.testing.assert_array_equal(b.forces[sl], f)
            assert b.energy[k] == e and b.num_atoms[k] == len(z)
            g, c = data.locate([i])
            np.testing.assert_array_equal(b.properties["charges"][sl], data.groups[g[0]].properties["charges"][c[0]])
            np.testing.assert_array_equal(b.properties["dipole"][k], data.groups[g[0]].properties["dipole"][c[0]])
        real = b.packed.atom_mask
        assert real.sum() == b.num_atoms.sum() and not b.numbers[~real].any() and not b.forces[~real].any()
        assert not b.energy[~b.mol_mask].any()
    # resume mid-epoch: batches from `start` are those of the uninterrupted epoch
    resumed = list(iter_batches(data, 4, species=(1, 6, 7, 8), seed=11, epoch=2, start=3))
    assert [b.step for b in resumed] == list(range(3, len(plan)))
    for b, full in zip(resumed, batches[3:]):
        np.testing.assert_array_equal(b.packed.R, full.packed.R)
        np.testing.assert_array_equal(b.energy, full.energy)
    with pytest.raises(InputError, match="element O is not among"):
        next(iter_batches(data, 4, species=(1, 6, 7)))
    # a background thread building batches ahead gives the same batches, and its errors
    ahead = list(iter_batches(data, 4, species=(1, 6, 7, 8), seed=11, epoch=2, start=2, prefetch=2))
    assert [b.step for b in ahead] == list(range(2, len(plan)))
    for b, full in zip(ahead, batches[2:]):
        np.testing.assert_array_equal(b.packed.R, full.packed.R)
        np.testing.assert_array_equal(b.forces, full.forces)
    with pytest.raises(InputError, match="element O is not among"):
        list(iter_batches(data, 4, species=(1, 6, 7), prefetch=1))
    # labels are decided for the whole set: a set where one group lacks forces gives no forces
    mixed = Conformations([data.groups[0].replace(forces=None), *data.groups[1:]])
    assert all(b.forces is None and b.energy is not None for b in iter_batches(mixed, 4, species=(1, 6, 7, 8)))
    gen = iter_batches(data, 1, species=(1, 6, 7, 8), prefetch=1)
    next(gen)
    gen.close()  # stopping early ends the thread
    import threading
    import time

    deadline = time.monotonic() + 10
    while any(t.name == "phai-batches" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "phai-batches" for t in threading.enumerate())


class CountingSource(ANIH5Dataset):
    """The lazy file source, recording how many groups each load holds in memory."""

    loads: list

    def load_groups(self, indices):
        self.loads.append(len(indices))
        return super().load_groups(indices)


def test_streamed_batches_equal_in_memory_and_load_one_window(tmp_path):
    data = make_set(conformations=3, charges=False)
    path = write_ani_h5(tmp_path / "s.h5", data, hartree=False)
    memory = read_ani_h5(path, "wb97x_dz.energy", "wb97x_dz.forces")
    lazy = CountingSource(path, "wb97x_dz.energy", "wb97x_dz.forces")
    lazy.loads = []
    kw = {"species": ("H", "C", "N", "O"), "seed": 4, "epoch": 1, "window": 10}
    a = list(iter_batches(memory, 3, **kw))
    b = list(iter_batches(lazy, 3, **kw))
    assert len(a) == len(b) and sorted(np.concatenate([x.index for x in b]).tolist()) == list(range(len(memory)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.index, y.index)
        np.testing.assert_array_equal(x.packed.R, y.packed.R)
        np.testing.assert_array_equal(x.forces, y.forces)
        np.testing.assert_array_equal(x.energy, y.energy)
    assert len(lazy.loads) > 1 and max(lazy.loads) < data.num_groups  # never the whole file at once
    lazy.loads = []
    tail = list(iter_batches(lazy, 3, start=len(b) - 1, **kw))
    assert len(tail) == 1 and len(lazy.loads) == 1  # skipped windows are not read
    np.testing.assert_array_equal(tail[0].packed.R, b[-1].packed.R)


def test_batch_feeds_the_ani_model(frames, x64):
    """A batch packed here gives the energies ANIPotential.evaluate gives (float64): the
    trainer can call the model functions on it directly."""
    import jax
    import jax.numpy as jnp

    import phai
    from phai.models.ani import ani_member_energies

    pot = phai.load("ani-1x", precision="float64")
    data = Conformations.from_ase(frames[:8], energy_key=None)
    ref = [r.energy for r in pot.evaluate([(z, r) for z, r, _, _ in data.iter_conformations()], forces=False)]
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), pot.params)
    model = jax.jit(lambda p, R, *rest, num_molecules: ani_member_energies(
        p, pot.config.aev, pot.config.activations, R, *rest, num_molecules=num_molecules),
        static_argnames="num_molecules")
    (b,) = iter_batches(data, 8, species=pot.atomic_numbers, radial_cutoff=pot.config.aev.Rcr,
                        angular_cutoff=pot.config.aev.Rca, seed=0, bucket_by_size=False)
    assert b.energy is None and b.size == 8
    e = np.asarray(model(params, jnp.asarray(b.packed.R), *b.packed.device_args[1:],
                         num_molecules=b.packed.num_molecules)).mean(axis=0)
    for k, i in enumerate(b.index):
        sae = pot.sae[pot.species_indices(data.conformation(int(i))[0])].sum()
        np.testing.assert_allclose((e[k] + sae) * HARTREE_TO_EV, ref[int(i)], rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- extended XYZ / ASE
def test_extxyz_round_trip(tmp_path):
    data = make_set(conformations=3)
    path = write_extxyz(tmp_path / "set.extxyz", data)
    back = read_extxyz(path, properties=["charges", "dipole"])
    assert [g.name for g in back.groups] == [g.name for g in data.groups]
    for x, y in zip(data.groups, back.groups):
        assert x.molecule == y.molecule
        np.testing.assert_array_equal(x.energy, y.energy)  # comment line: every digit
        np.testing.assert_array_equal(x.properties["dipole"], y.properties["dipole"])
        # columns are written with 8 decimals by ASE (%16.8f)
        np.testing.assert_allclose(x.positions, y.positions, rtol=0, atol=5.01e-9)
        np.testing.assert_allclose(x.forces, y.forces, rtol=0, atol=5.01e-9)
        np.testing.assert_allclose(x.properties["charges"], y.properties["charges"], rtol=0, atol=5.01e-9)
    custom = write_extxyz(tmp_path / "custom.extxyz", data, energy_key="wb97x_energy", forces_key="wb97x_forces")
    again = read_extxyz(custom, "wb97x_energy", "wb97x_forces")
    np.testing.assert_array_equal(again.groups[2].energy, data.groups[2].energy)
    assert read_extxyz(custom, energy_key=None, forces_key=None).groups[0].energy is None
    (tmp_path / "bad.extxyz").write_text("3\nenergy=1.0\nO 0 0 0\nH 0 0\n")
    with pytest.raises(InputError, match="bad.extxyz"):
        read_extxyz(tmp_path / "bad.extxyz")


def test_from_ase_groups_by_connectivity_without_ids():
    from ase.build import molecule

    def sorted_atoms(name):
        a = molecule(name)
        return a[np.argsort(a.numbers, kind="stable")]

    ethanol, ether = sorted_atoms("CH3CH2OH"), sorted_atoms("CH3OCH3")
    assert list(ethanol.numbers) == list(ether.numbers)
    frames = []
    for k in range(3):
        for base in (ethanol, ether):
            a = base.copy()
            a.rattle(0.02, seed=k)
            a.info["energy"] = float(k)
            frames.append(a)
    data = Conformations.from_ase(frames)
    assert [g.name for g in data.groups] == ["C2H6O", "C2H6O-1"]
    assert [len(g) for g in data.groups] == [3, 3]
    np.testing.assert_array_equal(data.groups[1].energy, [0.0, 1.0, 2.0])
    assert data.groups[0].forces is None
    frames[2].info.pop("energy")
    with pytest.raises(InputError, match="'energy' is missing from frame 1"):
        Conformations.from_ase(frames)
    for a, m in zip(frames, "aabbcc"):
        a.info["molecule"] = m
    assert Conformations.from_ase(frames, energy_key=None).molecules == ("a", "b", "c")
    water = molecule("H2O")
    water.info["molecule"] = "a"
    with pytest.raises(InputError, match="frame 6: molecule 'a' has atomic numbers different"):
        Conformations.from_ase(frames + [water], energy_key=None)


# ----------------------------------------------------------------------------- phai data
def test_cli_data_info_convert_split(tmp_path, capsys):
    import json

    from phai.cli import main
    from phai.data.conformations import statistics

    data = make_set(conformations=4, charges=False)
    h5 = write_ani_h5(tmp_path / "set.h5", data)
    assert main(["data", "info", str(h5), "--energy-key", "wb97x_dz.energy", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "ani1x" and info["conformations"] == len(data)
    assert info["statistics"]["num_conformations"] == len(data)
    assert info["statistics"]["energy"] == pytest.approx(data.statistics()["energy"], rel=1e-15)
    assert statistics(iter_ani_h5(h5, "wb97x_dz.energy")) == read_ani_h5(h5, "wb97x_dz.energy").statistics()

    xyz = tmp_path / "set.extxyz"
    assert main(["data", "convert", str(h5), str(xyz), "--energy-key", "wb97x_dz.energy", "--forces-key",
                 "wb97x_dz.forces", "--out-energy-key", "energy", "--out-forces-key", "forces"]) == 0
    back = tmp_path / "back.h5"
    assert main(["data", "convert", str(xyz), str(back), "--energy-key", "energy", "--forces-key", "forces",
                 "--out-energy-key", "wb97x_dz.energy", "--out-forces-key", "wb97x_dz.forces"]) == 0
    again = read_ani_h5(back, "wb97x_dz.energy", "wb97x_dz.forces")
    assert sorted(g.name for g in again.groups) == sorted(g.name for g in data.groups)
    np.testing.assert_allclose(np.sort(again.energies()), np.sort(data.energies()), rtol=1e-15)

    assert main(["data", "split", str(h5), "--energy-key", "wb97x_dz.energy", "--fractions", "0.6,0.2,0.2",
                 "--seed", "1", "--out", str(tmp_path / "split")]) == 0
    parts = [read_ani_h5(tmp_path / "split" / f"{n}.h5", "wb97x_dz.energy") for n in ("train", "valid", "test")]
    assert sum(len(p) for p in parts) == len(data)
    assert not set(parts[0].molecules) & (set(parts[1].molecules) | set(parts[2].molecules))
    capsys.readouterr()
    assert main(["data", "info", str(tmp_path / "absent.h5")]) == 2
    assert "absent.h5: no such file" in capsys.readouterr().err
