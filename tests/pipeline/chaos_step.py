"""A test-only step: the real Objaverse step, except that chosen items crash or hang the worker."""

import os
import signal
import time

from pipeline.objaverse.job import objaverse_step


def chaos_step(item, options):
    action = options.get("chaos", {}).get(item.key)
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif action == "hang":
        time.sleep(3600)
    elif action == "raise":
        raise RuntimeError("bug in the step\nsecond line")
    return objaverse_step(item, options)
