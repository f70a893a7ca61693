"""Who may see what: a fleet operator sees every station, a station manager one. Every query takes the
scope's station (None: all) as the `:station` parameter and filters with `IN_SCOPE`."""
from __future__ import annotations

# A van belongs to its station in the fleet's stations map, to the stations of the blocks it won, and to
# those of the blocks taken back from it (its events stay).
DEVICE_IN_SCOPE = ("(CAST(:station AS TEXT) IS NULL OR {col} IN ("
                   "SELECT device FROM device_stations WHERE station = :station"
                   " UNION SELECT winner FROM blocks WHERE station = :station"
                   " UNION SELECT device FROM block_withdrawals WHERE station = :station))")


def device_in_scope(column: str) -> str:
    return DEVICE_IN_SCOPE.format(col=column)
