"""Exceptions that mean "the user's input is wrong": the CLI prints them without a traceback.

Each message says what happened, what was expected and how to fix it.
"""


class UserError(Exception):
    """Base of every error caused by what the user gave (a path, a flag, a file)."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message says which key and what is valid."""


class DeviceError(ConfigError):
    """``--device cuda``/``mps`` where there is no such device: a usage error (the CLI exits with 2)."""


class DataError(UserError, ValueError):
    """A dataset that cannot be trained on; the message names the problem and the fix."""


class RunError(UserError, FileNotFoundError):
    """Not a usable run folder; the message says what is missing and how to get it."""


class PretrainedWeightsError(UserError, RuntimeError):
    """Pretrained weights that cannot be had (offline, unknown name); the message says how to get them."""


USER_ERRORS = (UserError, FileExistsError, FileNotFoundError, ValueError)
