"""Where a store's files live: a local folder or an object-store prefix, behind one small interface.

Every read, write, list and delete of a store file (Zarr metadata and shard files, manifest,
markers, journals, the sample index) goes through a ``Location``, made by ``open_location(where)``:

* a path (or ``file://`` URL) -> ``LocalLocation``: a write is a temp file in the same folder,
  ``fsync``, rename, and an ``fsync`` of the folder, so a reader (or a node that lost power) sees the
  old file or the whole new one; ``lock`` is an exclusive ``flock``.
* ``s3://``, ``gs://``, ``az://``, ``http(s)://``, ``memory://`` (any URL obstore knows) ->
  ``ObjectLocation``: a write is one PUT of the whole object (atomic on S3, GCS and Azure: no rename
  exists or is needed); ``create`` is a conditional PUT (``If-None-Match: *``); ``lock`` is a lease
  object taken with a conditional PUT and renewed with ``If-Match`` on its ETag.

The object-store layer is obstore (the Rust ``object_store`` crate: S3, GCS, Azure, HTTP); Zarr
reads the same objects through ``zarr.storage.ObjectStore``, which the ``zarrs`` codec pipeline
also reads natively. Credentials come only from the usual environment: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, web identity and instance or container roles,
``AWS_REGION``, ``AWS_ENDPOINT_URL`` (an S3-compatible server; ``AWS_ALLOW_HTTP=true`` for plain
http), ``GOOGLE_APPLICATION_CREDENTIALS`` / ``GOOGLE_SERVICE_ACCOUNT``, ``AZURE_STORAGE_*``; with
``AWS_PROFILE`` set (and no key in the environment) boto3's own chain reads ``~/.aws`` profiles.
Nothing here writes a credential anywhere.

Errors that no retry fixes are raised as ``pipeline.errors.StorageError`` with one line naming
the output: ``NoSpaceLeft`` (ENOSPC, EDQUOT, a bucket quota) and ``WriteRefused`` (EACCES, EPERM,
EROFS, a bucket that answers AccessDenied or rejects the credentials).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.errors import NoSpaceLeft, UserError, WriteRefused

LOCAL_SCHEMES = ("", "file")
# zarrs rebuilds an obstore store in its own Rust copy of object_store and says so once per array opened
warnings.filterwarnings("ignore", message="Successfully reconstructed a store", category=RuntimeWarning)
READ_THREADS = 32  # concurrent GETs of read_many on an object store


def is_url(where) -> bool:
    """True for an object-store URL (``s3://...``); False for a path or a ``file://`` URL."""
    text = str(where)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() not in LOCAL_SCHEMES and "/" not in scheme


def open_location(where) -> Location:
    """The ``Location`` of ``where``: a Location (returned as is), a path, or a URL."""
    if isinstance(where, Location):
        return where
    text = os.fspath(where) if isinstance(where, os.PathLike) else str(where)
    if text.startswith("file://"):
        return LocalLocation(Path(text[len("file://"):]))
    if is_url(text):
        return ObjectLocation(text)
    return LocalLocation(Path(text))


def join(*parts: str) -> str:
    """Keys are '/'-separated and relative to the location's root."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def file_crc(data: bytes) -> str:
    """CRC-32C of a whole file as 8 hex digits (what shard markers record per shard file)."""
    import google_crc32c  # zarr-python's own dependency for the crc32c codec

    return f"{google_crc32c.value(bytes(data)):08x}"


# --- errors --------------------------------------------------------------------------------------

_QUOTA_WORDS = ("quotaexceeded", "quota exceeded", "storagefull", "insufficientstorage", "xminiostoragefull",
                "storagequotaexceeded", "insufficient storage")


def storage_error(e: BaseException, where: str) -> Exception | None:
    """The one-line StorageError for an error no retry fixes (``where``: the store as the user
    named it), or None when ``e`` is something else."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceLeft(f"no space left on the device holding {where}")
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "read-only file system" if e.errno == errno.EROFS else "permission denied"
        return WriteRefused(f"{where} refuses writes: {why}")
    name = type(e).__name__
    text = str(e).lower()
    if name in ("PermissionDeniedError", "UnauthenticatedError") or "accessdenied" in text:
        return WriteRefused(f"the bucket holding {where} refuses writes: access denied "
                            "(check the credentials in the environment: AWS_*, AWS_PROFILE, GOOGLE_*, AZURE_*)")
    if any(w in text.replace(" ", "") or w in text for w in _QUOTA_WORDS):
        return NoSpaceLeft(f"no space left in the bucket holding {where} (quota exceeded)")
    if "nosuchbucket" in text:
        return WriteRefused(f"{where}: the bucket does not exist")
    return None


def read_error(e: BaseException, where: str) -> UserError | None:
    """The one-line UserError for a store that cannot be read (credentials, a missing bucket), or None."""
    name, text = type(e).__name__, str(e).lower()
    if "nosuchbucket" in text:
        return UserError(f"{where}: the bucket does not exist")
    if name in ("PermissionDeniedError", "UnauthenticatedError") or "accessdenied" in text or (
            isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM)):
        return UserError(f"cannot read {where}: access denied (check the credentials in the environment: "
                         "AWS_*, AWS_PROFILE, GOOGLE_*, AZURE_*)")
    return None


