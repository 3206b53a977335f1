"""Exception types raised for bad input.

Every error names the offending atom, element, shape or value and says what to do. They
subclass the built-in ``ValueError``/``TypeError`` so callers can catch them generically.
"""


class PhaiError(Exception):
    """Base class of every error phai raises on purpose."""


class InputError(PhaiError, ValueError):
    """A structure, array or option that phai cannot evaluate (bad shape, NaN, overlap...)."""


class UnsupportedElementError(InputError):
    """The structure holds an element the chosen model was not trained on."""


class ModelFileError(PhaiError, ValueError):
    """A weight file or archive is missing, corrupt or not the expected model."""
