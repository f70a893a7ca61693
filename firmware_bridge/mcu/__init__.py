"""The peripheral MCU: framing (COBS + CRC-16) → link (seq, ack, retransmit) → commands → bridge.

The wire protocol is specified in firmware_bridge/PROTOCOL.md.
"""
