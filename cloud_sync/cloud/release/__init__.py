"""Releases of the agent, the cloud's side: build and sign an artifact (build), serve it to the vans over HTTPS
with the fleet PKI (server), and roll it out a few vans at a time, a canary first (rollout)."""
