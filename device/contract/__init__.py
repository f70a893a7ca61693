"""The wire contract the device and the cloud share: domain types, the hash chain, what an event carries of a fix.

Imports nothing of the hardware (firmware_bridge), the MQTT link (cloud_sync) or the agent's internals, so the
reference cloud can import it without pulling in any of them.
"""
