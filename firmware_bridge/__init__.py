"""Everything that touches hardware: serial transports, scanner and MCU protocols, GPS, camera, the status LED
and buzzer.

Nothing in this package knows what the unit is used for: it speaks of lines, frames, fixes, colours and tones.
Its simulators are in `device.testbench`.
"""
