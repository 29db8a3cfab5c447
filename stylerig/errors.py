"""One exception family for every user mistake.

Every error a person can cause (a missing or corrupt file, a tensor of the wrong shape, NaN parameters,
an unavailable backend) raises a subclass of :class:`StylerigError`. It carries a one-line ``message``
saying what is wrong and a ``hint`` saying how to fix it. The CLI prints both and exits with status 2;
a bare traceback only appears with ``--debug``. Programming errors inside the library stay ordinary
exceptions (they are bugs, not user mistakes).
"""

from __future__ import annotations

__all__ = ["AssetError", "BackendUnavailableError", "InputError", "StylerigError"]


class StylerigError(Exception):
    """Base class of all user-facing errors.

    Args:
        message: one line: what is wrong.
        hint: one line: what to do about it (optional).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class InputError(StylerigError, ValueError):
    """A tensor or argument is malformed: wrong shape, dtype or device, NaN/inf, out-of-range value."""


class AssetError(StylerigError, OSError):
    """A file (face model, checkpoint, sample set) is missing, truncated, corrupt or of the wrong kind."""


class BackendUnavailableError(StylerigError, RuntimeError):
    """An optional backend (nvdiffrast, CUDA, a landmark detector) was requested but cannot run here."""
