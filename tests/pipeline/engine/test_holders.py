"""Poison counting: an item is poisoned only when its own worker died twice while holding it
(``pipeline/engine/holders.py``), read from real journals by a real shard task."""

import json
import os
import subprocess
import sys
import time

from pipeline.engine import holders, runner, shard_writer
from pipeline.engine.shard_task import POISONED, process_shard
from tests.pipeline.helpers import small_job


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_who_counts_as_a_death():
    here = holders.current_node()
    dead = {"pid": dead_pid(), "node": here, "run": "r1"}
    assert holders.died_holding(dead, "r1", here)                                  # its worker died here
    assert not holders.died_holding({**dead, "pid": os.getpid()}, "r1", here)       # this process: it raised
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not holders.died_holding({**dead, "pid": sleeper.pid}, "r1", here)   # still alive
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not holders.died_holding(dead, "r2", here)           # another driver run (stopped, killed)
    assert holders.died_holding({"key": "x", "t": 1.0}, "r2", here)  # a journal of an older version
    # a holder on another machine that nobody can ask about: counted, as before
    assert holders.died_holding({**dead, "node": "host:elsewhere"}, "r1", here, wait_s=0)


def _journal_with_two_deaths(out, key, runs):
    here = holders.current_node()
    lines = [json.dumps({"key": key, "t": time.time(), "pid": dead_pid(), "node": here, "run": r}) for r in runs]
    shard_writer.journal_path(out, 0).write_text("".join(f"start {line}\n" for line in lines))


def test_an_item_is_poisoned_only_by_two_deaths_of_its_own_worker_in_this_run(ray_cluster, tmp_path):
    job, _ = small_job(tmp_path / "s.zarr", samples_per_shard=5, limit=2)
    rp = runner.plan_run(job)
    nonce = runner.create(job, rp)
    entries = [(item, [i]) for i, item in enumerate(job.items)]
    victim = job.items[1].key
    args = (str(job.out), job.layout.to_attrs(), 0, entries, job.step, job.options, 60, nonce)
    # two starts of this run, both holders dead on this node: poisoned
    _journal_with_two_deaths(job.out, victim, ["r1", "r1"])
    marker = process_shard(*args, run_id="r1")
    rec = {r["key"]: r for r in marker["items"]}[victim]
    assert (rec["ok"], rec["stage"], rec["reason"]) == (False, "worker", POISONED) and "pid" in rec["detail"]
    # the same journal seen by a later run: those deaths came with a stopped driver, the item is made
    shard_writer.marker_path(job.out, 0).unlink()
    _journal_with_two_deaths(job.out, victim, ["r1", "r1"])
    marker = process_shard(*args, run_id="r2")
    assert all(r["ok"] for r in marker["items"])
    # one death in this run and one in an earlier run: tried again, made
    shard_writer.marker_path(job.out, 0).unlink()
    _journal_with_two_deaths(job.out, victim, ["r0", "r3"])
    assert all(r["ok"] for r in process_shard(*args, run_id="r3")["items"])
