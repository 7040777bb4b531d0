"""A local S3-compatible server for tests and benchmarks: moto's server mode (``moto[server]``, a dev
dependency) in a subprocess on 127.0.0.1. Nothing leaves the machine.

The client side is configured only through the usual environment (``S3_ENV``): the same variables a
user sets for a real bucket or an S3-compatible server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(port: int) -> dict[str, str]:
    """The environment that points obstore (and boto3) at the server on ``port``."""
    return {"AWS_ACCESS_KEY_ID": "manivideo-test", "AWS_SECRET_ACCESS_KEY": "manivideo-test",
            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true",
            "AWS_EC2_METADATA_DISABLED": "true"}


class LocalS3:
    """``with LocalS3(port) as s3: s3.make_bucket("b")``: moto's S3 server on 127.0.0.1:``port``.
    ``server_env``: extra environment of the server (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT``)."""

    def __init__(self, port: int | None = None, server_env: dict | None = None):
        self.port = port or free_port()
        self.server_env = server_env or {}
        self.proc = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalS3:
        env = {**os.environ, **self.server_env}
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto's server exited at start (is moto[server] installed? pip install -e .[dev])")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto's server did not listen on port {self.port} within {timeout_s:g} s")

    def make_bucket(self, name: str) -> str:
        import boto3  # installed with moto

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="manivideo-test", aws_secret_access_key="manivideo-test").create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
