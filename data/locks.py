"""Advisory locks that end with their process, however it ends (flock: the kernel drops them with the last
descriptor, so a crash or SIGKILL leaves no stale lock): one compare per run folder, one run per checkpoint
folder.

    holder = hold(folder / ".lock")   # None: this process holds it now; else who does ("pid 123")
    release(folder / ".lock")

A lock file records its holder's pid for the message; a folder is locked as it is (no file added to it).
On a filesystem without flock the lock is skipped: unprotected, as before there were locks.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

_held: dict = {}  # resolved path -> the descriptor whose lock this process holds


def hold(path: str | os.PathLike) -> str | None:
    """Take the lock on `path` (a lock file, created if need be, or an existing folder) until `release` or
    this process's end. None when taken; else the holder, as "pid N" or "another process". A second `hold`
    of one path in one process is refused too: flock locks belong to open files, not to processes."""
    path = Path(path)
    folder = path.is_dir()
    fd = os.open(path, os.O_RDONLY if folder else os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        written = "" if folder else os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        return f"pid {written}" if written.isdigit() else "another process"
    except OSError:  # ENOLCK, EOPNOTSUPP: no locks on this filesystem
        pass
    if not folder:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[str(path.resolve())] = fd
    return None


def release(path: str | os.PathLike) -> None:
    """Give back this process's lock on `path`, if it holds one."""
    fd = _held.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)
