"""No good object is lost to a worker killed from outside; --retry-failed re-runs failures in place.

The Ray worker running an item is killed with SIGKILL by the test (as preemption or the
kernel's OOM killer would), on the real local Ray cluster.
"""

import dataclasses
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from pipeline.engine import runner, shard_writer
from schemas.reader import StoreReader
from tests.pipeline.helpers import small_job


class Killer(threading.Thread):
    """SIGKILLs every process that announces itself with a ``*.pid`` file in ``folder``."""

    def __init__(self, folder):
        super().__init__(daemon=True)
        self.folder, self.killed, self.stop = folder, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            for f in sorted(self.folder.glob("*.pid")):
                if f.name not in self.killed and f.read_text():
                    time.sleep(0.3)  # well inside the item (it has started and is waiting)
                    os.kill(int(f.read_text()), signal.SIGKILL)
                    self.killed.append(f.name)
            time.sleep(0.1)


def run_killing(job, folder, **kw):
    """``runner.run(job, progress=False, **kw)`` while a ``Killer`` SIGKILLs every worker that announces
    itself in ``folder``; returns (the run's summary, the names of the killed workers' pid files)."""
    killer = Killer(folder)
    killer.start()
    try:
        return runner.run(job, progress=False, **kw), killer.killed
    finally:
        killer.stop.set()


def _chaos_job(tmp_path, chaos: dict, limit: int, **kw):
    job, _ = small_job(tmp_path / "s.zarr", limit=limit, **kw)
    folder = tmp_path / "chaos"
    folder.mkdir(exist_ok=True)
    return dataclasses.replace(job, step="tests.pipeline.chaos_step:chaos_step",
                               options={**job.options, "chaos": chaos, "chaos_dir": str(folder)}), folder


def _keys(path):
    reader = StoreReader(path)
    return sorted(reader.key(i) for i in range(len(reader)))


def test_killed_workers_lose_no_good_object_and_retry_failed_brings_failures_back(ray_cluster, tmp_path):
    # shards: [cube, mug] [torus, globe] [lamp]; the globe's worker is killed once (it is
    # tried again and kept), the mug's twice (poisoned), the torus fails at fetch
    job, folder = _chaos_job(tmp_path, {"builtin-striped_mug": "await-kill:2", "builtin-pbr_torus": "fail-until-file",
                                        "builtin-globe": "await-kill:1"}, 5, samples_per_shard=2)
    first, killed = run_killing(job, folder, workers=1, timeout_s=60, max_retries=4)
    out = tmp_path / "s.zarr"
    by_key = {f["key"]: f for f in first.failures}
    assert len(killed) == 3 and set(by_key) == {"builtin-striped_mug", "builtin-pbr_torus"}
    assert by_key["builtin-striped_mug"]["stage"] == "worker" and "twice" in by_key["builtin-striped_mug"]["reason"]
    assert by_key["builtin-pbr_torus"]["stage"] == "fetch"
    good = _keys(out)
    assert good == ["builtin-checker_cube", "builtin-desk_lamp", "builtin-globe"]
    journal = shard_writer.journal_path(out, 1).read_text()
    assert journal.count('start {"key": "builtin-globe"') == 2  # killed mid-item, then redone
    reader = StoreReader(out)
    good_samples = {reader.key(i): reader.read(i) for i in range(len(reader))}
    good_marker = [m for m in shard_writer.read_markers(out) if all(r["ok"] for r in m["items"])]

    # only the "worker" stage: the fetch failure stays recorded, the good sample untouched
    (folder / "ok").write_text("network is back")
    second = runner.run(job, workers=1, timeout_s=60, progress=False, retry_failed=["worker"])
    assert (second.items_ok, second.items_failed, second.items_skipped) == (1, 0, 4)
    assert [f["key"] for f in second.failures] == ["builtin-pbr_torus"]
    assert _keys(out) == sorted(good + ["builtin-striped_mug"])
    # then every remaining failure (no stage named)
    third = runner.run(job, workers=1, timeout_s=60, progress=False, retry_failed=[])
    assert (third.items_ok, third.items_failed) == (1, 0) and third.failures == []
    assert _keys(out) == sorted(i.key for i in job.items)
    reader = StoreReader(out)
    for i in range(len(reader)):
        for name, arr in good_samples.get(reader.key(i), {}).items():
            np.testing.assert_array_equal(reader.read(i)[name], arr, err_msg=name)
    for m in good_marker:  # a shard with nothing to retry keeps its marker byte for byte
        assert json.loads(shard_writer.marker_path(out, m["shard"]).read_text()) == m
    # nothing left to retry: nothing runs; a stage with no recorded failure (a typo) is said, not silent
    assert runner.run(job, workers=1, progress=False, retry_failed=[]).shards_run == 0
    typo = runner.run(job, workers=1, progress=False, retry_failed=["wroker"])
    assert typo.shards_run == 0 and any("no recorded failures of stage wroker" in n for n in typo.notes)
    assert len(list(out.glob("_shards/*.tmp*"))) == 0


def test_retry_failed_needs_the_existing_store(tmp_path):
    from pipeline.errors import UserError

    job, _ = small_job(tmp_path / "new.zarr")
    with pytest.raises(UserError, match="retry-failed"):
        runner.run(job, workers=1, progress=False, retry_failed=[])
    assert not (tmp_path / "new.zarr").exists()
