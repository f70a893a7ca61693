"""Fault scenarios against real processes (`make chaos`; a short form runs in `make test`)."""
