"""The output store as the commands see it: checks on the folder before anything is written to
it, and the help of the options every rendering command shares."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import UserError

RETRY_FAILED_HELP = "re-run recorded failures of these stages (comma-separated; alone: all) into the same store"


def check_writable(out) -> None:
    """One-line UserError unless ``out`` (a folder, maybe not yet existing) can be created. For an
    object-store URL: the bucket must exist and be listable with the environment's credentials (a
    bucket that then refuses the writes themselves stops the run with a StorageError)."""
    from schemas.storage import is_url, open_location, storage_error

    if is_url(out):
        loc = open_location(out)
        try:
            loc.is_empty()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001  (any client error: one line)
            mapped = storage_error(e, str(out))
            raise UserError(str(mapped) if mapped else f"--out {out}: cannot list it "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
        return
    probe = Path(out)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"--out {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {probe} is not writable")
