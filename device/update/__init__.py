"""Over-the-air updates of the agent, one job per module: fetch (the artifact over HTTPS), verify (signature,
hashes, version and store rules), unpack, install (its own venv, offline), layout (the releases folder, the
atomic switch, the pending marker, rollback), gate (the new agent's health check), guard (the unit's
ExecStartPre: a crash loop ends in a rollback), report (the outcome as events) and handler (the `update`
command). README, "Over-the-air updates", has the rules.
"""
