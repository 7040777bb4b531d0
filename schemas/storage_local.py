"""A store in a folder on a POSIX filesystem (local, or shared by every node: NFS, Lustre, ...).

Writes are atomic and durable: a temp file in the same folder, ``fsync``, rename, and an ``fsync`` of
the folder, so a reader (or a node that lost power) sees the old file or the whole new one. The lock
is an exclusive ``flock``, released by the kernel when its holder exits. See ``schemas.storage``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
from pathlib import Path

from schemas.location import Location, join, mapped_errors


@contextlib.contextmanager
def _synced_temp(path: Path, data: bytes):
    """Yields a temp file beside ``path`` holding ``data``, fsynced (the caller renames or links it into
    place); it is removed on exit, so a failed write leaves no temp file behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalLocation(Location):
    """A folder on a POSIX filesystem (local or shared: NFS, Lustre, ...)."""

    is_local = True

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def read_range(self, key: str, start: int, end: int) -> bytes:
        with open(self.path(key), "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self.path(prefix)
        out = {}
        if not base.is_dir():
            return out
        for root, _, files in os.walk(base):
            rel = Path(root).relative_to(self.root).as_posix()
            for f in files:
                try:
                    out[join(rel if rel != "." else "", f)] = os.stat(os.path.join(root, f)).st_size
                except FileNotFoundError:
                    continue  # removed while listing
        return out

    def names(self, prefix: str) -> list[str]:
        """Names directly in folder ``prefix`` (cheap: one scandir)."""
        try:
            return [e.name for e in os.scandir(self.path(prefix))]
        except FileNotFoundError:
            return []

    def write_bytes(self, key: str, data: bytes, sweep: bool = False) -> None:
        """Temp file, fsync, rename, fsync of the folder. ``sweep``: first remove temp files of this
        key left by a writer killed mid-write (a glob of the key's folder: only for small folders)."""
        path = self.path(key)
        with mapped_errors(self.url):
            path.parent.mkdir(parents=True, exist_ok=True)
            if sweep:
                for stale in path.parent.glob(f".{path.name}.tmp*"):
                    stale.unlink(missing_ok=True)
            with _synced_temp(path, data) as tmp:
                os.replace(tmp, path)
                _fsync_dir(path.parent)

    def create(self, key: str, data: bytes) -> bool:
        path = self.path(key)
        with mapped_errors(self.url):
            path.parent.mkdir(parents=True, exist_ok=True)
            with _synced_temp(path, data) as tmp:
                try:
                    os.link(tmp, path)  # atomic create-if-absent with the whole content
                except FileExistsError:
                    return False
                _fsync_dir(path.parent)
                return True

    def delete(self, key: str) -> None:
        with mapped_errors(self.url):
            self.path(key).unlink(missing_ok=True)

    def remove_all(self) -> None:
        with mapped_errors(self.url):
            if self.root.exists():
                shutil.rmtree(self.root)

    def is_empty(self) -> bool:
        return not self.root.exists() or not any(self.root.iterdir())

    @contextlib.contextmanager
    def lock(self, key: str, wait_s: float):
        path = self.path(key)
        with mapped_errors(self.url):
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "a")
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"another process has held {key} for too long") from None
                    time.sleep(0.5)
            yield lambda: True  # a flock is released only when its holder exits
        finally:
            f.close()

    def zarr_store(self, read_only: bool = True):
        from zarr.storage import LocalStore

        return LocalStore(self.root, read_only=read_only)

    def sync(self) -> None:
        with mapped_errors(self.url):
            for root, _dirs, files in os.walk(self.root):
                for f in files:
                    fd = os.open(os.path.join(root, f), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                _fsync_dir(Path(root))
            _fsync_dir(self.root.parent)
