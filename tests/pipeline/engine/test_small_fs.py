"""A store on a device that fills up or turns read-only, for real: a small tmpfs in a private
mount namespace (``unshare -rm``), the real CLI, a fresh Ray instance. The run ends with one
line naming the device and exit code 4, loses nothing, and a rerun once the device is fixed
completes every object, all readable."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("small_fs_script.py")


def _can_mount() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs in a private mount namespace "
                                 "(unshare -rm) on this machine")


def _run(tmp_path, mode):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[3])}
    proc = subprocess.run(["unshare", "-rm", sys.executable, str(SCRIPT), str(tmp_path), mode],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _one_clean_line(run: dict, starts: str) -> None:
    assert run["rc"] == 4, run["stderr"][-2000:]
    text = run["stdout"] + run["stderr"]
    assert "Traceback" not in text and "\x1b[" not in text and "RayTaskError" not in text, text[-3000:]
    last = run["stderr"].strip().splitlines()[-1]
    assert last.startswith("error: " + starts), last
    assert "stopped" in run["stdout"] and re.search(r"shards not started", run["stdout"])


@pytest.mark.slow
@needs_mount
def test_a_full_device_reads_as_one_line_and_a_rerun_completes(tmp_path):
    r = _run(tmp_path, "no-space")
    _one_clean_line(r["first"], f"no space left on the device holding {r['out']}")
    assert 0 < r["marked_after_first"] < 10  # some shards were done before the disk filled
    assert r["second"]["rc"] == 0, r["second"]["stderr"][-2000:]
    assert sorted(r["keys"]) == sorted(f"{i:02d}/{n}" for i, n in enumerate(_names())) and r["readable"] == 20


@pytest.mark.slow
@needs_mount
def test_a_read_only_device_reads_as_one_line_and_a_rerun_completes(tmp_path):
    r = _run(tmp_path, "read-only")
    assert r.get("frozen"), f"the device was not made read-only: {r.get('freeze_error', 'the run ended first')}"
    _one_clean_line(r["first"], f"the device holding {r['out']} is read-only")
    assert r["second"]["rc"] == 0, r["second"]["stderr"][-2000:]
    assert len(r["keys"]) == 20 == len(set(r["keys"])) and r["readable"] == 20


def _names():
    from pipeline.objaverse.sources.builtin import builtin_uids

    return [f"{builtin_uids()[i % 5]}.glb" for i in range(20)]
