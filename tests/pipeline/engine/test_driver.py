"""The driver loop (``pipeline/engine/driver.py``) on the real local Ray cluster: what a failed
shard task means (run again, recorded and passed over, or: stop, the store refuses writes),
journal progress read incrementally, and a corrupt shard file that no longer stops a run."""

import errno
import json
import time

import numpy as np

from pipeline.engine import driver, runner, shard_writer
from pipeline.errors import NoSpaceLeft, WriteRefused
from schemas.reader import StoreReader
from tests.pipeline.helpers import small_job


def fake_shard(k: int, plan: dict, folder: str) -> dict:
    """A shard task of this test: ``plan[k]`` says how it ends (default: a marker after 50 ms)."""
    from pathlib import Path

    what = plan.get(str(k))
    tries = Path(folder) / f"{k}.tries"
    n = int(tries.read_text()) + 1 if tries.exists() else 1
    tries.write_text(str(n))
    time.sleep(0.05)
    if what == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device", f"{folder}/rgb/c/{k}")
    if what == "erofs":
        raise OSError(errno.EROFS, "Read-only file system")
    if what == "corrupt" or (what == "flaky" and n == 1):
        raise ValueError("shard index checksum mismatch\n  (second line)")
    return {"shard": k, "items": [{"key": f"item{k}", "ok": True, "rows": [k]}]}


def _schedule(ray, tmp_path, plan: dict, n: int, window: int = 2, settles=lambda k: 0):
    remote = ray.remote(num_cpus=1, max_retries=0)(fake_shard)
    done = []
    sched = driver.ShardScheduler(lambda k: remote.remote(k, plan, str(tmp_path)), window, tmp_path / "s.zarr",
                                  lambda k, m: done.append(k), count_ended=settles)
    return sched.run(np.arange(n)), done


def test_a_full_device_stops_new_shards_and_lets_those_in_flight_end(ray_cluster, tmp_path):
    result, done = _schedule(ray_cluster, tmp_path, {"3": "enospc"}, 12, window=2)
    assert isinstance(result.stopped, NoSpaceLeft) and "\n" not in str(result.stopped)
    assert str(result.stopped).startswith(f"no space left on the device holding {tmp_path / 's.zarr'}")
    started = sorted(int(p.name.split(".")[0]) for p in tmp_path.glob("*.tries"))
    assert started == list(range(len(started))) and len(started) <= 3 + 2 * 2  # none long after shard 3
    assert 3 not in done and set(done) == set(started) - {3} and result.failed == {}
    assert result.not_started == 12 - len(started)
    (tmp_path / "ro").mkdir()
    ro, _ = _schedule(ray_cluster, tmp_path / "ro", {"0": "erofs"}, 4, window=1)
    assert isinstance(ro.stopped, WriteRefused) and "read-only" in str(ro.stopped) and ro.not_started == 3


def test_a_shard_that_keeps_failing_is_recorded_and_the_others_run(ray_cluster, tmp_path):
    (tmp_path / "flaky").mkdir()
    settled = {5: 1}  # shard 5's first attempt settled an item: it is run again (and succeeds)
    result, done = _schedule(ray_cluster, tmp_path / "flaky", {"2": "corrupt", "5": "flaky"}, 8,
                             settles=lambda k: settled.get(k, 0))
    assert sorted(done) == [0, 1, 3, 4, 5, 6, 7] and result.stopped is None
    assert result.failed == {2: "ValueError: shard index checksum mismatch"}  # one line, no colour codes
    assert (tmp_path / "flaky" / "5.tries").read_text() == "2" and (tmp_path / "flaky" / "2.tries").read_text() == "1"


def test_journal_progress_reads_only_new_lines(tmp_path):
    out = tmp_path / "s.zarr"
    (out / "_shards").mkdir(parents=True)
    j = shard_writer.journal_path(out, 4)
    progress = driver.JournalProgress(out)
    assert progress.count([4]) == 0  # no journal yet
    j.write_text('start {"key": "a", "t": 1}\nend {"key": "a", "ok": true}\nstart {"key": "b", "t": 2}\nend {"ke')
    assert progress.count([4]) == 1  # the torn line waits for its end
    with open(j, "a") as f:
        f.write('y": "b", "ok": false}\nstart {"key": "a", "t": 3}\n')  # b ended; a is being made again
    assert progress.count([4]) == 1 and progress._state[4][0] == j.stat().st_size
    with open(j, "a") as f:
        f.write('end {"key": "a", "ok": true}\nflushed {"keys": ["a"]}\n')
    assert progress.count([4]) == 2
    progress.forget(4)
    assert 4 not in progress._state
    assert driver.one_line(RuntimeError("\x1b[31mred\x1b[0m text\nmore")) == "RuntimeError: red text"


def test_a_corrupt_shard_file_no_longer_stops_a_run(ray_cluster, tmp_path):
    """An unfinished shard whose file is garbage: its items are made again and the file is rewritten
    without reading the garbage (``ShardRows.flush`` keeps only finished items' rows), while the other
    shards run; a shard that keeps failing outside an item is recorded and passed over (the scheduler
    test above)."""
    out = tmp_path / "s.zarr"
    job, _ = small_job(out)  # 5 objects, 2 per shard: shards 0, 1, 2
    runner.run(job, workers=2, progress=False)
    # shard 0 is unfinished (no marker, no journal: its items are made again) and its RGB file is garbage
    rgb = shard_writer.ShardRows(out, job.layout, 0).specs["rgb"].path(0)
    rgb.write_bytes(b"\x00garbage" * 100)
    for path in (shard_writer.marker_path(out, 0), shard_writer.journal_path(out, 0),
                 shard_writer.marker_path(out, 2), shard_writer.journal_path(out, 2)):
        path.unlink()
    summary = runner.run(job, workers=2, progress=False)
    summary.raise_if_incomplete()
    assert not summary.shard_failures and summary.shards_run == 2 and summary.items_ok == 3
    reader = StoreReader(out)
    assert len(reader) == 5 and all(reader.read(i)["rgb"].any() for i in range(5))
    assert json.loads(shard_writer.marker_path(out, 0).read_text())["shard"] == 0
