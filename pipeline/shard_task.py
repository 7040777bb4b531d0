"""One shard's work, as a plain function: run the step on each item, write rows, mark done.

Runs inside a Ray worker (or directly, in tests). Crash and hang handling lives here,
beside the output, in the shard's journal:

  ``start <key>``           before an item is processed
  ``end <json record>``     after its rows are written (or it failed with a reason)
  ``timeout <key>``         the watchdog fired; the process then exits hard

When a task is retried (Ray restarts it after the worker died), items with an ``end``
line are not redone: their rows are already on disk (zarr writes shard files
atomically). An item that was started but never ended crashed or hung the worker: it is
recorded as failed (stage "worker" or "timeout") instead of being tried forever.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import shard_writer
from pipeline.errors import StepFailed
from schemas import SchemaError, StoreLayout


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


def _read_journal(path: Path) -> tuple[dict[str, dict], str | None, set[str]]:
    """(ended records by key, key started but not ended, keys that timed out)."""
    ended: dict[str, dict] = {}
    started: list[str] = []
    timed_out: set[str] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "start":
                started.append(rest)
            elif kind == "end":
                try:
                    rec = json.loads(rest)
                except json.JSONDecodeError:
                    continue  # torn last line of a killed process
                ended[rec["key"]] = rec
            elif kind == "timeout":
                timed_out.add(rest)
    dangling = next((k for k in reversed(started) if k not in ended), None)
    return ended, dangling, timed_out


class _Watchdog:
    """Kills this process if one item runs longer than ``seconds`` (hung C code included)."""

    def __init__(self, seconds: float, journal, key: str):
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
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def process_shard(out: str, layout_attrs: dict, shard: int, items: list[tuple[WorkItem, list[int]]],
                  step_ref: str, options: dict, timeout_s: float) -> dict:
    """Process every item of shard ``shard`` and write its completion marker.

    ``items``: (item, rows) pairs in shard order. Returns the marker dict.
    """
    out_path = Path(out)
    layout = StoreLayout.from_attrs(layout_attrs)
    step = resolve_step(step_ref)
    jpath = shard_writer.journal_path(out_path, shard)
    ended, dangling, timed_out = _read_journal(jpath)
    arrays = shard_writer.open_arrays(out_path, layout)
    records = []
    with open(jpath, "a") as journal:
        def log(line: str) -> None:
            journal.write(line + "\n")
            journal.flush()

        if dangling is not None and dangling not in ended:
            stage = "timeout" if dangling in timed_out else "worker"
            reason = (f"took longer than {timeout_s:g} s and was killed" if stage == "timeout"
                      else "the worker process died on this item (segfault or out of memory)")
            rows = next(r for it, r in items if it.key == dangling)
            ended[dangling] = {"key": dangling, "rows": rows, "ok": False, "stage": stage, "reason": reason,
                               "seconds": None}
            log("end " + json.dumps(ended[dangling]))
        for item, rows in items:
            if item.key in ended:
                records.append(ended[item.key])
                continue
            log(f"start {item.key}")
            t0 = time.perf_counter()
            rec = {"key": item.key, "rows": rows, "ok": True, "stage": None, "reason": None}
            try:
                with _Watchdog(timeout_s, journal, item.key):
                    samples = step(item, options)
                    if len(samples) != item.n_samples:
                        raise StepFailed("step", f"returned {len(samples)} samples, expected {item.n_samples}")
                    shard_writer.write_samples(arrays, layout, rows, samples)
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
    shard_writer.write_marker(out_path, shard, records)
    return {"shard": shard, "items": records}


def item_to_dict(item: WorkItem) -> dict:
    return asdict(item)
