"""Store exceptions. sqlite3 errors are converted at this boundary."""


class StoreError(Exception):
    """The event store could not do what was asked."""


class StoreUnavailable(StoreError):
    """The store's file cannot be opened or written (permissions, a read-only filesystem, I/O): not
    corruption, so the file is left where it is."""


class StoreFull(StoreError):
    """The disk is full: nothing in the failed call was committed."""


class StoreClosed(StoreError):
    """The store was closed."""
