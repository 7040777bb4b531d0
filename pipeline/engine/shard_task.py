"""One shard's work, as a plain function: run the step on each item, write rows, mark done.

Runs inside a Ray worker (or directly, in tests). Crash and hang handling lives here,
beside the output, in the shard's journal:

  ``start {"key", "t", "pid", "node", "run"}``  before an item is processed (JSON: wall-clock
                            start; the holder: worker process, Ray node, driver run)
  ``end <json record>``     after it is made: its rows compressed in memory, or failed
  ``flushed {"keys"}``      these items' rows are in the shard files (an ok ``end`` counts
                            only once a ``flushed`` line names it)
  ``timeout <key>``         the watchdog fired; the process then exits hard

  ``retry {"run", "keys"}``  ``--retry-failed`` re-runs these recorded failures (run id)

Rows are compressed per item and written once per shard, at its end (or earlier when they
pass ``FLUSH_BYTES``): each array's shard file is replaced atomically, keeping the rows
already in it. When a task is retried (Ray restarts it after the worker died), items
with an ``end`` line named by a later ``flushed`` line (or a failure's ``end``) are not
redone; items made but not yet written are made again, and are not suspects. An item that
was started but never ended killed the worker, or was on it when something else did
(``kill -9``, the OOM killer, a preempted node): it is tried again; only when its own worker
died twice while holding it (not counting holders on lost nodes, holders still alive, or
holders of another driver run: ``holders.died_holding``) is it recorded as failed (stage
"worker": it is poisoned), and an item whose watchdog fired as "timeout".

A step function may carry a ``prepare(items, options)`` attribute: called once per attempt
with the items it still has to make (e.g. to download a shard's objects together), under a
watchdog of ``timeout_s`` (``timeout (prepare)``); after it fired once, a shard's later attempts
skip it (each item's own step still fetches what it needs, under its own watchdog).

A write into the store that the device refuses (``errors.storage_error``: ENOSPC, EROFS, ...)
is not an item's failure: the task raises it and the runner stops scheduling.

``--retry-failed``: the runner passes ``retry = {"run": id, "keys": [...]}`` for a finished
shard; the task appends the ``retry`` line once per run (a Ray retry of the same run
does not reset the death count), re-runs those items into their own rows, keeps every
other record as it was, and replaces the marker atomically (``run`` is listed in its
``retries``); readers see the old marker or the new one, never a partial one.

Two attempts never work on one shard at once: an attempt holds the shard for its whole run
(an exclusive ``flock`` on the journal file; on an object store a lease object taken with a
conditional PUT, ``pipeline.engine.journal``), so a Ray retry, or a second driver on the same
store, waits for an orphaned attempt of a killed driver to finish and then finds its marker.
Every store creation has a nonce; an attempt that belongs to a store since replaced
(``--overwrite``), or that lost its lease, writes nothing more.

Durability: each shard file is written atomically and durably (fsync, or one PUT) before the
journal's ``flushed`` line and the marker that name it (``schemas.storage``); the marker records
each file's size and CRC-32C, which readers check (``schemas.index``). A StorageError (no space,
writes refused) is never blamed on an item: it ends the task, and the runner stops.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import os
import signal
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from numcodecs import blosc

from pipeline.engine import holders, shard_writer
from pipeline.engine.items import WorkItem
from pipeline.engine.journal import ShardJournal
from pipeline.errors import StepFailed, StorageError, storage_error
from schemas import SchemaError, StoreLayout
from schemas.storage import open_location
from schemas.store import SAMPLE_ATTRS

# A step's sample may carry this key: {stage: seconds} for the whole item (e.g. fetch, load,
# render_rgb). The task removes it before writing and stores it, with its own "encode"
# (contract check + compression) seconds, as the item's ``timings`` in the shard marker.
STEP_TIMINGS = "timings"

# Rows are compressed per item and written once per shard (``shard_writer.ShardRows``);
# a shard whose compressed rows pass this many bytes is written early (memory bound).
FLUSH_BYTES = 256 * 2**20

@dataclass(frozen=True)
class Skipped:
    """What a step returns in place of a planned sample it refuses (e.g. a window whose crop is
    mostly padding): no row is written for it, the item's record lists only the written rows and
    counts the skipped ones by ``reason`` (short, the same for every sample skipped for it), and
    the run summary shows the counts."""

    reason: str


def resolve_step(ref: str):
    """'package.module:function' -> the function (steps travel to workers by name)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class JournalState:
    """What a shard's journal says. ``ended``: end records by key; ``dangling``: (key, start
    time) of the last item started and not ended; ``timed_out``: keys whose watchdog fired;
    ``starts``: per key not yet ended, its start records (``{"key", "t", "pid", "node", "run"}``);
    ``runs``: retry run ids seen; ``made``: ok items whose rows were made but are not in the
    shard files (redone by the next attempt)."""

    ended: dict
    dangling: tuple[str, float] | None
    timed_out: set
    starts: dict
    runs: set
    made: dict


