"""Why an update does not go ahead: refused (the release is not acceptable here) or failed (it could not be
fetched, unpacked or installed)."""
from __future__ import annotations


class UpdateError(Exception):
    """Base of the update errors; `status` is the command result's status."""

    status = "failed"


class UpdateRefused(UpdateError):
    """A bad signature or hash, a version that does not move forward, a store the previous release could not
    read, another machine: nothing was changed on the van."""

    status = "rejected"


class UpdateFailed(UpdateError):
    """Fetching, unpacking or installing did not work: nothing was switched."""
