"""Errors that mean "the user asked for something that cannot work", not "vlmrm has a bug".

The ``vlmrm`` command prints a :class:`UserInputError` as one line (the message names the
value and the fix) and exits with status 2; any other exception is a bug and keeps its
traceback. ``VLMRM_DEBUG=1`` (or ``vlmrm --debug ...``) shows the traceback of user errors
too. Each class also derives from the built-in exception it refines, so ``except
ValueError`` and ``pytest.raises(ValueError)`` keep working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InputFileError",
    "UserInputError",
]


class UserInputError(Exception):
    """Base of every error caused by a bad value, file or command line, not by a bug."""


class ConfigError(UserInputError, ValueError):
    """A config value, command-line option or argument that cannot work."""


class InputFileError(UserInputError, FileNotFoundError):
    """A file or folder the user named is missing or unreadable (frames, videos, weights)."""


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that is missing, truncated, corrupt or does not fit this run."""
