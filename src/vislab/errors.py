"""Exceptions that mean "the user's input is wrong": the CLI prints them without a traceback."""

from vislab.config import ConfigError
from vislab.data.images import BadImageError
from vislab.data.sources import DataError
from vislab.runs import RunError

USER_ERRORS = (ConfigError, DataError, RunError, BadImageError, FileExistsError, FileNotFoundError, ValueError)
