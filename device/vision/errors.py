"""Errors of the vision layer. Third-party errors (Pillow, OpenCV, LiteRT, zbar) are converted here."""
from __future__ import annotations


class VisionError(Exception):
    """Base of the vision errors."""


class ImageError(VisionError):
    """The input is not a usable photo; `reason` is a short machine-readable word."""

    def __init__(self, source: str, reason: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.reason = reason

    def __repr__(self) -> str:
        return f"ImageError(source={self.source!r}, reason={self.reason!r}, {self.args[0]!r})"


class ModelError(VisionError):
    """The model file or the interpreter is missing, broken or of the wrong shape."""


class ExpectedNumberError(VisionError, ValueError):
    """The expected house number holds characters the model cannot read."""
