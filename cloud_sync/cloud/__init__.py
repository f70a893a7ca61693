"""The reference cloud peer: ingest (idempotent, chain-checked storage + acks) and dispatch (offers, claims,
routes, commands). Used by the demo and the tests; `flexedge cloud` runs it as a program."""
from cloud_sync.cloud.clock import ClockFlag, ClockFlagKind, ClockStamp, check_clock
from cloud_sync.cloud.db import CloudDb, CloudDbError, FlagKind, IngestResult
from cloud_sync.cloud.peer import CloudPeer, CloudSettings, CloudThread

__all__ = ["ClockFlag", "ClockFlagKind", "ClockStamp", "CloudDb", "CloudDbError", "CloudPeer", "CloudSettings",
           "CloudThread", "FlagKind", "IngestResult", "check_clock"]
