"""Errors that reach the user as one clear line.

Everything the harness refuses (an unknown agent, a corrupt file, a missing dataset, a bad
``--set``) raises a subclass of :class:`BenchError`. The CLI prints ``bench: error: <message>
(<hint>)`` on one line and exits with the class's ``exit_code``; no traceback, nothing half
written. Scripts can rely on the codes listed in the README.
"""

from __future__ import annotations


class BenchError(Exception):
    """A problem the user can fix; ``hint`` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())


class ConfigError(BenchError):
    """Unknown agent, task, suite or hyperparameter; a required value is missing."""

    exit_code = 2


class DataError(BenchError):
    """A dataset file is missing, corrupt or does not match its environment."""

    exit_code = 3


class RunInterrupted(BenchError):
    """The run was stopped by a signal after writing its checkpoint; rerunning resumes it."""

    exit_code = 4


class SweepFailed(BenchError):
    """Some cells of a sweep that was waited for did not finish."""

    exit_code = 5
