"""The GPS layer's exception family; third-party errors are converted to these at the boundary."""
from __future__ import annotations


class GpsError(Exception):
    """Base of every error the GPS sources raise."""


class GpsdUnavailable(GpsError):
    """gpsd cannot be reached, or closed the connection."""


class GpsdProtocolError(GpsError):
    """gpsd sent something that is not its JSON protocol."""

    def __init__(self, message: str, line: bytes = b"") -> None:
        super().__init__(message)
        self.line = line

    def __repr__(self) -> str:
        return f"GpsdProtocolError({self.args[0]!r}, line={self.line[:60]!r})"
