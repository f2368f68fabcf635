"""Errors the command line reports in one line (exit code 2); importable without JAX."""

import contextlib
import os


class NoGoodCheckpoint(Exception):
    """Every checkpoint in a folder is damaged (or there is none); the message says which."""


class DiskFull(Exception):
    """A write failed for lack of space; the message names what was not written."""


def is_disk_full(err: BaseException) -> bool:
    """True for an OSError ENOSPC/EDQUOT, and for orbax/tensorstore errors reporting one."""
    import errno

    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(err)
    return "No space left on device" in text or "os_error_code='28'" in text


def path_problem(path: str | os.PathLike[str], room: int = 0) -> str | None:
    """Why the OS would refuse `path` (a name in it over NAME_MAX bytes, or the whole over
    PATH_MAX with `room` bytes more for what will go inside it), or None. Reads no file: the
    limits come from the nearest folder that exists (255 and 4096 where it cannot tell)."""
    full = os.fsencode(os.path.abspath(path))
    folder = full
    while folder != b"/" and not os.path.isdir(folder):  # isdir is False for any OSError
        folder = os.path.dirname(folder)
    name_max, path_max = 255, 4096
    with contextlib.suppress(OSError, ValueError):
        name_max = os.pathconf(folder, "PC_NAME_MAX")
        path_max = os.pathconf(folder, "PC_PATH_MAX")
    longest = max(len(part) for part in full.split(b"/"))
    if longest > name_max:
        return f"a name in it is {longest} bytes, over the file system's limit of {name_max}"
    if len(full) + room > path_max:
        if not room:
            return f"it is {len(full)} bytes, over the system's limit of {path_max}"
        return (
            f"it is {len(full)} bytes; at most {path_max - room} fit (the system's limit of "
            f"{path_max}, less {room} for the files inside it)"
        )
    return None


def shown(path: str | os.PathLike[str], most: int = 120) -> str:
    """A path as a message names it: in full, or its two ends when it is very long."""
    text = os.fspath(path)
    if len(text) <= most:
        return text
    return f"{text[: most // 2]}...{text[-most // 2 :]}"
