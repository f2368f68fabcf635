"""One run per folder: an advisory lock on the output folder, held while a run writes there.

The lock is `flock` on `<folder>/.purejaxppo.lock`. The kernel drops it when the holding process
exits for any reason (SIGKILL included), so a dead run never leaves a stale lock: the next run
finds the file unlocked and takes it. Checking is side-effect free: a refused run opens the
existing lock file read-only and changes nothing in the folder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".purejaxppo.lock"


class FolderInUse(Exception):
    """Another live process holds the folder."""


class FolderLock:
    """Hold `folder` for this process: `FolderLock(folder).acquire()`; released on `release()`
    or when the process exits."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def check(self) -> None:
        """Raise FolderInUse if a live process holds the folder; creates and changes nothing."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return  # no lock file (or no folder): nobody holds it; writability is checked apart
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(self._holder(fd)) from None
        finally:
            os.close(fd)

    def acquire(self) -> FolderLock:
        """Take the lock (the folder must exist); raise FolderInUse if it is held."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise FolderInUse(holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    @staticmethod
    def _holder(fd: int) -> str:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return f"process {text}" if text.isdigit() else "another process"
