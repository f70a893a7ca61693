"""Everything that touches hardware: serial transports, scanner and MCU protocols, GPS, camera, simulators.

Nothing in this package knows about deliveries.
"""
