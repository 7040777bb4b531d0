"""The sample index: which rows of a store a reader serves, written once with the store.

Reading every shard marker to find the valid rows costs one read per shard and keeps every
record (keys, attributes) in memory: 1.15 s and +138 MB at 80K samples, ~1.4 GB per copy at 800K,
pickled into every DataLoader worker. The index is built from the markers once, at the end of a
run (``pipeline.engine.runner``), and written beside them::

    STORE/_index/index.json        {"format", "id", "nonce", "samples", "items", "shards", "failed",
                                    "corrupt": [{"shard", "reason"}], "row_dtype", "built"}; written
                                    last: the index exists when this file does
    STORE/_index/<id>.samples.npz  per valid sample (shard order, then marker order):
                                    rows  uint32 (uint64 past 2^32 rows)  its row in every array
                                    item  uint32                          its item number
                                    and per item: hash uint64, the first 8 bytes of SHA-256 of the
                                    item key read big-endian (``schemas.split.key_hash`` * 2**64):
                                    the held-out split needs no key strings
    STORE/_index/<id>.keys.npz     the item keys: offsets uint64 [items + 1], blob uint8 (UTF-8);
                                    read only when a key is asked for (evaluation, previews)

A reader reads ``index.json`` and the samples file (two reads; 8 bytes per sample and 8 per item:
~6.4 MB at 800K samples) and keeps only ``rows`` and ``item`` of its side of the split. Per-sample
attributes stay in the markers and are read when asked for (``StoreReader.attrs``).

The index is valid for the store creation it names (``nonce``) and only until the next run
writes: a run that will write deletes ``index.json`` before its first task and rebuilds the index
at its end, so a store whose last run was interrupted has none, and readers then build the same
arrays from the markers themselves (``build`` without writing).

Verification. A marker records ``[nbytes, crc32c]`` of each array's shard file
(``pipeline.engine.shard_writer``). Building the index lists every array's files (13 listings,
1000 files per request on an object store) and leaves out a shard whose file is missing or of
another size than its marker says, reporting it in ``corrupt`` (``inspect`` shows it;
``--retry-failed`` redoes it). ``verify_files(deep=True)`` also checks each file's CRC-32C
(``inspect --verify``: reads the whole store). A marker that cannot be parsed is corrupt too.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from array import array
from dataclasses import dataclass, field

import numpy as np

from schemas.storage import Location, file_crc, join, open_location

INDEX_DIR = "_index"
INDEX_JSON = f"{INDEX_DIR}/index.json"
FORMAT = 1
SHARDS_DIR = "_shards"
MARKER_BATCH = 512  # markers read (concurrently) and folded into the arrays at a time: bounded memory


def marker_shards(loc: Location) -> set[int]:
    """Shard indices that have a completion marker (one listing of ``_shards/``)."""
    if loc.is_local:
        names = loc.names(SHARDS_DIR)
    else:
        names = [k.rpartition("/")[2] for k in loc.list(SHARDS_DIR)]
    return {int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()}


def key_hashes(keys: list[str]) -> np.ndarray:
    """uint64 per key: SHA-256 of the UTF-8 key, first 8 bytes big-endian (``schemas.split``)."""
    return np.fromiter((int.from_bytes(hashlib.sha256(k.encode("utf-8")).digest()[:8], "big") for k in keys),
                       dtype=np.uint64, count=len(keys))


def hash_fraction(h: np.ndarray) -> np.ndarray:
    """u in [0, 1) from the uint64 hashes: exactly ``schemas.split.key_hash`` (int / 2**64, one rounding)."""
    return h.astype(np.float64) / 2.0**64


@dataclass
class SampleIndex:
    """The valid samples of a store. ``rows``/``item``: per sample; ``hashes``: per item."""

    rows: np.ndarray
    item: np.ndarray
    hashes: np.ndarray
    shards: int = 0                  # markers counted (complete shards, corrupt ones included)
    failed: int = 0                  # failed items in those markers
    corrupt: list = field(default_factory=list)   # [{"shard", "reason"}]
    loc: Location | None = None
    keys_key: str | None = None      # the keys file of a written index
    _keys: tuple | None = None       # (offsets, blob) once read

    def key(self, item: int) -> str:
        if self._keys is None:
            with np.load(io.BytesIO(self.loc.read_bytes(self.keys_key))) as z:
                self._keys = (z["offsets"], z["blob"].tobytes())
        offsets, blob = self._keys
        return blob[int(offsets[item]):int(offsets[item + 1])].decode("utf-8")

    def __getstate__(self):  # workers read keys themselves if they ever need one
        return {**self.__dict__, "_keys": None}


def shard_file_keys(loc: Location) -> dict[str, object]:
    """array name -> function shard -> file key, from the store's (consolidated) Zarr metadata."""
    import zarr

    group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
    out = {}
    for name, arr in group.arrays():
        encode, nd = arr.metadata.encode_chunk_key, len(arr.shape)
        out[name] = (lambda enc, n, nm: (lambda k: join(nm, enc((k,) + (0,) * (n - 1)))))(encode, nd, name)
    return out


