"""Which EGL device a worker renders on: the GPU Ray assigned it (``pipeline/render/egl.py``).

No GPU here: the device query runs on Mesa's EGL (it must answer "no CUDA device", not fail),
and the choice is checked inside real Ray tasks that were each assigned one of 4 advertised
GPUs, against what NVIDIA's EGL reports in such a process (``ray_gpu_script.egl_table``).
Untested on a real NVIDIA GPU.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.render import egl

SCRIPT = Path(__file__).with_name("ray_gpu_script.py")


def test_the_egl_device_query_answers_on_mesa():
    ids = egl.egl_devices_cuda_ids()
    assert ids and all(i is None for i in ids)  # llvmpipe: an EGL device, not a CUDA one
    assert egl.choose_egl_device(ids, "3") == 0 and egl.choose_egl_device(ids, None) == 0


def test_choice_counts_gpus_among_the_visible_ones():
    # EGL devices: GPU3, GPU2, software, GPU1, GPU0; CUDA_VISIBLE_DEVICES=2 -> only GPU2 maps, to 0
    assert egl.choose_egl_device([None, 0, None, None, None], "2") == 1
    assert egl.choose_egl_device([3, 2, None, 1, 0], None) == 4       # all visible: the first GPU
    assert egl.choose_egl_device([None, 0, None, None, None], "") == 0  # no GPU for this process


@pytest.mark.slow  # starts its own Ray instance (~15 s; 30 s on a loaded machine)
def test_each_ray_gpu_task_renders_on_the_gpu_ray_assigned(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[3])}
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tasks = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(t["gpu_ids"][0] for t in tasks) == [0, 1, 2, 3]  # Ray gave each task its own GPU ...
    for t in tasks:
        assert t["visible"] == str(t["gpu_ids"][0])                  # ... through CUDA_VISIBLE_DEVICES
        assert t["egl_gpu"] == t["gpu_ids"][0], t                    # and it renders on that GPU
