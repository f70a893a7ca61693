"""Pseudo-terminal pairs in raw mode: the simulator writes one end, the agent opens the other as a serial port."""
from __future__ import annotations

import os
import tty
from dataclasses import dataclass


@dataclass
class PtyPair:
    """`master_fd` is the simulated device's end; `port` is the path the agent opens like /dev/ttyACM0."""

    master_fd: int
    slave_fd: int
    port: str

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def open_pty_pair() -> PtyPair:
    master, slave = os.openpty()
    # Raw mode: a cooked tty echoes and rewrites CR/LF, which a real USB-CDC port never does.
    tty.setraw(master)
    tty.setraw(slave)
    return PtyPair(master, slave, os.ttyname(slave))
