"""Simulators that stand in for hardware on test benches, and the helpers that run real peers (gpsd)."""
