"""The test bench: simulators that stand in for hardware (scanner, MCU firmware, NMEA receiver, over ptys with
faults) and the local test fleet (mosquitto, gpsd via gpsfake, certificates and broker access control).

Used by the tests, the benches, the tools, the demo and the `flexedge sim` commands; product code (the agent,
its assembly, firmware_bridge, cloud_sync) never imports it.
"""
