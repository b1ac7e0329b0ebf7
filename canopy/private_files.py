"""Files only the service's own user may read: the data folder (0700), the database, secrets and
clouds.yaml (0600). Each is created with its mode from the start (os.open with the mode, under a umask
that cannot widen it), so there is no moment when another local user could open it."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) as a folder only its owner can enter; tighten it if it exists."""
    old = os.umask(0o077)
    try:
        path.mkdir(parents=True, exist_ok=True)
    finally:
        os.umask(old)
    mode = path.stat().st_mode
    # A shared sticky folder (/tmp given as a data folder) is not ours to close: tightening it would lock
    # every other user and service out of it. Anything else that is wider than 0700 is narrowed.
    if mode & 0o777 != DIR_MODE and not mode & stat.S_ISVTX:
        with contextlib.suppress(PermissionError):  # a folder we do not own: leave it as the operator made it
            path.chmod(DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only: the file never exists with a wider mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through O_CREAT: narrow it before writing
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def touch_private(path: Path) -> None:
    """Create `path` empty with owner-only mode unless it exists (an SQLite file before SQLite opens it:
    SQLite gives its -wal and -shm files the main file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
