"""Can a given user read a file? The config check asks it for the service user (`flexedge config --validate
--user flexedge` run as root), the PKI for the broker's user: mode bits, owner and groups, and every
directory on the way (search permission), as the kernel would decide without ACLs."""
from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path


class AccessProblem(Exception):
    """Why a path cannot be used, in one line (the message names the path)."""


def _user_ids(user: str) -> tuple[int, set[int]]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise AccessProblem(f"no user {user!r} on this system") from None
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    return entry.pw_uid, groups


def _allowed(st: os.stat_result, uid: int, gids: set[int], want: int) -> bool:
    """`want` is a combination of R (4), W (2), X (1) as in the owner's mode bits."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def check_readable(path: Path, *, directory: bool = False, user: str | None = None) -> None:
    """Raise AccessProblem unless `path` exists, is a file (or a directory) and `user` can read it.

    `user` None: this process's own access (os.access)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AccessProblem(f"{path} does not exist") from None
    except PermissionError:
        raise AccessProblem(f"{path}: permission denied on a directory on the way") from None
    if directory and not stat.S_ISDIR(st.st_mode):
        raise AccessProblem(f"{path} is not a directory")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise AccessProblem(f"{path} is not a regular file")
    want = os.R_OK | (os.X_OK if directory else 0)
    if user is None:
        if not os.access(path, want):
            raise AccessProblem(f"{path} is not readable by this user (uid {os.getuid()})")
        return
    uid, gids = _user_ids(user)
    for parent in reversed(path.absolute().parents):
        if not _allowed(parent.stat(), uid, gids, 1):
            raise AccessProblem(f"{path}: user {user} cannot enter {parent} (mode {parent.stat().st_mode & 0o777:o})")
    if not _allowed(st, uid, gids, 4 | (1 if directory else 0)):
        owner = f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)}"
        raise AccessProblem(f"{path} is not readable by user {user} (owner {owner}, mode {st.st_mode & 0o777:o})")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
