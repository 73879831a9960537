"""The exceptions copycat raises: each one says what went wrong and how to fix it."""

from __future__ import annotations


class CopycatError(Exception):
    """Base class of every error copycat raises on purpose."""


class ConfigError(CopycatError, ValueError):
    """A configuration value is invalid; the message names the field and what is accepted."""


class DataError(CopycatError):
    """A dataset or image folder is missing or unreadable."""


class OracleError(CopycatError):
    """The oracle could not be loaded, or answered with something unusable."""


class OracleUnavailableError(OracleError):
    """The oracle stopped answering (dead server, retries exhausted).

    ``answered`` holds the positions in the batch that were answered (and paid) before the
    failure, and ``partial`` their answer, so the caller can commit them before giving up.
    """

    def __init__(self, message: str, *, answered: object = None, partial: object = None) -> None:
        super().__init__(message)
        self.answered = answered
        self.partial = partial


class StoreMismatchError(CopycatError):
    """An answer store belongs to another oracle or input shape and cannot be resumed."""


class CheckpointError(CopycatError):
    """A checkpoint is missing, corrupt or was made for another configuration."""


class StaleCheckpointError(CheckpointError):
    """A ``last.pt`` made on other answers or with another configuration: resuming it would
    not continue this training."""


class WriteError(CopycatError):
    """A file could not be written (a full disk, a quota, no permission); what was written
    before is kept whole."""


class RunLockedError(CopycatError):
    """Another copycat process holds the run directory (it would spend the same budget)."""
