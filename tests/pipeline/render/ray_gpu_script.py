"""A local Ray instance that advertises 4 GPUs (this machine has none): four tasks that ask for
one GPU each report the environment Ray gives them and the EGL device ``egl.choose_egl_device``
picks there. Run as a script (its own process: the test session already has a Ray driver):

    python tests/pipeline/render/ray_gpu_script.py

What NVIDIA's EGL reports inside such a task is simulated from its documented behaviour (the
test's ``egl_table``); everything else (Ray's GPU assignment and environment) is real.
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

# a 4-GPU node whose EGL lists its devices in an order of its own, with Mesa's software device
EGL_ORDER = [3, 2, None, 1, 0]  # EGL device i is physical GPU EGL_ORDER[i] (None: software)


def egl_table(visible: str | None) -> list:
    """``EGL_CUDA_DEVICE_NV`` per EGL device as NVIDIA's EGL reports it in a process with this
    ``CUDA_VISIBLE_DEVICES``: the GPU's position among the visible ones; None if hidden or software."""
    shown = [int(x) for x in visible.split(",") if x.strip()] if visible is not None else [0, 1, 2, 3]
    return [shown.index(g) if g in shown else None for g in EGL_ORDER]


def task():
    import ray

    from pipeline.render.egl import choose_egl_device

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    chosen = choose_egl_device(egl_table(visible), visible)
    import time

    time.sleep(1.0)  # hold the GPU so the four tasks run at once
    return {"visible": visible, "gpu_ids": [int(g) for g in ray.get_gpu_ids()], "egl": chosen,
            "egl_gpu": EGL_ORDER[chosen]}


def main() -> list:
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rg", dir="/tmp")
    import ray

    try:
        ray.init(num_cpus=4, num_gpus=4, include_dashboard=False, logging_level="ERROR")
        remote = ray.remote(num_cpus=1, num_gpus=1)(task)
        return ray.get([remote.remote() for _ in range(4)])
    finally:
        ray.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main()))
