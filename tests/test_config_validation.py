"""What `flexedge config --validate` (the unit's ExecStartPre) must refuse, and what a technician's CLI finds.

Each case is one a technician made on a real van (issue 16, "What was measured" points 1 and 2): all were
accepted before, and the agent then died with a traceback or flooded the broker."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cloud_sync.pki import Pki
from device.config import Config, ConfigError, config_keys, example_text, load_config

REPO = Path(__file__).resolve().parent.parent


def flexedge(*args: str, env: dict[str, str] | None = None, system_config: Path | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI as a subprocess; `system_config` stands in for /etc/flexedge/flexedge.toml."""
    code = ("import sys; from pathlib import Path; from device.cli import main; "
            f"sys.exit(main(sys.argv[1:], system_config=Path({str(system_config or '/nonexistent')!r})))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEXEDGE_")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(REPO), **(env or {})}, cwd=cwd)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.init()
    pki.issue("van-42")
    return pki


def van_config(pki: Pki, extra: str = "", **sections: str) -> str:
    """A complete, valid van config; `extra` lines go into [sync]."""
    issued = pki.client("van-42")
    return f"""
[device]
id = "van-42"
[mqtt]
host = "broker.example"
ca_file = "{pki.ca_cert}"
cert_file = "{issued.cert_path}"
key_file = "{issued.key_path}"
[sync]
cloud_key_file = "{pki.signing_pub}"
{extra}
"""


@pytest.mark.parametrize(("section_text", "key", "words"), [
    ('[sync]\ncompression = "zstdd"\n', "sync.compression", "one of: zstd, none"),
    ('[logging]\nlevel = "LOUD"\n', "logging.level", "one of: DEBUG"),
    ("[store]\nretention_days = -3\n", "store.retention_days", "outside 0.01..3650"),
    ("[sync]\ninflight_batches = 0\n", "sync.inflight_batches", "outside 1..64"),
    ("[sync]\nstatus_interval_s = 0\n", "sync.status_interval_s", "outside 5..86400"),
    ('[device]\nid = "van 42/#"\n', "device.id", "not valid"),
    ("[sync]\nack_timeout_s = nan\n", "sync.ack_timeout_s", "finite"),
    ("[store]\nretention_days = inf\n", "store.retention_days", "finite"),
    ('[camera]\nbackend = "simulated"\n', "camera.sim_dir", "needs sim_dir"),
    ('[console]\nallowed_hosts = ["ok.example", "bad host"]\n', "console.allowed_hosts", "not valid"),
    ("[gps]\nmin_mode = 1\n", "gps.min_mode", "one of: 2, 3"),
    ("[sync]\nwill_delay_s = 31\n", "sync.will_delay_s", "longer than sync.status_interval_s"),
    ("[console]\nheader_timeout_s = 0\n", "console.header_timeout_s", "outside 1..600"),
])
def test_bad_values_are_refused_naming_key_file_and_range(tmp_path: Path, section_text: str, key: str,
                                                          words: str) -> None:
    path = tmp_path / "flexedge.toml"
    path.write_text(section_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == key and info.value.source == str(path) and words in str(info.value)


def test_a_misspelled_variable_is_refused_with_the_right_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"FLEXEDGE_MQTT__PROT": "1883"})
    assert info.value.key == "FLEXEDGE_MQTT__PROT" and "did you mean FLEXEDGE_MQTT__PORT" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"FLEXEDGE_SYNC__INFLIGHT_BATCHES": "0"})
    assert "FLEXEDGE_SYNC__INFLIGHT_BATCHES" in info.value.source
    load_config(None, env={"FLEXEDGE_CONFIG": "x", "FLEXEDGE_DATA_DIR": "y", "FLEXEDGE_GPSD": "z"})


def test_missing_certificate_files_are_refused(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "van.toml"
    path.write_text(van_config(pki))
    load_config(path, env={})  # the complete config is valid
    path.write_text(van_config(pki).replace(str(pki.client("van-42").key_path), str(tmp_path / "van-42.key")))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "mqtt.key_file" and "does not exist" in str(info.value)
    path.write_text(van_config(pki).replace(f'key_file = "{pki.client("van-42").key_path}"', ""))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "mqtt.key_file" and "flexedge pki device" in str(info.value)


def test_a_key_the_service_user_cannot_read_is_refused(tmp_path: Path, pki: Pki) -> None:
    """As root, `--user` checks for the service user: directories on the way, then the file's mode."""
    path = tmp_path / "van.toml"
    path.write_text(van_config(pki))
    load_config(path, env={}, file_user="root")
    with pytest.raises(ConfigError) as info:  # pytest's temporary directories are 0700 root
        load_config(path, env={}, file_user="nobody")
    assert info.value.key == "mqtt.ca_file" and "user nobody cannot enter" in str(info.value)
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        os.chmod(shared, 0o755)
        copy = Pki(Path(shared))
        for name in ("ca.crt", "signing.pub", "van-42.crt", "van-42.key"):
            shutil.copy2(pki.dir / name, copy.dir / name)  # modes kept: certificates 0644, the key 0600
        path.write_text(van_config(copy))
        with pytest.raises(ConfigError) as info:
            load_config(path, env={}, file_user="nobody")
        assert info.value.key == "mqtt.key_file" and "not readable by user nobody" in str(info.value)
        assert "mode 600" in str(info.value)
        result = flexedge("config", "--validate", "--user", "nobody", "--config", str(path))
        assert result.returncode == 2 and "mqtt.key_file" in result.stderr and len(result.stderr.splitlines()) == 1
        os.chmod(copy.dir / "van-42.key", 0o644)
        assert flexedge("config", "--validate", "--user", "nobody", "--config", str(path)).returncode == 0


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, pki: Pki) -> None:
    text = van_config(pki).replace(str(pki.dir) + "/", "")
    (pki.dir / "relative.toml").write_text(text)
    config = load_config(pki.dir / "relative.toml", env={})
    assert config.mqtt.ca_file == str(pki.ca_cert)


