"""The output store as the commands see it: checks on the folder before anything is written to
it, and the help of the options every rendering command shares."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import UserError

RETRY_FAILED_HELP = "re-run recorded failures of these stages (comma-separated; alone: all) into the same store"


def check_writable(out: Path) -> None:
    """One-line UserError unless ``out`` (a folder, maybe not yet existing) can be created."""
    probe = Path(out)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"--out {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {probe} is not writable")
