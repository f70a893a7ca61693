"""The device end of a simulated serial port: a pty pair driven from the event loop, at a stable path.

The agent opens `path` like /dev/ttyACM0. With `link_path` the path is a symlink that goes at unplug and
points to a new pty at replug, as udev removes and re-creates /dev/serial/by-id/... for a USB device.
"""
from __future__ import annotations

import asyncio
import logging
import os

from device.testbench.pty import PtyPair, open_pty_pair

log = logging.getLogger(__name__)


class SimPort:
    def __init__(self, protocol: asyncio.Protocol, link_path: str | None = None) -> None:
        self._protocol = protocol
        self.link_path = link_path
        self._pair: PtyPair | None = None
        self._reader: asyncio.ReadTransport | None = None
        self._writer: asyncio.WriteTransport | None = None

    @property
    def path(self) -> str:
        if self.link_path:
            return self.link_path
        if self._pair is None:
            raise RuntimeError("not plugged in")
        return self._pair.port

    @property
    def plugged(self) -> bool:
        return self._pair is not None

    async def plug(self) -> str:
        """Open a new pty pair, point the link at it, and start reading; returns the agent's path."""
        if self._pair is not None:
            return self.path
        loop = asyncio.get_running_loop()
        pair = open_pty_pair()
        # The slave stays open here too: the agent closing and reopening its end must not hang up ours.
        reader = os.fdopen(os.dup(pair.master_fd), "rb", 0)
        writer = os.fdopen(os.dup(pair.master_fd), "wb", 0)
        self._reader, _ = await loop.connect_read_pipe(lambda: self._protocol, reader)
        self._writer, _ = await loop.connect_write_pipe(asyncio.Protocol, writer)
        self._pair = pair
        if self.link_path:
            temporary = f"{self.link_path}.{os.getpid()}.tmp"
            os.symlink(pair.port, temporary)
            os.replace(temporary, self.link_path)  # atomic: the agent never sees a missing link mid-swap
        log.info("simulated device plugged in at %s (%s)", self.path, pair.port)
        return self.path

    def write(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def unplug(self) -> None:
        """Close the pty: the agent's open port reads EOF/EIO, as when a USB cable is pulled."""
        pair, self._pair = self._pair, None
        if pair is None:
            return
        if self.link_path and os.path.islink(self.link_path):
            # udev removes the by-id link with the device: a stale link could name a pty number the kernel
            # hands to another simulated device next, and the agent would open the wrong device.
            os.unlink(self.link_path)
        if self._writer is not None:
            self._writer.abort()  # unsent bytes die with the cable
        if self._reader is not None:
            self._reader.close()
        self._reader = self._writer = None
        await asyncio.sleep(0)  # let the transports close their file descriptors
        await asyncio.sleep(0)
        pair.close()
        log.info("simulated device unplugged from %s", self.link_path or pair.port)

    async def close(self) -> None:
        await self.unplug()
