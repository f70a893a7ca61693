"""Store exceptions. sqlite3 errors are converted at this boundary."""


class StoreError(Exception):
    """The event store could not do what was asked."""


class StoreFull(StoreError):
    """The disk is full: nothing in the failed call was committed."""


class StoreClosed(StoreError):
    """The store was closed."""