def verify_files(loc: Location, markers: dict[int, dict], deep: bool = False, cache: dict | None = None
                 ) -> dict[int, str]:
    """Shards whose files are not what their markers record: shard -> one-line reason. Sizes come
    from one listing per array (kept in ``cache`` between calls); ``deep`` also reads each file and
    checks its CRC-32C."""
    cache = {} if cache is None else cache
    names = sorted({n for m in markers.values() for n in (m.get("files") or {})})
    if not names:
        return {}
    if "keys" not in cache:
        cache["keys"] = shard_file_keys(loc)
    keys = cache["keys"]
    bad: dict[int, str] = {}
    for name in names:
        if name not in keys:
            continue
        if name not in cache:
            cache[name] = loc.list(name)
        sizes = cache[name]
        for k, m in markers.items():
            rec = (m.get("files") or {}).get(name)
            if rec is None or k in bad:
                continue
            want, crc = int(rec[0]), rec[1]
            key = keys[name](k)
            have = sizes.get(key, 0)
            if have != want:
                bad[k] = (f"{name} shard file missing (marker: {want} bytes)" if have == 0 else
                          f"{name} shard file has {have} bytes, its marker says {want}")
            elif deep and want and file_crc(loc.read_bytes(key)) != crc:
                bad[k] = f"{name} shard file fails its CRC-32C check"
    return bad


