"""Routing on the van, offline: re-sequencing the remaining stops (time windows kept) and their ETAs."""