def read_journal(source) -> JournalState:
    """The state of a shard's journal. ``source``: the journal's text, a local journal file (Path),
    or a ``journal.ShardJournal``."""
    if isinstance(source, ShardJournal):
        text = source.read_text()
    elif isinstance(source, Path):
        text = source.read_text() if source.exists() else ""
    else:
        text = source
    return parse_journal(text)


def parse_journal(text: str) -> JournalState:
    ended: dict[str, dict] = {}
    made: dict[str, dict] = {}  # ok items whose rows were in memory, not yet in a "flushed" line
    started: list[tuple[str, float]] = []
    starts: dict[str, list[dict]] = {}
    timed_out: set[str] = set()
    runs: set[str] = set()
    if text:
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            try:
                rec = json.loads(rest) if kind in ("start", "end", "retry", "flushed") else None
            except json.JSONDecodeError:
                continue  # torn last line of a killed process
            if kind == "start":
                try:
                    started.append((rec["key"], float(rec["t"])))
                    starts.setdefault(rec["key"], []).append(rec)
                except (KeyError, TypeError, ValueError):
                    continue
                made.pop(rec["key"], None)  # made again: an earlier attempt's unwritten rows are void
            elif kind == "end" and isinstance(rec, dict) and "key" in rec:
                key = rec["key"]
                ended.pop(key, None)
                made.pop(key, None)
                (made if rec.get("ok") else ended)[key] = rec
                starts.pop(key, None)
            elif kind == "flushed" and isinstance(rec, dict):
                for key in rec.get("keys", []):  # only what this flush wrote, not another attempt's rows
                    if key in made:
                        ended[key] = made.pop(key)
            elif kind == "timeout":
                timed_out.add(rest)
            elif kind == "retry" and isinstance(rec, dict):
                runs.add(rec.get("run"))
                for key in rec.get("keys", []):
                    ended.pop(key, None)
                    made.pop(key, None)
                    starts.pop(key, None)
                    timed_out.discard(key)
                started = [(k, t) for k, t in started if k not in rec.get("keys", [])]
    # made but never written: redone, and not suspects (they finished; the worker died later)
    dangling = next(((k, t) for k, t in reversed(started) if k not in ended and k not in made), None)
    return JournalState(ended, dangling, timed_out, starts, runs, made)


class _Watchdog:
    """Kills this process if one item runs longer than ``seconds``.

    A Python timer thread records ``timeout <key>`` and exits; C code that never releases
    the GIL would starve that thread, so faulthandler's C-level timer exits too, a little
    later, writing its traceback into the journal: the retry then sees a journal written
    ``seconds`` after the item's start (a crash leaves the journal as it was at the start).
    """

    GRACE_S = 10.0

    def __init__(self, seconds: float, journal, key: str):
        self.seconds = seconds
        self._journal = journal  # the attempt's log (``journal.ShardJournal.attempt``)
        self._timer = threading.Timer(seconds, self._fire, args=(journal, key))
        self._timer.daemon = True

    @staticmethod
    def _fire(journal, key):
        try:
            journal.log(f"timeout {key}", durable=True)
        finally:
            _kill_descendants()  # a forked child (a download pool) shares the journal's lock: it must go too
            os._exit(86)  # Ray sees a dead worker and retries the task; the journal says why

    def __enter__(self):
        self._timer.start()
        # an object-store journal cannot take a file descriptor: its traceback goes to the worker's
        # log, and an item that starves the timer thread is then seen as a crash, not a timeout
        faulthandler.dump_traceback_later(self.seconds + self.GRACE_S, exit=True, file=self._journal.fault_file)
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        faulthandler.cancel_dump_traceback_later()


