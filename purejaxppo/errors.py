"""Errors the command line reports in one line (exit code 2); importable without JAX."""


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
