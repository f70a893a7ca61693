"""The layers point one way (README, "Architecture"): these rules are read off the import statements of every
module with `ast`, so a new import that breaks one fails here rather than in review.

hardware -> firmware_bridge -> device (agent core) -> device.store -> cloud_sync -> broker -> cloud; the wire
contract (device.contract) sits below all who share it; the test bench (device.testbench) above all.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("device", "firmware_bridge", "cloud_sync")

# The bench side: simulators, the local test fleet, the demo and the `flexedge sim|demo` commands.
BENCH = ("device/testbench/", "device/demo/", "device/cli/sim.py", "device/cli/sim_gps.py", "device/cli/demo.py")
# The agent's modules that may import cloud_sync: its adapter and the CLI commands that are cloud_sync tools.
CLOUD_SYNC_USERS = ("device/cloud_adapter.py", "device/cli/cloud.py", "device/cli/cloud_release.py",
                    "device/cli/pki.py", "device/cli/sync.py", "device/cli/plan.py")
DELIVERY_WORDS = re.compile(r"claim|deliver|block|route|stop|package", re.IGNORECASE)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function; `from a import b` counts as a and a.b."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _files() -> dict[str, set[str]]:
    return {str(path.relative_to(REPO)): _imports(path)
            for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


FILES = _files()


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _offenders(files: list[str], *forbidden: str, allowed: tuple[str, ...] = ()) -> dict[str, list[str]]:
    out = {}
    for file in files:
        bad = sorted(n for n in FILES[file] if _within(n, *forbidden) and not _within(n, *allowed))
        if bad:
            out[file] = bad
    return out


def _select(*prefixes: str, but: tuple[str, ...] = ()) -> list[str]:
    return [f for f in FILES if f.startswith(prefixes) and not f.startswith(but)]


def test_the_rules_see_the_code() -> None:
    assert len(FILES) > 100 and "device.contract.domain" in FILES["device/agent.py"]


def test_firmware_bridge_knows_nothing_above_it() -> None:
    assert _offenders(_select("firmware_bridge/"), "device", "cloud_sync") == {}


def test_the_contract_imports_no_hardware_no_link_and_no_agent_internals() -> None:
    assert _offenders(_select("device/contract/"), "firmware_bridge", "cloud_sync", "device",
                      allowed=("device.contract",)) == {}


def test_the_agent_core_reaches_the_cloud_only_through_its_port() -> None:
    users = _offenders(_select("device/", but=BENCH), "cloud_sync")
    assert sorted(users) == sorted(CLOUD_SYNC_USERS)
    assert _offenders(["device/agent.py", *_select("device/workflow/")], "cloud_sync") == {}


def test_cloud_sync_imports_only_the_outbox_and_the_contract_of_the_device() -> None:
    assert _offenders(_select("cloud_sync/"), "device", "firmware_bridge",
                      allowed=("device.store", "device.contract")) == {}


def test_the_reference_cloud_imports_only_the_contract_of_the_device() -> None:
    assert _offenders(_select("cloud_sync/cloud/"), "device", "firmware_bridge", allowed=("device.contract",)) == {}


def test_product_code_never_imports_the_test_bench() -> None:
    assert not (REPO / "firmware_bridge" / "sim").exists()
    assert _offenders(list(FILES), "firmware_bridge.sim") == {}
    assert _offenders(_select(*PACKAGES, but=BENCH), "device.testbench") == {}


def test_positioning_does_not_know_the_workflow() -> None:
    assert _offenders(_select("device/positioning/"), "device.workflow") == {}


def _identifiers(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name)
    return names


@pytest.mark.parametrize("file", _select("firmware_bridge/"))
def test_firmware_bridge_speaks_no_delivery_words(file: str) -> None:
    assert sorted(n for n in _identifiers(REPO / file) if DELIVERY_WORDS.search(n)) == []