def _kill_descendants() -> None:
    """SIGKILL every process descended from this one (Linux ``/proc``; elsewhere nothing)."""
    children: dict[int, list[int]] = {}
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
    except OSError:
        return
    todo, seen = list(children.get(os.getpid(), [])), set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


POISONED = "the worker process died twice on this item (segfault or out of memory)"
PREPARE = "(prepare)"  # the watchdog key of a step's prepare hook


def _deaths(starts: list[dict], run: str | None) -> list[dict]:
    """The start records whose worker died holding the item (``holders.died_holding``); waits
    for Ray to notice a lost node only when the count would poison the item."""
    here = holders.current_node()
    quick = [s for s in starts if holders.died_holding(s, run, here, wait_s=0)]
    if len(quick) < 2:
        return quick
    return [s for s in quick if holders.died_holding(s, run, here)]


def _same_store(loc, nonce: str) -> bool:
    manifest = shard_writer.read_manifest(loc)
    return manifest is not None and manifest.get("nonce") == nonce


def process_shard(out: str, layout_attrs: dict, shard: int, items: list[tuple[WorkItem, list[int]]],
                  step_ref: str, options: dict, timeout_s: float, nonce: str, retry: dict | None = None,
                  run_id: str | None = None) -> dict:
    """Process every item of shard ``shard`` and write its completion marker.

    ``items``: (item, rows) pairs in shard order; ``nonce``: the store creation this task
    belongs to; ``retry``: ``{"run": id, "keys": [...]}`` to re-run recorded failures of a
    finished shard (``--retry-failed``); ``run_id``: the driver run (see ``holders``). Returns
    the marker dict. Raises ``StorageError`` when the store's device refuses a write.
    """
    loc = open_location(out)
    layout = StoreLayout.from_attrs(layout_attrs)
    step = resolve_step(step_ref)
    blosc.set_nthreads(1)  # a worker is one core (see runner.WORKER_ENV)
    journal = ShardJournal(loc, shard)
    records = []
    last_write = journal.last_write()  # when the previous attempt last wrote (see _Watchdog)
    with journal.attempt(timeout_s * (len(items) + 1) + 60) as att:
        stale = {"shard": shard, "items": [], "stale": True}

        def current() -> bool:
            """Still this store (not replaced by --overwrite) and still our shard (lease held)."""
            return att.held() and _same_store(loc, nonce)

        if not current():
            return stale  # the store was replaced while this task waited
        try:
            old = loc.read_json_or_none(shard_writer.marker_key(shard))
        except ValueError:
            old = None  # a marker that cannot be parsed: the shard is redone (--retry-failed)
        if old is not None and (retry is None or retry["run"] in old.get("retries", [])):
            return old  # an earlier attempt finished it (this retry run included)
        state = read_journal(journal)
        buffer = shard_writer.ShardRows(loc, layout, shard)
        unwritten: list[str] = []  # ok items whose rows are in the buffer
        written: set[int] = set()  # rows (inside the shard) of ok items already in the shard files
        S = layout.samples_per_shard
        flush_s = 0.0

        def flush() -> bool:
            """Write the buffered rows (unless the store was replaced), then journal them. Rows of
            items finished earlier are kept; other rows of the old files are dropped."""
            nonlocal flush_s
            t_flush = time.perf_counter()
            with _Watchdog(timeout_s, att, "(flush)"):
                if not buffer.flush(check=current, keep=set(written)):
                    return False
            written.update(r % S for it, rows in items if it.key in unwritten for r in rows)
            log("flushed " + json.dumps({"keys": unwritten}))
            unwritten.clear()
            flush_s += time.perf_counter() - t_flush
            return True

        def log(line: str) -> None:
            att.log(line)

        if retry is not None and retry["run"] not in state.runs:
            log("retry " + json.dumps(retry))
            state = read_journal(journal)
        for rec in (old or {}).get("items", []):
            if retry is None or rec["key"] not in retry["keys"]:
                state.ended.setdefault(rec["key"], rec)
        ended = state.ended
        written.update(r % S for rec in ended.values() if rec.get("ok") for r in rec["rows"])
        if state.dangling is not None:
            key, started = state.dangling
            rows = next((r for it, r in items if it.key == key), [])
            # (a journal last written by a prepare that timed out says nothing about this item)
            if key in state.timed_out or (PREPARE not in state.timed_out and last_write is not None
                                          and last_write - started >= timeout_s):
                ended[key] = {"key": key, "rows": rows, "ok": False, "stage": "timeout",
                              "reason": f"took longer than {timeout_s:g} s and was killed", "seconds": None}
                log("end " + json.dumps(ended[key]))
            elif len(deaths := _deaths(state.starts.get(key, []), run_id)) >= 2:
                ended[key] = {"key": key, "rows": rows, "ok": False, "stage": "worker", "reason": POISONED,
                              "detail": "its worker died holding it, never finished: " + ", ".join(
                                  f"pid {d.get('pid')} on node {str(d.get('node'))[:12]}" for d in deaths),
                              "seconds": None}
                log("end " + json.dumps(ended[key]))
            # else: the worker died once with this item in flight (or its node was lost): tried again below
        prepare = getattr(step, "prepare", None)
        if prepare is not None and PREPARE not in state.timed_out and (todo := [it for it, _ in items
                                                                               if it.key not in ended]):
            try:
                with _Watchdog(timeout_s, att, PREPARE):
                    prepare(todo, options)
            except Exception as e:  # noqa: BLE001  (a head start only: each item's own step still fetches)
                log("prepare-failed " + json.dumps(_one_line(e)))
        who = holders.holder(run_id)
        for item, rows in items:
            if item.key in ended:
                records.append(ended[item.key])
                continue
            log("start " + json.dumps({"key": item.key, "t": time.time(), **who}))
            t0 = time.perf_counter()
            rec = {"key": item.key, "rows": rows, "ok": True, "stage": None, "reason": None}
            try:
                with _Watchdog(timeout_s, att, item.key):
                    samples = step(item, options)
                    timings = {}
                    for s in samples:
                        if not isinstance(s, Skipped):
                            timings.update(s.pop(STEP_TIMINGS, None) or {})
                    if len(samples) != item.n_samples:
                        raise StepFailed("step", f"returned {len(samples)} samples, expected {item.n_samples}")
                    if not current():
                        return stale
                    skipped = Counter(s.reason for s in samples if isinstance(s, Skipped))
                    kept = [(r, s) for r, s in zip(rows, samples, strict=True) if not isinstance(s, Skipped)]
                    attrs = [dict(s.get(SAMPLE_ATTRS, {})) for _, s in kept]
                    t_encode = time.perf_counter()
                    try:
                        buffer.add([r for r, _ in kept], [s for _, s in kept])  # all rows or none (SchemaError: none)
                    except OSError as e:  # the store's device refuses writes: not this item's fault
                        raise (storage_error(e, out) or e) from None
                    timings["encode"] = time.perf_counter() - t_encode
                    rec["timings"] = {k: round(float(v), 4) for k, v in timings.items()}
                    if skipped:
                        rec["rows"] = [r for r, _ in kept]
                        rec["skipped"] = dict(skipped)  # reason -> samples refused by the step (no rows)
                    if any(attrs):
                        rec["attrs"] = attrs  # per row, beside the rows (schemas.store.SAMPLE_ATTRS)
            except StepFailed as e:
                rec.update(ok=False, stage=e.stage, reason=e.reason)
                if getattr(e, "detail", None):
                    rec["detail"] = str(e.detail)[:2000]
            except SchemaError as e:
                rec.update(ok=False, stage="schema", reason="a sample breaks the store contract", detail=str(e)[:2000])
            except StorageError:
                raise  # the device or bucket refuses writes: no item is at fault
            except Exception as e:  # noqa: BLE001  (a bug on one object must not stop the run)
                rec.update(ok=False, stage="error", reason=f"unexpected {type(e).__name__} in the step",
                           detail=_one_line(e))
                rec["traceback"] = traceback.format_exc(limit=8)
            rec["seconds"] = round(time.perf_counter() - t0, 4)
            log("end " + json.dumps(rec))
            records.append(rec)
            if rec["ok"]:
                unwritten.append(item.key)
            if buffer.nbytes > FLUSH_BYTES and not flush():
                return stale
        if not flush() or not current():  # checked again: a flush takes a while
            return stale
        retries = (old or {}).get("retries", []) + ([retry["run"]] if retry else [])
        # the shard files are durable (fsync / PUT) before the marker that names them
        shard_writer.write_marker(loc, shard, records, retries=retries, flush_seconds=round(flush_s, 4),
                                  files=buffer.file_records())
    return {"shard": shard, "items": records, "retries": retries}