def test_run_exits_2_on_a_config_error_with_one_line_and_no_traceback(tmp_path: Path, pki: Pki) -> None:
    """Measured: `flexedge run` died with a traceback and exit 1, so systemd restarted it until the start
    limit. Exit 2 names a config error (the unit retries it every RestartSec)."""
    path = tmp_path / "van.toml"
    path.write_text(van_config(pki).replace(str(pki.ca_cert), str(tmp_path / "missing-ca.crt")))
    for command in (["config", "--validate"], ["run"]):
        result = flexedge(*command, "--config", str(path), "--data-dir", str(tmp_path / "data"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "mqtt.ca_file" in result.stderr and str(path) in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "data").exists()


def test_the_installed_config_is_found_and_its_data_dir_used(tmp_path: Path) -> None:
    """Measured: FLEXEDGE_CONFIG was set only inside the unit; a technician's `flexedge status` used
    ~/.local/state/flexedge. Now: --config, then FLEXEDGE_CONFIG, then the installed file."""
    installed = tmp_path / "etc" / "flexedge.toml"
    installed.parent.mkdir()
    installed.write_text(f'data_dir = "{tmp_path / "service-data"}"\n[device]\nid = "van-installed"\n')
    other = tmp_path / "other.toml"
    other.write_text('[device]\nid = "van-other"\n')
    doc = json.loads(flexedge("config", "--json", system_config=installed).stdout)
    assert doc["device"]["id"] == "van-installed" and doc["data_dir"] == str(tmp_path / "service-data")
    doc = json.loads(flexedge("config", "--json", system_config=installed, env={"FLEXEDGE_CONFIG": str(other)}).stdout)
    assert doc["device"]["id"] == "van-other"
    doc = json.loads(flexedge("config", "--json", "--config", str(other), system_config=installed,
                              env={"FLEXEDGE_CONFIG": str(installed)}).stdout)
    assert doc["device"]["id"] == "van-other"
    # Without data_dir in it, the installed config still means the service's directory, not the caller's.
    installed.write_text('[device]\nid = "van-installed"\n')
    doc = json.loads(flexedge("config", "--json", system_config=installed, env={"HOME": str(tmp_path)}).stdout)
    assert doc["data_dir"] == "/var/lib/flexedge" and doc["config_file"] == str(installed)
    doc = json.loads(flexedge("config", "--json", system_config=tmp_path / "absent.toml").stdout)
    assert doc["config_file"] is None


def test_console_pair_writes_where_the_installed_agent_looks(tmp_path: Path) -> None:
    """Measured: `flexedge console pair` wrote its code into the technician's ~/.local/state."""
    installed = tmp_path / "flexedge.toml"
    installed.write_text(f'data_dir = "{tmp_path / "service-data"}"\n')
    result = flexedge("console", "pair", "--json", system_config=installed, env={"HOME": str(tmp_path / "home")})
    assert result.returncode == 5 and "service-data does not exist" in result.stderr  # not installed yet
    (tmp_path / "service-data").mkdir()
    result = flexedge("console", "pair", "--json", system_config=installed, env={"HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "service-data" / "console-pairing.json").exists() and not (tmp_path / "home").exists()


def test_every_key_has_a_meaning_and_numbers_a_range() -> None:
    for key, spec in config_keys().items():
        assert spec.metadata.get("doc"), f"{key} has no one-line meaning"
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert spec.metadata.get("range") or spec.metadata.get("allowed"), f"{key} has no range"


def test_the_example_is_complete_and_loads_as_the_defaults(tmp_path: Path) -> None:
    result = flexedge("config", "--example")
    assert result.returncode == 0
    path = tmp_path / "example.toml"
    path.write_text(result.stdout)
    assert load_config(path, env={}) == Config()
    for key, spec in config_keys().items():
        assert f"# {spec.metadata['doc']}" in result.stdout, key
        assert f"\n{key.rpartition('.')[2]} = " in result.stdout, key


def test_readme_reference_is_the_example_and_its_other_examples_are_valid(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks[0] == example_text(), "README's Configuration block differs from `flexedge config --example`"
    for block in blocks[1:]:
        path = tmp_path / "readme.toml"
        path.write_text(block)
        load_config(path, env={}, check_files=False)


def test_readme_names_only_documents_the_repository_has() -> None:
    """Measured: README pointed at a DESIGN.md that is not in the repository."""
    named = set(re.findall(r"[A-Za-z0-9_./-]+\.md\b", (REPO / "README.md").read_text()))
    assert {name for name in named if not (REPO / name).exists()} == set()
