"""Shared fixtures: a real local Ray cluster, a real EGL context, generated test data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")
# Ray workers inherit the environment: let them import test-only step modules too.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole test session; the runner reuses it."""
    import ray

    from pipeline.engine.runner import _init_ray

    started = _init_ray(2, None)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def builtin_dir(tmp_path_factory) -> Path:
    """The built-in demo objects written as GLB files."""
    from pipeline.objaverse.sources.builtin import builtin_uids, write_builtin

    folder = tmp_path_factory.mktemp("builtin")
    for uid in builtin_uids():
        write_builtin(uid, folder)
    return folder
