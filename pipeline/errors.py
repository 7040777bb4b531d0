"""The two kinds of failure the pipeline distinguishes.

``UserError``: bad command-line input (missing folder, wrong layout, missing MANO files,
unwritable output). The CLI prints its one-line message and exits with code 2, having
written nothing.

``StepFailed``: one input item (an object, a sequence) cannot be processed. The runner
records (key, stage, reason) in the store's failure table and carries on.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message is one line and says what to do."""


class StepFailed(Exception):
    """One item failed at ``stage`` ("fetch", "load", "validate", "render", ...) for ``reason``
    (short, readable, the same for every item with this problem); ``detail``: optional
    specifics (the exception text, numbers), kept beside the reason in the failure record."""

    def __init__(self, stage: str, reason: str, detail: str | None = None):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason, self.detail = stage, reason, detail


class StorageError(Exception):
    """The device or bucket holding a store refuses writes for a reason no retry fixes: the run
    stops scheduling new shards, keeps what is complete, and exits non-zero with this one-line
    message (it names the output: "no space left on the device holding OUT", ...)."""


class NoSpaceLeft(StorageError):
    """ENOSPC / EDQUOT on a filesystem, or a quota error from an object store."""


class WriteRefused(StorageError):
    """Permission denied, read-only filesystem, or a bucket that refuses the write (AccessDenied)."""
