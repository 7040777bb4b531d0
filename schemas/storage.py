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

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.errors import storage_error  # noqa: F401  (re-exported: the storage layer's one message)
from schemas.location import (  # noqa: F401  (re-exported: the interface and its helpers)
    LOCAL_SCHEMES,
    READ_THREADS,
    Location,
    file_crc,
    is_url,
    join,
    mapped_errors,
    read_error,
)
from schemas.storage_local import LocalLocation
from schemas.storage_object import ObjectLocation


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
