"""Errors the command line reports in one line (exit code 2); importable without JAX."""


class NoGoodCheckpoint(Exception):
    """Every checkpoint in a folder is damaged (or there is none); the message says which."""
