"""A store under a prefix of a bucket (S3, GCS, Azure, any S3-compatible server), through obstore.

A write is one PUT of the whole object (atomic: no temp object, no rename); ``create`` is a
conditional PUT (``If-None-Match: *``); the lock is a lease object (``ObjectLocation.lock``).
Credentials come from the environment only (``schemas.storage``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from pathlib import Path

from pipeline.errors import UserError
from schemas.location import READ_THREADS, Location, mapped_errors

LEASE_RENEW_S = 10.0   # a lock holder rewrites its lease this often
LEASE_STALE_S = 60.0   # a lease whose ETag has not changed for this long (waiter's own clock) is taken over


def _obstore_from_url(url: str):
    try:
        from obstore.store import from_url
    except ImportError:
        raise UserError(f"{url}: object stores need obstore (pip install 'obstore>=0.12'; a project dependency)") \
            from None
    kwargs = {}
    scheme = url.partition("://")[0].lower()
    if scheme in ("s3", "s3a") and os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_ACCESS_KEY_ID"):
        try:  # ~/.aws profiles, SSO: boto3's own credential chain
            from obstore.auth.boto3 import Boto3CredentialProvider

            kwargs["credential_provider"] = Boto3CredentialProvider()
        except ImportError:
            pass  # obstore's own chain (environment, web identity, instance role)
    try:
        return from_url(url, **kwargs)
    except Exception as e:  # noqa: BLE001  (bad URL, unknown option): one line
        raise UserError(f"cannot open {url}: {str(e).splitlines()[0][:200]}") from None


def _process_space() -> dict:
    """Where this process's pid means something: this kernel's boot and this pid namespace."""
    out = {}
    with contextlib.suppress(OSError):
        out["boot"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        out["pidns"] = os.readlink("/proc/self/ns/pid")
    return out


def _holder_is_dead(loc: ObjectLocation, key: str) -> bool:
    """The lease's holder ran in this kernel and pid namespace and its process is gone (a killed
    worker on this node: no need to wait ``LEASE_STALE_S``). False when unknown."""
    try:
        holder = json.loads(loc.read_bytes(key))
    except (OSError, ValueError):
        return False
    here = _process_space()
    if not here or any(holder.get(k) != v for k, v in here.items()) or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


class ObjectLocation(Location):
    """A prefix in a bucket (S3, GCS, Azure, or any S3-compatible server), through obstore.

    The obstore client is made lazily in each process (never pickled: Ray workers and DataLoader
    workers open their own connection pool from the URL and the environment)."""

    is_local = False
    read_threads = READ_THREADS

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._store = None

    def __getstate__(self):
        return {"url": self.url, "_store": None}

    @property
    def store(self):
        if self._store is None:
            self._store = _obstore_from_url(self.url)
        return self._store

    def read_bytes(self, key: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self.store, key).bytes())
        except FileNotFoundError:
            raise
        except Exception as e:
            if type(e).__name__ == "NotFoundError":
                raise FileNotFoundError(f"{self.url}/{key}") from None
            raise

    def read_range(self, key: str, start: int, end: int) -> bytes:
        import obstore

        return bytes(obstore.get_range(self.store, key, start=start, end=end))

    def exists(self, key: str) -> bool:
        import obstore

        try:
            obstore.head(self.store, key)
            return True
        except FileNotFoundError:
            return False
        except Exception as e:
            if type(e).__name__ == "NotFoundError":
                return False
            raise

    def list(self, prefix: str = "") -> dict[str, int]:
        import obstore

        out = {}
        pre = prefix.strip("/") + "/" if prefix.strip("/") else None
        for chunk in obstore.list(self.store, pre, chunk_size=1000):
            for meta in chunk:
                out[meta["path"]] = int(meta["size"])
        return out

    def write_bytes(self, key: str, data: bytes, sweep: bool = False) -> None:
        import obstore

        with mapped_errors(self.url):
            obstore.put(self.store, key, bytes(data), use_multipart=False)

    def create(self, key: str, data: bytes) -> bool:
        import obstore

        with mapped_errors(self.url):
            try:
                obstore.put(self.store, key, bytes(data), mode="create", use_multipart=False)
                return True
            except Exception as e:
                if type(e).__name__ in ("AlreadyExistsError", "PreconditionError"):
                    return False
                raise

    def delete(self, key: str) -> None:
        import obstore

        with mapped_errors(self.url):
            try:
                obstore.delete(self.store, key)
            except FileNotFoundError:
                pass

    def remove_all(self) -> None:
        import obstore

        keys = list(self.list(""))
        with mapped_errors(self.url):
            for i in range(0, len(keys), 1000):
                obstore.delete(self.store, keys[i:i + 1000])

    def is_empty(self) -> bool:
        import obstore

        for chunk in obstore.list(self.store, None, chunk_size=1):
            if chunk:
                return False
        return True

    @contextlib.contextmanager
    def lock(self, key: str, wait_s: float):
        """A lease object: created with a conditional PUT, renewed every ``LEASE_RENEW_S`` with
        ``If-Match`` on its ETag by a thread of the holder; a waiter takes it over (again with
        ``If-Match``, so only one waiter wins) once its ETag has not changed for ``LEASE_STALE_S`` on
        the waiter's own clock (no clock is compared across machines), or at once when the holder
        ran on this machine, in this pid namespace, and its process is gone (a killed worker). A holder whose renewal fails
        (another took over) sees ``held() == False`` and stops writing."""
        import obstore

        owner = {"holder": uuid.uuid4().hex, "pid": os.getpid(), "host": os.uname().nodename, **_process_space()}

        def body() -> bytes:
            return json.dumps({**owner, "t": time.time()}).encode()

        deadline = time.monotonic() + wait_s
        seen, seen_since = None, time.monotonic()
        with mapped_errors(self.url):
            while True:
                try:
                    etag = obstore.put(self.store, key, body(), mode="create")["e_tag"]
                    break
                except Exception as e:
                    if type(e).__name__ not in ("AlreadyExistsError", "PreconditionError"):
                        raise
                try:
                    current = obstore.head(self.store, key)["e_tag"]
                except FileNotFoundError:
                    continue  # released meanwhile
                if current != seen:
                    seen, seen_since = current, time.monotonic()
                    dead = _holder_is_dead(self, key)
                else:
                    dead = False
                if dead or time.monotonic() - seen_since > LEASE_STALE_S:
                    try:
                        etag = obstore.put(self.store, key, body(), mode={"e_tag": current})["e_tag"]
                        break
                    except Exception as e:
                        if type(e).__name__ not in ("PreconditionError", "NotFoundError", "FileNotFoundError"):
                            raise
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another process has held {key} for too long")
                time.sleep(min(2.0, LEASE_RENEW_S / 4))
        state = {"etag": etag, "held": True}
        stop = threading.Event()

        def renew():
            while not stop.wait(LEASE_RENEW_S):
                try:
                    state["etag"] = obstore.put(self.store, key, body(), mode={"e_tag": state["etag"]})["e_tag"]
                except Exception:  # noqa: BLE001  (taken over, or the network is gone: not ours any more)
                    state["held"] = False
                    return

        thread = threading.Thread(target=renew, daemon=True, name=f"lease {key}")
        thread.start()
        try:
            yield lambda: state["held"]
        finally:
            stop.set()
            thread.join(timeout=5)
            if state["held"]:
                with contextlib.suppress(Exception):
                    obstore.delete(self.store, key)

    def zarr_store(self, read_only: bool = True):
        from zarr.storage import ObjectStore

        return ObjectStore(self.store, read_only=read_only)
