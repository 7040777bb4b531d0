"""The driver's loop: keep shard tasks in flight, take what they return, decide what a failed
task means, and show progress, at a cost per finished shard that does not grow with the
number of workers or items.

Each turn takes every task that has finished (one blocking ``ray.wait`` for the first, then a
non-blocking one for all the others), so 512 workers finishing together cost one turn, not
512. Progress inside running shards comes from their journals, read incrementally (only the
bytes added since the last read) and at most once per ``SCAN_S`` seconds, less often when a
scan is slow (it may take at most ``SCAN_SHARE`` of the time). The queue is a position in an
array of shard indices plus a ``deque`` of shards to run again.

A failed task (Ray wraps the task's exception in ``RayTaskError``; its ``cause`` is unwrapped):
- the device or bucket refuses writes (``errors.storage_error``: a ``StorageError``, or an
  ``OSError`` ENOSPC / EDQUOT / EROFS / EACCES / EPERM): no new shard is started; the tasks in
  flight end (or fail); the loop returns the first such error in ``LoopResult.stopped``;
- anything else (a corrupt shard file, a bug in the writer, Ray's retries of a dying worker
  exhausted): the shard is run again while its attempts still settle items (as counted by
  ``count_ended``), at most ``MAX_RESUBMITS`` times; then it is recorded in
  ``LoopResult.failed`` with a one-line reason and the loop goes on with the other shards.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.engine import shard_writer
from pipeline.errors import StorageError, storage_error

SCAN_S = 1.0          # journal scans at most this often ...
SCAN_SHARE = 0.05     # ... and taking at most this share of the driver's time
SHOW_S = 0.25         # progress bar refreshes at most this often
WAIT_S = 0.5          # a turn with nothing finished waits this long
MAX_RESUBMITS = 100

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def unwrap(e: BaseException) -> BaseException:
    """The task's own exception inside Ray's ``RayTaskError`` (``cause``), else ``e``."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def one_line(e: BaseException, limit: int = 200) -> str:
    """``Type: first line`` of an exception, without terminal colour codes."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:limit]}" if lines else type(e).__name__


class JournalProgress:
    """Items settled inside running shards, read from their journals (``_shards/<k>.journal``)
    incrementally: per shard the bytes read so far, a torn last line, and the keys with an
    ``end`` line (a later ``start`` of the same key removes it: the item is being made again).
    A journal that cannot be read (not yet written, or not a local file) counts 0."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self._state: dict[int, list] = {}  # shard -> [offset, partial line, set of keys]

    def count(self, shards) -> int:
        n = 0
        for k in shards:
            state = self._state.setdefault(k, [0, b"", set()])
            try:
                with open(shard_writer.journal_path(self.out, k), "rb") as f:
                    f.seek(state[0])
                    data = f.read()
            except OSError:
                data = b""
            if data:
                state[0] += len(data)
                lines = (state[1] + data).split(b"\n")
                state[1] = lines.pop()
                for line in lines:
                    _settle(line, state[2])
            n += len(state[2])
        return n

    def forget(self, shard: int) -> None:
        self._state.pop(shard, None)


def _settle(line: bytes, keys: set) -> None:
    kind, _, rest = line.partition(b" ")
    if kind not in (b"start", b"end"):
        return
    try:
        key = json.loads(rest)["key"]
    except (ValueError, KeyError, TypeError):
        return
    (keys.add if kind == b"end" else keys.discard)(key)


@dataclass
class LoopResult:
    failed: dict[int, str] = field(default_factory=dict)   # shard -> one-line reason
    stopped: StorageError | None = None                     # why no new shard was started
    not_started: int = 0                                    # shards left unstarted by the stop
    turns: int = 0
    scans: int = 0


class ShardScheduler:
    """Runs shards through ``submit(k) -> ObjectRef`` with at most ``window`` in flight.

    ``on_marker(k, marker)``: a shard's task returned its marker. ``count_ended(k)``: items
    the shard's journal settles (for the run-again rule). ``show(live)``: called at most every
    ``SHOW_S`` with the items settled inside running shards (from ``progress``; the shards of
    ``quiet`` are left out of it, e.g. ``--retry-failed`` shards whose journals hold old items).
    """

    def __init__(self, submit: Callable, window: int, out: Path, on_marker: Callable[[int, dict], None],
                 count_ended: Callable[[int], int], progress: JournalProgress | None = None,
                 show: Callable[[int], None] | None = None, quiet: frozenset = frozenset()):
        self.submit, self.window, self.out = submit, max(1, window), out
        self.on_marker, self.count_ended = on_marker, count_ended
        self.progress, self.show, self.quiet = progress, show, quiet

    def run(self, todo: np.ndarray) -> LoopResult:
        import ray

        result = LoopResult()
        todo = np.asarray(todo, np.int64)
        pos = 0
        again: deque[int] = deque()
        pending: dict = {}           # ObjectRef -> shard
        attempts: dict[int, int] = {}
        settled: dict[int, int] = {}  # shard -> items its journal settled at its last failure
        live, next_scan, next_show, scan_cost = 0, 0.0, 0.0, 0.0
        while True:
            if result.stopped is None:
                while len(pending) < self.window and (again or pos < len(todo)):
                    if again:
                        k = again.popleft()
                    else:
                        k, pos = int(todo[pos]), pos + 1
                    pending[self.submit(k)] = k
            if not pending:
                break
            result.turns += 1
            refs = list(pending)
            ready, _ = ray.wait(refs, num_returns=1, timeout=WAIT_S)
            if ready and len(refs) > 1:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref, value, error in _collect(ray, ready):
                k = pending.pop(ref)
                if self.progress is not None:
                    self.progress.forget(k)
                if error is None:
                    self.on_marker(k, value)
                    continue
                cause = unwrap(error)
                stop = storage_error(cause, self.out)
                if stop is not None:
                    result.stopped = result.stopped or stop
                    continue
                ended = self.count_ended(k)
                if result.stopped is None and ended > settled.get(k, 0) and attempts.get(k, 0) < MAX_RESUBMITS:
                    attempts[k] = attempts.get(k, 0) + 1
                    settled[k] = ended
                    again.append(k)
                else:
                    result.failed[k] = one_line(cause)
            now = time.monotonic()
            if self.progress is not None and now >= next_scan:
                live = self.progress.count(k for k in pending.values() if k not in self.quiet)
                scan_cost = time.monotonic() - now
                next_scan = now + max(SCAN_S, scan_cost / SCAN_SHARE)
                result.scans += 1
            if self.show is not None and (now >= next_show or not pending):
                self.show(live)
                next_show = now + SHOW_S
        if result.stopped is not None:
            result.not_started = len(todo) - pos + len(again)
        return result


def _collect(ray, ready: list):
    """(ref, value, None) or (ref, None, error) for each finished ref: one ``ray.get`` for all,
    one per ref only when some failed."""
    if not ready:
        return []
    try:
        return [(ref, value, None) for ref, value in zip(ready, ray.get(ready), strict=True)]
    except ray.exceptions.RayError:
        out = []
        for ref in ready:
            try:
                out.append((ref, ray.get(ref), None))
            except ray.exceptions.RayError as e:
                out.append((ref, None, e))
        return out
