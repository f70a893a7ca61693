"""GPS sources: gpsd's JSON watch stream, and raw NMEA over a serial port as the fallback."""
from firmware_bridge.gps.errors import GpsdProtocolError, GpsdUnavailable, GpsError
from firmware_bridge.gps.gpsd_client import GpsdClient, tpv_to_fix
from firmware_bridge.gps.nmea_reader import NmeaFixReader, read_log
from firmware_bridge.gps.sources import FixSource, GpsdSource, SerialNmeaSource

__all__ = ["FixSource", "GpsError", "GpsdClient", "GpsdProtocolError", "GpsdSource", "GpsdUnavailable",
           "NmeaFixReader", "SerialNmeaSource", "read_log", "tpv_to_fix"]
