"""Where a shard's journal lives, how an attempt writes it, and how an attempt holds its shard.

The journal (lines ``start``/``end``/``flushed``/``timeout``/``retry``, see ``shard_task``) must be
seen by the next attempt on the shard, which Ray may start on another node after this one was lost;
so it lives with the store, on the storage every node shares:

* **local / shared POSIX folder**: ``STORE/_shards/<k>.journal``, one file that every attempt
  appends to (a line per write, flushed to the OS at once: a killed process loses nothing). Lines
  are not fsynced, except ``timeout``: the data a ``flushed`` line names is fsynced before the line
  is written and the marker after it, so a line lost with a node's power only makes the next
  attempt redo items (never count unwritten rows); a ``start`` line lost that way is not wanted
  either (the node died, not the item). The shard's lock is an exclusive ``flock`` on that file.
* **object store** (no append; objects are written whole): each attempt writes its own object
  ``STORE/_journal/<k>/<n>-<id>.log`` (n = 0, 1, ... in attempt order), rewritten in full at each
  line, one PUT of the attempt's lines so far (a few KB; about 3 PUTs per item, ~2.4M small PUTs for
  800K objects). Reading concatenates the attempts in order. The shard's lock is the lease object
  ``STORE/_journal/<k>/lock`` (``Location.lock``). The journals stay in the bucket, apart from the
  markers, so listing ``_shards/`` (resume) lists markers only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid

from schemas.reader import SHARDS_DIR
from schemas.storage import Location, join, mapped_errors

OBJECT_JOURNALS = "_journal"


def journal_key(shard: int) -> str:
    """The journal file of a local store (relative to the store)."""
    return join(SHARDS_DIR, f"{shard:07d}.journal")


class ShardJournal:
    """Shard ``shard``'s journal in store ``loc``."""

    def __init__(self, loc: Location, shard: int):
        self.loc, self.shard = loc, shard
        self.folder = join(OBJECT_JOURNALS, f"{shard:07d}")

    def read_text(self) -> str:
        """Every attempt's lines, in order ('' if none)."""
        if self.loc.is_local:
            try:
                return self.loc.read_bytes(journal_key(self.shard)).decode(errors="replace")
            except FileNotFoundError:
                return ""
        logs = sorted(k for k in self.loc.list(self.folder) if k.endswith(".log"))
        return "".join((b or b"").decode(errors="replace") for b in self.loc.read_many(logs))

    def last_write(self) -> float | None:
        """Wall-clock time of the last write to a local journal (None: unknown, object stores)."""
        if not self.loc.is_local:
            return None
        try:
            return os.stat(self.loc.path(journal_key(self.shard))).st_mtime
        except FileNotFoundError:
            return 0.0

    @contextlib.contextmanager
    def attempt(self, wait_s: float):
        """Hold the shard (waits up to ``wait_s`` for another live attempt) and yield this
        attempt's ``AttemptLog``."""
        if self.loc.is_local:
            path = self.loc.path(journal_key(self.shard))
            with self.loc.lock(journal_key(self.shard), wait_s) as held, open(path, "a") as f:
                yield _FileLog(f, held, self.loc.url)
        else:
            with self.loc.lock(join(self.folder, "lock"), wait_s) as held:
                n = sum(k.endswith(".log") for k in self.loc.list(self.folder))
                yield _ObjectLog(self.loc, join(self.folder, f"{n:04d}-{uuid.uuid4().hex[:8]}.log"), held)


class _FileLog:
    """Appends to the local journal file."""

    def __init__(self, f, held, url: str):
        self.f, self.held, self.url = f, held, url
        self.fault_file = f  # faulthandler writes a hung item's traceback here

    def log(self, line: str, durable: bool = False) -> None:
        with mapped_errors(self.url):  # a full disk is a StorageError naming the store, not an item's fault
            self.f.write(line + "\n")
            self.f.flush()
            if durable:
                os.fsync(self.f.fileno())


class _ObjectLog:
    """This attempt's journal object, rewritten whole at each line."""

    def __init__(self, loc: Location, key: str, held):
        self.loc, self.key, self.held = loc, key, held
        self.lines: list[str] = []
        self._lock = threading.Lock()  # the watchdog's timer thread logs too
        self.fault_file = sys.stderr   # faulthandler needs a file descriptor: the worker's log

    def log(self, line: str, durable: bool = False) -> None:
        with self._lock:
            self.lines.append(line + "\n")
            self.loc.write_bytes(self.key, "".join(self.lines).encode())
