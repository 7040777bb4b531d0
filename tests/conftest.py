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

# The object-store tests use a local S3-compatible server (tests/s3_server.py). Its address is set in
# the environment now, before any Ray worker starts, so workers inherit it like a user's AWS_* settings
# (and no test can reach a real bucket with a developer's own credentials).
from tests.s3_server import LocalS3, free_port, s3_env  # noqa: E402

S3_PORT = free_port()
os.environ.update(s3_env(S3_PORT))
os.environ.pop("AWS_PROFILE", None)


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


@pytest.fixture(scope="session")
def s3_bucket():
    """A bucket on the session's local S3 server (started on first use): its ``s3://`` URL."""
    with LocalS3(S3_PORT) as server:
        yield server.make_bucket("manivideo-test")


@pytest.fixture
def s3_prefix(s3_bucket, request) -> str:
    """A fresh prefix in the test bucket for one test: ``s3://manivideo-test/<test name>-<n>``."""
    import re
    import uuid

    return f"{s3_bucket}/{re.sub(r'[^A-Za-z0-9_-]', '-', request.node.name)[:40]}-{uuid.uuid4().hex[:6]}"
