"""Errors raised by the importers."""

from __future__ import annotations


class ImportFileError(Exception):
    """The file as a whole cannot be imported (missing, unreadable, required columns absent).

    The message is one sentence for the user and names the file.
    """


class RowError(Exception):
    """One row cannot be imported; the row is quarantined with column and reason.

    Parameters
    ----------
    column : str
        The canonical column (or file column) at fault, ``""`` for the row as a whole.
    reason : str
        Why, in words a data clerk understands.
    """

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"{column}: {reason}" if column else reason)
        self.column = column
        self.reason = reason
