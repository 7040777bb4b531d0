"""A test-only step: the real Objaverse step, except that chosen items crash or hang the worker."""

import os
import signal
import time
from pathlib import Path

from pipeline.errors import StepFailed
from pipeline.objaverse.job import objaverse_step


def chaos_step(item, options):
    action = options.get("chaos", {}).get(item.key, options.get("chaos_all"))
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif action == "hang":
        time.sleep(3600)
    elif action == "raise":
        raise RuntimeError("bug in the step\nsecond line")
    elif isinstance(action, str) and action.startswith("await-kill:"):
        _await_kill(item.key, int(action.split(":")[1]), Path(options["chaos_dir"]))
    elif action == "fail-until-file" and not (Path(options["chaos_dir"]) / "ok").exists():
        raise StepFailed("fetch", "the test's network is down")
    elif isinstance(action, str) and action.startswith("mark-and-sleep:"):
        # announce (key, Ray node, pid) so a test can kill the node mid-item, then take a while
        import ray

        node = ray.get_runtime_context().get_node_id()
        (Path(options["chaos_dir"]) / f"{item.key}.{node}.{os.getpid()}.start").write_text("")
        time.sleep(float(action.split(":")[1]))
    samples = objaverse_step(item, options)
    if action == "skip-first":  # the step refuses its first sample (as render-hoi does with --max-padding)
        from pipeline.engine.shard_task import Skipped

        samples[0] = Skipped("refused by the test")
    return samples


def _await_kill(key: str, times: int, folder: Path) -> None:
    """The first ``times`` attempts on this item announce their pid (``<key>.<n>.pid``) and wait
    to be killed from outside (the test sends SIGKILL); later attempts run normally."""
    n = len(list(folder.glob(f"{key}.*.pid")))
    if n < times:
        (folder / f"{key}.{n}.pid").write_text(str(os.getpid()))
        time.sleep(120)
