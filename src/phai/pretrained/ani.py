"""The ANI ensembles shipped in TorchANI's wheels, converted to phai's format.

* ``ani-1x``: ``ani-1x_8x`` in ``torchani==2.2.4`` (8 members, wB97X/6-31G(d); Smith et
  al., J. Chem. Phys. 148, 241733, 2018).
* ``ani-1ccx``: ``ani-1ccx_8x`` in ``torchani==2.0`` (8 members, transfer-learned to
  CCSD(T)*/CBS; Smith et al., Nat. Commun. 10, 2903, 2019). The 2.2.4 wheel ships these
  files empty, hence the older wheel.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..descriptors.aev import AEVParams
from ..errors import ModelFileError
from . import neurochem
from .registry import PretrainedSpec, register

PARAMS_FILE = "rHCNO-5.2R_16-3.5A_a4-8.params"


def convert_neurochem_ensemble(read, spec: PretrainedSpec) -> tuple[dict, dict]:
    """Read a NeuroChem ensemble through ``read`` and stack members: ``{X}/{l}/W`` is
    ``[M, in, out]`` float32, ``{X}/{l}/b`` is ``[M, out]``, ``sae`` is ``[S]`` Hartree."""
    params = AEVParams.from_neurochem(read(PARAMS_FILE).decode())
    sae = neurochem.parse_sae(read("sae_linfit.dat").decode(), params.species)
    arrays: dict[str, np.ndarray] = {"sae": sae}
    activations: dict[str, list[str]] = {}
    for element in params.species:
        members = [neurochem.read_network(read, f"train{m}/networks", element) for m in range(spec.members)]
        acts = [layer["activation"] for layer in members[0]]
        for m, net in enumerate(members):
            if [layer["activation"] for layer in net] != acts or \
                    [layer["W"].shape for layer in net] != [layer["W"].shape for layer in members[0]]:
                raise ModelFileError(f"member {m} of {spec.name} ({element}) has another architecture than member 0")
        if members[0][0]["W"].shape[0] != params.length or members[0][-1]["W"].shape[1] != 1:
            raise ModelFileError(f"{spec.name} {element}: network maps {members[0][0]['W'].shape[0]} -> "
                                 f"{members[0][-1]['W'].shape[1]}, expected {params.length} -> 1")
        activations[element] = acts
        for l in range(len(acts)):
            arrays[f"{element}/{l}/W"] = np.stack([net[l]["W"] for net in members]).astype(np.float32)
            arrays[f"{element}/{l}/b"] = np.stack([net[l]["b"] for net in members]).astype(np.float32)
    config = {
        "kind": "ani",
        "name": spec.name,
        "description": spec.description,
        "members": spec.members,
        "aev": dataclasses.asdict(params),
        "activations": activations,
        "energy_unit": "hartree",
    }
    return arrays, config


register(PretrainedSpec(
    name="ani-1x", kind="ani", project="torchani", version="2.2.4",
    sha256="de99afb38aeee9bf8553e58c468539ed41baf6b217833c2fc90429ad4261a02d",
    resource="torchani/resources/ani-1x_8x", members=8,
    description="ANI-1x, 8-member ensemble, wB97X/6-31G(d), elements H C N O "
                "(Smith et al., J. Chem. Phys. 148, 241733, 2018)"), convert_neurochem_ensemble)

register(PretrainedSpec(
    name="ani-1ccx", kind="ani", project="torchani", version="2.0",
    sha256="87db70affc847c3aa26081607166580a6e6b01f33e09218e2c5b26f66b45ed89",
    resource="torchani/resources/ani-1ccx_8x", members=8,
    description="ANI-1ccx, 8-member ensemble transfer-learned to CCSD(T)*/CBS, elements H C N O "
                "(Smith et al., Nat. Commun. 10, 2903, 2019)"), convert_neurochem_ensemble)
