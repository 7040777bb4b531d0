"""The ``Location`` interface every store file goes through, and the helpers its two implementations
(``schemas/storage_local.py``: a folder; ``schemas/storage_object.py``: an object-store prefix) share:
keys, CRCs, and the mapping of OS and object-store errors to one-line messages. Which implementation a
path or URL gets, and what each guarantees: ``schemas/storage.py``."""

from __future__ import annotations

import contextlib
import errno
import json
import warnings
from concurrent.futures import ThreadPoolExecutor

from pipeline.errors import UserError, storage_error

LOCAL_SCHEMES = ("", "file")
# zarrs rebuilds an obstore store in its own Rust copy of object_store and says so once per array opened
warnings.filterwarnings("ignore", message="Successfully reconstructed a store", category=RuntimeWarning)
READ_THREADS = 32  # concurrent GETs of read_many on an object store


def is_url(where) -> bool:
    """True for an object-store URL (``s3://...``); False for a path or a ``file://`` URL."""
    text = str(where)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() not in LOCAL_SCHEMES and "/" not in scheme


def join(*parts: str) -> str:
    """Keys are '/'-separated and relative to the location's root."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def file_crc(data: bytes) -> str:
    """CRC-32C of a whole file as 8 hex digits (what shard markers record per shard file)."""
    import google_crc32c  # zarr-python's own dependency for the crc32c codec

    return f"{google_crc32c.value(bytes(data)):08x}"


# --- errors --------------------------------------------------------------------------------------

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
