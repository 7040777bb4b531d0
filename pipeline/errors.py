"""The kinds of failure the pipeline distinguishes.

``UserError``: bad command-line input (missing folder, wrong layout, missing MANO files,
unwritable output). The CLI prints its one-line message and exits with code 2, having
written nothing.

``StepFailed``: one input item (an object, a sequence) cannot be processed. The runner
records (key, stage, reason) in the store's failure table and carries on.

``StorageError``: the store's device or bucket refuses writes (full, read-only, no permission).
The runner stops scheduling shards, lets those in flight end, and the CLI prints the one-line
message and exits with code 4.

``RunIncomplete``: some shards kept failing outside any item (a corrupt shard file, a bug in
the writer); the others were done. The CLI prints the summary, one line, and exits with code 3.
"""

from __future__ import annotations

import errno


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


class RunIncomplete(Exception):
    """A run ended with shards left undone that a rerun of the same command may finish (shards
    that kept failing outside any item); the message is one line. The CLI exits with code 3."""


# what a failed write's errno says about the device holding the store (all of them: no retry helps)
_NO_SPACE = {errno.ENOSPC: "no space left on the device holding {out}",
             errno.EDQUOT: "the disk quota is exceeded on the device holding {out}"}
_REFUSED = {errno.EROFS: "the device holding {out} is read-only",
            errno.EACCES: "permission denied writing into {out}",
            errno.EPERM: "the operation is not permitted writing into {out}"}
AGAIN = "; finished shards are kept: fix it and run the same command again"


# an object store's quota errors (S3, MinIO, GCS, Azure), by the words their messages use
_QUOTA_WORDS = ("quotaexceeded", "quota exceeded", "storagefull", "insufficientstorage", "xminiostoragefull",
                "storagequotaexceeded", "insufficient storage")


def storage_error(exc: BaseException, out) -> StorageError | None:
    """The ``StorageError`` that ``exc`` (raised while writing the store at ``out``, a folder or a
    bucket URL) amounts to, or None (something a retry or another item may not hit): a
    ``StorageError`` as it is; an ``OSError`` with ENOSPC / EDQUOT (``NoSpaceLeft``) or EROFS /
    EACCES / EPERM (``WriteRefused``); an object store's access-denied, missing-bucket or quota
    error (obstore / S3 / GCS / Azure messages). The one definition; ``schemas.storage`` uses it."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return NoSpaceLeft(_NO_SPACE[exc.errno].format(out=out) + AGAIN)
    if isinstance(exc, OSError) and exc.errno in _REFUSED:
        return WriteRefused(_REFUSED[exc.errno].format(out=out) + AGAIN)
    name, text = type(exc).__name__, str(exc).lower()
    if name in ("PermissionDeniedError", "UnauthenticatedError") or "accessdenied" in text:
        return WriteRefused(f"the bucket holding {out} refuses writes: access denied "
                            "(check the credentials in the environment: AWS_*, AWS_PROFILE, GOOGLE_*, AZURE_*)")
    if any(w in text.replace(" ", "") or w in text for w in _QUOTA_WORDS):
        return NoSpaceLeft(f"no space left in the bucket holding {out} (quota exceeded)" + AGAIN)
    if "nosuchbucket" in text:
        return WriteRefused(f"{out}: the bucket does not exist")
    return None
