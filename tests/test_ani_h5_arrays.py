"""phai.data.write_ani_h5_arrays: the ANI-1x layout with NaN for labels not computed."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from phai.data import (
    Conformations,
    ConformerGroup,
    read_ani_h5,
    write_ani_h5,
    write_ani_h5_arrays,
)
from phai.errors import InputError


def _water(c=4, seed=0):
    rng = np.random.default_rng(seed)
    x = np.array([[0.0, 0, 0.12], [0.76, 0, -0.47], [-0.76, 0, -0.47]]) + rng.normal(0, 0.03, (c, 3, 3))
    return np.array([8, 1, 1]), x, rng.normal(-2080.0, 0.1, c), rng.normal(0, 1.0, (c, 3, 3))


def test_nan_labels_round_trip_and_are_dropped_per_key(tmp_path):
    z, x, e, f = _water()
    cc = e.copy()
    cc[2:] = np.nan  # the expensive level reached two geometries
    path = write_ani_h5_arrays(tmp_path / "w.h5", {"water": {
        "numbers": z, "positions": x, "attrs": {"molecule": "water", "split": "test"},
        "labels": {"dft.energy": e, "dft.forces": f, "cc.energy": cc}}})
    with h5py.File(path) as h5:
        g = h5["water"]
        assert dict(g.attrs) == {"molecule": "water", "split": "test"}
        assert g["atomic_numbers"].dtype == np.uint8 and g["coordinates"].dtype == np.float64
        assert g["dft.forces"].attrs["units"] == "Hartree/Angstrom" and g["cc.energy"].attrs["units"] == "Hartree"
        assert np.isnan(g["cc.energy"][2:]).all()
    dft = read_ani_h5(path, "dft.energy", "dft.forces")
    (grp,) = dft.groups
    np.testing.assert_allclose(grp.energy, e, rtol=1e-15)  # via Hartree: exact to the last bit or two
    np.testing.assert_allclose(grp.forces, f, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(grp.positions, x)
    with pytest.warns(UserWarning, match="dropped 2 of 4"):
        assert len(read_ani_h5(path, "cc.energy")) == 2


def test_finite_labels_give_the_same_file_content_as_write_ani_h5(tmp_path):
    z, x, e, f = _water()
    data = Conformations([ConformerGroup("water", z, x, e, f, {"cc.energy": e + 1.0})])
    a = write_ani_h5(tmp_path / "a.h5", data, hartree_properties=["cc.energy"])
    b = write_ani_h5_arrays(tmp_path / "b.h5", {"water": {
        "numbers": z, "positions": x, "attrs": {"molecule": "water"},
        "labels": {"wb97x_dz.energy": e, "wb97x_dz.forces": f, "cc.energy": e + 1.0}}})
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert list(fa["water"]) == list(fb["water"]) and dict(fa["water"].attrs) == dict(fb["water"].attrs)
        for k in fa["water"]:
            da, db = fa["water"][k], fb["water"][k]
            assert da.dtype == db.dtype and dict(da.attrs) == dict(db.attrs), k
            np.testing.assert_array_equal(da[()], db[()])


@pytest.mark.parametrize("change, words", [
    ({"labels": {"e": np.array([1.0, np.inf, 0.0, 0.0])}}, "infinite"),
    ({"labels": {"e": np.zeros(3)}}, "has shape"),
    ({"labels": {"coordinates": np.zeros(4)}}, "clashes"),
    ({"positions": np.full((4, 3, 3), np.nan)}, "non-finite"),
    ({"positions": np.zeros((4, 2, 3))}, "do not fit"),
])
def test_bad_input_is_named(tmp_path, change, words):
    z, x, _, _ = _water()
    with pytest.raises(InputError, match=words):
        write_ani_h5_arrays(tmp_path / "bad.h5", {"water": {"numbers": z, "positions": x, **change}})
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left


def test_bad_group_name(tmp_path):
    z, x, _, _ = _water()
    with pytest.raises(InputError, match="group name"):
        write_ani_h5_arrays(tmp_path / "bad.h5", {"a/b": {"numbers": z, "positions": x}})