def build(where, verify: bool = True, deep: bool = False) -> SampleIndex:
    """The index from the markers (read ``MARKER_BATCH`` at a time, concurrently on object stores),
    without writing it. Corrupt shards (unreadable marker; with ``verify``, files that differ from
    what the marker records) are left out and listed in ``corrupt``."""
    loc = open_location(where)
    shards = sorted(marker_shards(loc))
    rows, item, hashes, offsets = array("Q"), array("I"), array("Q"), array("Q", [0])
    blob = bytearray()  # item keys, UTF-8, back to back (no Python string per item is kept)
    corrupt: list[dict] = []
    failed = 0
    listing: dict = {}  # array listings, made once
    sha256 = hashlib.sha256
    for b in range(0, len(shards), MARKER_BATCH):
        batch = shards[b:b + MARKER_BATCH]
        markers: dict[int, dict] = {}
        for k, raw in zip(batch, loc.read_many([f"{SHARDS_DIR}/{k:07d}.json" for k in batch]), strict=True):
            try:
                markers[k] = json.loads(raw)
                markers[k]["items"]  # noqa: B018  (a marker without items is unreadable)
            except (TypeError, ValueError, KeyError):
                markers.pop(k, None)
                if raw is not None:  # None: removed since the listing (a store being replaced)
                    corrupt.append({"shard": k, "reason": "marker cannot be parsed"})
        bad = verify_files(loc, markers, deep, listing) if verify else {}
        for k in batch:
            if k in bad:
                corrupt.append({"shard": k, "reason": bad[k]})
                continue
            if k not in markers:
                continue
            for rec in markers[k]["items"]:
                if rec["ok"]:
                    key = rec["key"].encode("utf-8")
                    rows.extend(rec["rows"])
                    item.extend([len(hashes)] * len(rec["rows"]))
                    hashes.append(int.from_bytes(sha256(key).digest()[:8], "big"))
                    blob += key
                    offsets.append(len(blob))
                else:
                    failed += 1
        del markers
    row_arr = np.frombuffer(rows, dtype=np.uint64) if rows else np.zeros(0, np.uint64)
    row_arr = row_arr.astype(np.uint32) if not row_arr.size or row_arr.max() < 2**32 else row_arr.copy()
    index = SampleIndex(rows=row_arr, item=np.frombuffer(item, dtype=np.uint32).copy() if item else
                        np.zeros(0, np.uint32), hashes=np.frombuffer(hashes, dtype=np.uint64).copy() if hashes else
                        np.zeros(0, np.uint64), shards=len(shards), failed=failed,
                        corrupt=sorted(corrupt, key=lambda c: c["shard"]), loc=loc)
    index._keys = (np.frombuffer(offsets, dtype=np.uint64).copy(), bytes(blob))
    return index


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write(where, index: SampleIndex, nonce: str | None) -> dict:
    """Write ``index`` into the store (the data files first, ``index.json`` last; files of an older
    index are removed afterwards). Returns the index.json record."""
    loc = open_location(where)
    ident = uuid.uuid4().hex[:12]
    samples_key, keys_key = f"{INDEX_DIR}/{ident}.samples.npz", f"{INDEX_DIR}/{ident}.keys.npz"
    offsets, blob = index._keys
    loc.write_bytes(samples_key, _npz(rows=index.rows, item=index.item, hash=index.hashes))
    loc.write_bytes(keys_key, _npz(offsets=offsets, blob=np.frombuffer(blob, np.uint8)))
    meta = {"format": FORMAT, "id": ident, "nonce": nonce, "samples": int(index.rows.size),
            "items": int(index.hashes.size), "shards": index.shards, "failed": index.failed,
            "corrupt": index.corrupt, "row_dtype": str(index.rows.dtype), "built": time.time()}
    loc.write_json(INDEX_JSON, meta)
    for key in loc.list(INDEX_DIR):
        if key != INDEX_JSON and ident not in key:
            loc.delete(key)
    return meta


def invalidate(where) -> None:
    """Remove the index (a run is about to write: readers fall back to the markers until it ends)."""
    open_location(where).delete(INDEX_JSON)


def is_current(where, nonce: str | None) -> bool:
    """A written index exists for this store creation."""
    meta = open_location(where).read_json_or_none(INDEX_JSON)
    return bool(meta) and meta.get("format") == FORMAT and meta.get("nonce") == nonce


def read(where, nonce: str | None) -> SampleIndex | None:
    """The written index if it is valid for this store creation (``nonce``), else None."""
    loc = open_location(where)
    meta = loc.read_json_or_none(INDEX_JSON)
    if not meta or meta.get("format") != FORMAT or meta.get("nonce") != nonce:
        return None
    try:
        raw = loc.read_bytes(f"{INDEX_DIR}/{meta['id']}.samples.npz")
    except FileNotFoundError:
        return None  # replaced between the two reads
    with np.load(io.BytesIO(raw)) as z:
        rows, item, hashes = z["rows"], z["item"], z["hash"]
    return SampleIndex(rows=rows, item=item, hashes=hashes, shards=int(meta["shards"]), failed=int(meta["failed"]),
                       corrupt=list(meta.get("corrupt", [])), loc=loc, keys_key=f"{INDEX_DIR}/{meta['id']}.keys.npz")


def load(where, nonce: str | None) -> SampleIndex:
    """The written index, or one built from the markers (an interrupted run left none)."""
    return read(where, nonce) or build(where)
