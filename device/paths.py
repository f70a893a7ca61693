"""Where data lives: the flag, then the environment, then the config, then the platform default."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

SYSTEM_DATA_DIR = Path("/var/lib/flexedge")
SYSTEM_CONFIG = Path("/etc/flexedge/flexedge.toml")  # what systemd/install.sh writes and the unit reads


def resolve_config_path(flag: str | None, env: Mapping[str, str] | None = None,
                        system_config: Path = SYSTEM_CONFIG) -> Path | None:
    """The config file: `--config`, then FLEXEDGE_CONFIG, then the installed one when present; None: defaults."""
    env = os.environ if env is None else env
    chosen = flag or env.get("FLEXEDGE_CONFIG")
    if chosen:
        return Path(chosen).expanduser()
    return system_config if system_config.exists() else None


def default_data_dir(env: Mapping[str, str]) -> Path:
    if env.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if env.get("INVOCATION_ID"):  # running under systemd without StateDirectory
        return SYSTEM_DATA_DIR
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "flexedge"


def resolve_data_dir(flag: str | None, config_value: str, env: Mapping[str, str] | None = None, *,
                     installed: bool = False) -> Path:
    """`installed`: the config is the system one, so the data is the service's (/var/lib/flexedge)."""
    env = os.environ if env is None else env
    chosen = flag or env.get("FLEXEDGE_DATA_DIR") or config_value
    if chosen:
        return Path(chosen).expanduser()
    return SYSTEM_DATA_DIR if installed and not env.get("STATE_DIRECTORY") else default_data_dir(env)


def store_path(data_dir: Path) -> Path:
    return data_dir / "events.db"


def log_file_path(setting: str, data_dir: Path) -> Path | None:
    """`[logging] file`: None when empty; a relative path is in the data directory."""
    return Path(data_dir, setting) if setting else None
