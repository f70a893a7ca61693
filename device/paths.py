"""Where data lives: the flag, then the environment, then the config, then the platform default."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

SYSTEM_DATA_DIR = Path("/var/lib/flexedge")


def default_data_dir(env: Mapping[str, str]) -> Path:
    if env.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if env.get("INVOCATION_ID"):  # running under systemd without StateDirectory
        return SYSTEM_DATA_DIR
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "flexedge"


def resolve_data_dir(flag: str | None, config_value: str, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    chosen = flag or env.get("FLEXEDGE_DATA_DIR") or config_value
    return Path(chosen).expanduser() if chosen else default_data_dir(env)


def store_path(data_dir: Path) -> Path:
    return data_dir / "events.db"
