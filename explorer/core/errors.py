"""User-facing errors.

Every problem a user can fix (a bad file, a missing dataset, an impossible
plan) is raised as an :class:`ExplorerError` whose text is one paragraph that
says what went wrong and what to do. The CLI prints it without a traceback;
the GUI shows it in a dialog. Anything else is a bug.
"""
from __future__ import annotations


class ExplorerError(Exception):
    """A problem with the user's input, explained in one paragraph."""

    title = "Problem"

    def __init__(self, message: str, hint: str | None = None):
        self.message = message.strip()
        self.hint = hint.strip() if hint else None
        super().__init__(str(self))

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        end = "" if self.message.endswith((".", "!", "?", ":")) else "."
        return f"{self.message}{end} {self.hint}"


class ModelLoadError(ExplorerError):
    title = "Could not open the model"


class UntrustedFileError(ModelLoadError):
    title = "File refused: it could run code"


class OfflineError(ExplorerError):
    title = "Needs the internet"


class DatasetError(ExplorerError):
    title = "Could not open the dataset"


class ShapeMismatchError(ExplorerError):
    title = "Model and dataset do not fit"


class PlanError(ExplorerError):
    """An impossible pruning plan or recipe (unknown layer, bad sparsity, ...)."""

    title = "Invalid pruning plan"


class LessonError(PlanError):
    """A lesson file that is not valid (a PlanError, so callers that catch those still do)."""

    title = "Invalid lesson"


class UnknownLessonError(LessonError):
    title = "Unknown lesson"


class Cancelled(Exception):
    """Raised inside a job when its cancel token is set; not an error."""
