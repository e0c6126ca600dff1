"""Errors that mean "the input is wrong", not "the code is wrong".

``python -m gan_template`` prints them as one clean message (no traceback) and
exits with status 2; each names the setting at fault and how to fix it.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Base of every error caused by the config or the data a user gave."""


class ConfigError(UserInputError, ValueError):
    """One or more config values are invalid."""


class DataError(UserInputError, FileNotFoundError):
    """The data a config points at is missing, empty or unreadable."""
