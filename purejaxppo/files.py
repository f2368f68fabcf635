"""Atomic file writes: a crash, a kill or a full disk leaves the old file (or none), never a
part of the new one. Each write goes to a temporary file beside its path (`.NAME.XXXXXXXX`,
so that the rename stays on one file system), is synced, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from purejaxppo.errors import DiskFull, is_disk_full


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a crash leaves the old file. A
    full disk raises DiskFull naming the file (and leaves no temporary file)."""
    with _full_disk_named(path):
        replace_file(path, data)


def replace_file(path: Path, data: bytes) -> None:
    """write_atomic, with a full disk left an OSError: for a caller that says in its own words
    what a full disk cost (a checkpoint's checksum)."""
    tmp = _write_beside(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_beside(path: Path, data: bytes) -> Path:
    """`data` in a new temporary file beside `path`, on disk; removed again if that fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; follow the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_together(files: dict[Path, bytes]) -> None:
    """Write several files so that all of them change or none does: each is written beside its
    path first, then all are renamed into place (a rename needs no space). A full disk raises
    DiskFull naming the file that did not fit."""
    written: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            with _full_disk_named(path):
                written[path] = _write_beside(path, data)
        for path, tmp in written.items():
            os.replace(tmp, path)
    finally:
        for tmp in written.values():
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _full_disk_named(path: Path) -> Iterator[None]:
    """A full disk in the block raises DiskFull naming `path`; other errors pass as they are."""
    try:
        yield
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(f"disk full: {path} was not written") from None
        raise


@contextlib.contextmanager
def written_into_place(path: Path, prefix: str, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name (an image library),
    renamed to `path` when the block ends without an error; removed in any case."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; follow the umask
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
