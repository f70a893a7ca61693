"""Install a verified release into its own venv at `<release>/venv`, offline: the wheels it carries, hash-checked
against its lock (`pip install --no-index --find-links wheelhouse --require-hashes`), then the project wheel.
A venv is not relocatable, so it is made in the release's final folder. The van's pip configuration is not
read (PIP_CONFIG_FILE=/dev/null): nothing may reach for an index. Then the new `flexedge --version` must name
the manifest's version."""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from device.contract.release import LOCK_NAME, WHEELHOUSE, Manifest
from device.update.errors import UpdateFailed

log = logging.getLogger(__name__)

INSTALL_TIMEOUT_S = 900.0  # a Pi 4 on a slow card: venv + ~45 wheels


def base_python() -> str:
    """The system interpreter this venv was made from (the new venv is made from the same one)."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def uses_system_site_packages(prefix: str = sys.prefix) -> bool:
    """A Pi's venv sees the system's site-packages (apt's picamera2): the new one must too."""
    try:
        text = (Path(prefix) / "pyvenv.cfg").read_text()
    except OSError:
        return False
    return any(line.replace(" ", "").lower() == "include-system-site-packages=true" for line in text.splitlines())


async def _run(*argv: str) -> str:
    # No index, no configuration of this machine, no wheel cache in the service's home (the card's space).
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_CACHE_DIR": "1"}
    env.pop("PYTHONPATH", None)
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env)
    try:
        async with asyncio.timeout(INSTALL_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise UpdateFailed(f"{Path(argv[0]).name} {argv[1]} timed out") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise UpdateFailed(f"{' '.join(Path(a).name for a in argv[:4])} failed ({proc.returncode}): "
                           f"{text.strip()[-400:]}")
    return text


async def install(release: Path, manifest: Manifest, *, python: str | None = None,
                  system_site_packages: bool | None = None) -> None:
    venv = release / "venv"
    options = ["--system-site-packages"] if (uses_system_site_packages() if system_site_packages is None
                                              else system_site_packages) else []
    await _run(python or base_python(), "-m", "venv", *options, str(venv))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
           "--find-links", str(release / WHEELHOUSE)]
    await _run(*pip, "--require-hashes", "-r", str(release / LOCK_NAME))
    await _run(*pip, "--no-deps", str(release / manifest.project_wheel))
    said = (await _run(str(venv / "bin" / "flexedge"), "--version")).strip()
    if said != f"flexedge {manifest.version}":
        raise UpdateFailed(f"the installed release says {said!r:.80}, not flexedge {manifest.version}")
    log.info("release %s installed in %s", manifest.version, venv)