@contextlib.contextmanager
def mapped_errors(where: str):
    """Re-raise storage errors no retry fixes as one-line StorageErrors naming ``where``."""
    try:
        yield
    except Exception as e:
        mapped = storage_error(e, where)
        if mapped is None:
            raise
        raise mapped from None


def copy_all(src, dst, threads: int = 16) -> int:
    """Copy every file of store ``src`` to ``dst`` (paths, URLs or Locations; e.g. upload a local store
    to a bucket); returns the bytes copied. The manifest goes last, so an interrupted copy is not a
    finished store."""
    src, dst = open_location(src), open_location(dst)
    keys = sorted(src.list(""), key=lambda k: k == "manifest.json")

    def one(key: str) -> int:
        data = src.read_bytes(key)
        dst.write_bytes(key, data)
        return len(data)

    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(one, keys[:-1]))
    return total + (one(keys[-1]) if keys else 0)


# --- the interface -------------------------------------------------------------------------------

class Location:
    """A store's root. Keys are '/'-separated paths relative to it (``"_shards/0000003.json"``)."""

    url: str
    is_local: bool

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    # reads
    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if absent."""
        raise NotImplementedError

    def read_range(self, key: str, start: int, end: int) -> bytes:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix`` (a folder, recursively): key -> size in bytes."""
        raise NotImplementedError

    def read_many(self, keys: list[str]) -> list[bytes | None]:
        """Bytes of each key (None where absent), read concurrently on object stores."""
        def one(k):
            try:
                return self.read_bytes(k)
            except FileNotFoundError:
                return None
        if len(keys) < 4:
            return [one(k) for k in keys]
        with ThreadPoolExecutor(self.read_threads) as pool:
            return list(pool.map(one, keys))

    read_threads = 4

    def read_json(self, key: str):
        return json.loads(self.read_bytes(key))

    def read_json_or_none(self, key: str):
        try:
            return self.read_json(key)
        except FileNotFoundError:
            return None

    # writes (each raises a StorageError when the device or bucket refuses)
    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data`` atomically and durably."""
        raise NotImplementedError

    def write_json(self, key: str, obj) -> None:
        self.write_bytes(key, json.dumps(obj).encode())

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False if it does."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""
        raise NotImplementedError

    def remove_all(self) -> None:
        """Remove everything under the root (the root itself too, where it is a folder)."""
        raise NotImplementedError

    def is_empty(self) -> bool:
        raise NotImplementedError

    def lock(self, key: str, wait_s: float):
        """Context manager: exclusive hold of ``key`` among all processes and nodes, waiting up to
        ``wait_s`` for another holder (RuntimeError after that). Yields a callable that says whether
        the hold is still ours (an object-store lease can be lost to a holder that stopped renewing)."""
        raise NotImplementedError

    def zarr_store(self, read_only: bool = True):
        """A zarr-python store of the root (LocalStore or ObjectStore)."""
        raise NotImplementedError

    def sync(self) -> None:
        """Make everything written so far durable (local: fsync files and folders written by other
        libraries, e.g. zarr's metadata). Object stores: nothing to do (a PUT is durable)."""


# --- local folder --------------------------------------------------------------------------------

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
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                _fsync_dir(path.parent)
            finally:
                tmp.unlink(missing_ok=True)

    def create(self, key: str, data: bytes) -> bool:
        path = self.path(key)
        with mapped_errors(self.url):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)  # atomic create-if-absent with the whole content
                except FileExistsError:
                    return False
                _fsync_dir(path.parent)
                return True
            finally:
                tmp.unlink(missing_ok=True)

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


# --- object store --------------------------------------------------------------------------------

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
