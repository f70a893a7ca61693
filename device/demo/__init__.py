"""`flexedge demo`: the whole system on one machine with simulated hardware (see orchestrator.py)."""
