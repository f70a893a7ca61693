"""Where a test's cloud database lives: a SQLite file, or a fresh database on the session's real PostgreSQL
(the `cloud_target` fixture runs a test once on each engine)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloud_sync.cloud import CloudDb


@dataclass(frozen=True)
class CloudTarget:
    engine: str  # "sqlite" | "postgresql"
    db: Path | str  # what `flexedge cloud --db` and CloudDb take: a file or a postgresql:// URL
    photo_dir: Path

    def open(self) -> CloudDb:
        return CloudDb(self.db, self.photo_dir)

    def cli_args(self) -> list[str]:
        return ["--db", str(self.db), "--photo-dir", str(self.photo_dir)]
