"""Exceptions that carry a message meant for the user.

Every problem with a user's input is raised as :class:`BrainmatchInputError` (or a
subclass) with a message that names the file or option and says what is wrong.  The
CLI prints that message on one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class BrainmatchError(Exception):
    """Base class of brainmatch's own errors."""


class BrainmatchInputError(BrainmatchError, ValueError):
    """Bad input: a file, table, image or option the user gave cannot be used.

    Parameters
    ----------
    message : str
        What is wrong, in words a user can act on.
    path : str or Path, optional
        The file concerned; it is prefixed to the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = message
        super().__init__(f"{path}: {message}" if path is not None else message)
