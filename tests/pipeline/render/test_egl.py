"""EGL device selection in a fresh process (as a Ray worker starts): the device query must run,
not fall back to device 0 through a swallowed error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import json
from pipeline.render import egl
ids = egl.egl_devices_cuda_ids()
print(json.dumps({"ids": ids, "pick": egl.select_egl_device()}))
"""


def test_egl_devices_are_queried_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k != "EGL_DEVICE_ID"}
    env.update(PYOPENGL_PLATFORM="egl", CUDA_VISIBLE_DEVICES="0",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(got["ids"]) >= 1                       # at least Mesa's device
    cuda = [i for i, c in enumerate(got["ids"]) if c == 0]
    assert got["pick"] == (cuda[0] if cuda else 0)    # CUDA device 0's EGL device, or 0 without NVIDIA EGL
