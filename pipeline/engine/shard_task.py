"""One shard's work, as a plain function: run the step on each item, write rows, mark done.

Runs inside a Ray worker (or directly, in tests). Crash and hang handling lives here,
beside the output, in the shard's journal:

  ``start {"key", "t"}``    before an item is processed (JSON, with the wall-clock start)
  ``end <json record>``     after its rows are written (or it failed with a reason)
  ``timeout <key>``         the watchdog fired; the process then exits hard

When a task is retried (Ray restarts it after the worker died), items with an ``end``
line are not redone: their rows are already on disk (zarr writes shard files
atomically). An item that was started but never ended crashed or hung the worker: it is
recorded as failed (stage "worker" or "timeout") instead of being tried forever.

Two attempts never work on one shard at once: an attempt holds an exclusive ``flock`` on
the journal for its whole run (a Ray retry waits for an orphaned attempt of a killed
driver to finish). Every store creation has a nonce; an attempt that belongs to a store
since replaced (``--overwrite``) writes nothing more.
"""

from __future__ import annotations

import faulthandler
import fcntl
import importlib
import json
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from numcodecs import blosc

from pipeline.engine import shard_writer
from pipeline.errors import StepFailed
from schemas import SchemaError, StoreLayout
from schemas.store import SAMPLE_ATTRS


@dataclass(frozen=True)
class WorkItem:
    """One input item. ``key``: unique, stable id; ``locator``: what the step needs to find
    the input (a path, a uid); ``n_samples``: samples it yields, known before running."""

    key: str
    locator: str
    n_samples: int = 1


def resolve_step(ref: str):
    """'package.module:function' -> the function (steps travel to workers by name)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _read_journal(path: Path) -> tuple[dict[str, dict], tuple[str, float] | None, set[str]]:
    """(ended records by key, (key, start time) started but not ended, keys that timed out)."""
    ended: dict[str, dict] = {}
    started: list[tuple[str, float]] = []
    timed_out: set[str] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "start":
                try:
                    rec = json.loads(rest)
                    started.append((rec["key"], float(rec["t"])))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # torn line
            elif kind == "end":
                try:
                    rec = json.loads(rest)
                except json.JSONDecodeError:
                    continue  # torn last line of a killed process
                ended[rec["key"]] = rec
            elif kind == "timeout":
                timed_out.add(rest)
    dangling = next(((k, t) for k, t in reversed(started) if k not in ended), None)
    return ended, dangling, timed_out


class _Watchdog:
    """Kills this process if one item runs longer than ``seconds``.

    A Python timer thread records ``timeout <key>`` and exits; C code that never releases
    the GIL would starve that thread, so faulthandler's C-level timer exits too, a little
    later (the retry then classifies the item by its start time).
    """

    GRACE_S = 10.0

    def __init__(self, seconds: float, journal, key: str):
        self.seconds = seconds
        self._timer = threading.Timer(seconds, self._fire, args=(journal, key))
        self._timer.daemon = True

    @staticmethod
    def _fire(journal, key):
        journal.write(f"timeout {key}\n")
        journal.flush()
        os.fsync(journal.fileno())
        os._exit(86)  # Ray sees a dead worker and retries the task; the journal says why

    def __enter__(self):
        self._timer.start()
        faulthandler.dump_traceback_later(self.seconds + self.GRACE_S, exit=True)
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        faulthandler.cancel_dump_traceback_later()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _lock(journal, seconds: float) -> None:
    """Exclusive lock on the shard's journal; waits for another live attempt to finish."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(journal.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError("another attempt has held this shard for too long") from None
            time.sleep(0.5)


def _same_store(out: Path, nonce: str) -> bool:
    manifest = shard_writer.read_manifest(out)
    return manifest is not None and manifest.get("nonce") == nonce


def process_shard(out: str, layout_attrs: dict, shard: int, items: list[tuple[WorkItem, list[int]]],
                  step_ref: str, options: dict, timeout_s: float, nonce: str) -> dict:
    """Process every item of shard ``shard`` and write its completion marker.

    ``items``: (item, rows) pairs in shard order; ``nonce``: the store creation this task
    belongs to. Returns the marker dict.
    """
    out_path = Path(out)
    layout = StoreLayout.from_attrs(layout_attrs)
    step = resolve_step(step_ref)
    blosc.set_nthreads(1)  # a worker is one core (see runner.WORKER_ENV)
    jpath = shard_writer.journal_path(out_path, shard)
    records = []
    with open(jpath, "a") as journal:
        _lock(journal, timeout_s * (len(items) + 1) + 60)
        stale = {"shard": shard, "items": [], "stale": True}
        if not _same_store(out_path, nonce):
            return stale  # the store was replaced while this task waited
        if shard_writer.marker_path(out_path, shard).exists():  # an earlier attempt finished it
            return json.loads(shard_writer.marker_path(out_path, shard).read_text())
        ended, dangling, timed_out = _read_journal(jpath)
        arrays = shard_writer.open_arrays(out_path, layout)

        def log(line: str) -> None:
            journal.write(line + "\n")
            journal.flush()

        if dangling is not None:
            key, started = dangling
            stage = "timeout" if key in timed_out or time.time() - started >= timeout_s else "worker"
            reason = (f"took longer than {timeout_s:g} s and was killed" if stage == "timeout"
                      else "the worker process died on this item (segfault or out of memory)")
            rows = next((r for it, r in items if it.key == key), [])
            ended[key] = {"key": key, "rows": rows, "ok": False, "stage": stage, "reason": reason, "seconds": None}
            log("end " + json.dumps(ended[key]))
        for item, rows in items:
            if item.key in ended:
                records.append(ended[item.key])
                continue
            log("start " + json.dumps({"key": item.key, "t": time.time()}))
            t0 = time.perf_counter()
            rec = {"key": item.key, "rows": rows, "ok": True, "stage": None, "reason": None}
            try:
                with _Watchdog(timeout_s, journal, item.key):
                    samples = step(item, options)
                    if len(samples) != item.n_samples:
                        raise StepFailed("step", f"returned {len(samples)} samples, expected {item.n_samples}")
                    if not _same_store(out_path, nonce):
                        return stale
                    shard_writer.write_samples(arrays, layout, rows, samples)
                    attrs = [dict(s.get(SAMPLE_ATTRS, {})) for s in samples]
                    if any(attrs):
                        rec["attrs"] = attrs  # per row, beside the rows (schemas.store.SAMPLE_ATTRS)
            except StepFailed as e:
                rec.update(ok=False, stage=e.stage, reason=e.reason)
            except SchemaError as e:
                rec.update(ok=False, stage="schema", reason=str(e))
            except Exception as e:  # noqa: BLE001  (a bug on one object must not stop the run)
                rec.update(ok=False, stage="error", reason=_one_line(e))
                rec["traceback"] = traceback.format_exc(limit=8)
            rec["seconds"] = round(time.perf_counter() - t0, 4)
            log("end " + json.dumps(rec))
            records.append(rec)
        if not _same_store(out_path, nonce):
            return stale
        shard_writer.write_marker(out_path, shard, records)
    return {"shard": shard, "items": records}
