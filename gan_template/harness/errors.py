"""The errors ``python -m gan_template`` reports as one clean message, and their exit statuses.

Each names what is wrong and how to fix it; ``__main__`` prints it without a
traceback and exits with the status ``__main__.EXIT_STATUS`` gives its class.
They live here, apart from the code that raises them, so that the entry point
can name them without importing torch or Lightning (``--help`` stays fast).
"""

from __future__ import annotations


class UserInputError(Exception):
    """Base of every error caused by the config or the data a user gave."""


class ConfigError(UserInputError, ValueError):
    """One or more config values are invalid."""


class DataError(UserInputError, FileNotFoundError):
    """The data a config points at is missing, empty or unreadable."""


class DamagedCheckpointError(UserInputError):
    """A checkpoint file to resume from cannot be read."""


class WriteError(OSError):
    """A file of the run could not be written (a full disk, a quota); earlier checkpoints are intact."""


class CheckpointWriteError(WriteError):
    """A checkpoint could not be written; every earlier checkpoint is intact."""


class TooManySkips(RuntimeError):
    """Raised when ``max_consecutive`` iterations in a row were skipped."""


class LostRank(RuntimeError):
    """A collective failed because another rank died or could not be reached.

    The run cannot go on with fewer ranks (the gradients would no longer
    match); what was saved stays saved, and the whole group resumes from the
    last checkpoint.
    """
