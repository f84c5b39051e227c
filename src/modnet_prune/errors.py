"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user: a missing or corrupt file, wrong keys, a bad size..."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read, or whose tensors do not fit a MODNet."""
