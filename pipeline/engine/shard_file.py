"""Encode and decode Zarr v3 shard files (``sharding_indexed``) ourselves, chunk bytes only.

Why: zarr-python writes one row of a sharded array by reading the shard file, merging and
rewriting it, and first compares every chunk with the fill value; for an Objaverse sample
that was ~0.15 s on top of the 0.16 s of compression (``benchmarks/render_objaverse.py``).
A shard task instead compresses each row as soon as it is made (``encode_rows``) and writes
each array's shard file once (``pack``), so no chunk is decoded or compressed twice.

The bytes are exactly what the specification says, read back by zarr-python, tensorstore
and zarrs (tests/pipeline/engine/test_shard_file.py):

  * inner chunk: the array's inner codec chain: ``bytes`` (little endian, C order), then each
    bytes-to-bytes codec in order (``blosc``, ``zstd``, ``crc32c``); a chunk equal to the
    fill value everywhere (all bytes zero, fill 0) is not stored ("write_empty_chunks": False);
    inner chunks tile the shard exactly and a row is one inner chunk deep (as the stores'
    layouts make them; ``ShardSpec.of`` is None otherwise);
  * index: uint64 (offset, nbytes) per inner chunk in C order of the shard's chunk grid,
    2^64-1 for both where a chunk is absent, encoded with ``bytes`` (little endian) then
    ``crc32c`` (4 bytes, little endian), placed at the end (or the start) of the file.

``ShardSpec.of(array)`` reads all of this from the array's own metadata, so a store made
with other codec settings is written with its own. A chain this module does not know (an
array-to-array codec such as ``transpose``, a codec beyond those three) gives
``ShardSpec.of`` = None, and the caller writes that array through zarr-python instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

ABSENT = np.uint64(2**64 - 1)
_INDEX_ENTRY = 16  # bytes per chunk in the index: offset, nbytes (uint64 each)
_CRC = 4


@dataclass(frozen=True)
class ShardSpec:
    """How one sharded array stores its shards. ``shard``/``chunk``: shapes (sample axis
    first); ``grid``: inner chunks per shard along each axis; ``encoders``: numcodecs objects
    applied in order after the bytes codec; ``key``: chunk coords -> path relative to the
    array folder; ``index_at_end``: the index's place in the file. Files are read and written
    through ``loc`` (``schemas.storage``: a local folder or an object-store prefix)."""

    loc: object            # schemas.storage.Location of the store (or of the array folder)
    prefix: str            # the array's key prefix in ``loc`` ("rgb"; "" when loc is the array folder)
    dtype: np.dtype
    shard: tuple
    chunk: tuple
    grid: tuple
    encoders: tuple
    key: object
    index_at_end: bool

    @classmethod
    def of(cls, array, where, prefix: str = "") -> ShardSpec | None:
        """The spec of a zarr-python v3 ``Array`` stored under key ``prefix`` of ``where`` (a
        Location, path or URL; a path may be the array's own folder with ``prefix`` ""), or None if
        its codecs are not ones this module writes (the caller then writes it through zarr-python)."""
        from numcodecs import Blosc, Zstd
        from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

        from schemas.storage import open_location

        meta = array.metadata
        if getattr(meta, "zarr_format", None) != 3 or len(meta.codecs) != 1:
            return None
        sharding = meta.codecs[0]
        if not isinstance(sharding, ShardingCodec) or np.any(np.asarray(meta.fill_value) != 0):
            return None
        inner = list(sharding.codecs)
        if not inner or not isinstance(inner[0], BytesCodec) or not _little(inner[0]):
            return None
        index = list(sharding.index_codecs)
        if (len(index) != 2 or not isinstance(index[0], BytesCodec) or not _little(index[0])
                or not isinstance(index[1], Crc32cCodec)):
            return None
        encoders = []
        for codec in inner[1:]:
            if isinstance(codec, BloscCodec):
                shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[codec.shuffle.value]
                encoders.append(Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle,
                                      blocksize=codec.blocksize, typesize=codec.typesize))
            elif isinstance(codec, ZstdCodec):
                encoders.append(Zstd(level=codec.level, checksum=codec.checksum))
            elif isinstance(codec, Crc32cCodec):
                encoders.append(_Crc32c())
            else:
                return None
        shard = tuple(meta.chunk_grid.chunk_shape)
        chunk = tuple(sharding.chunk_shape)
        if chunk[0] != 1 or any(s % c for s, c in zip(shard, chunk, strict=True)) or tuple(meta.shape[1:]) != shard[1:]:
            return None  # rows of one chunk each, chunks tiling the shard, one shard across a row
        return cls(loc=open_location(where), prefix=prefix, dtype=np.dtype(meta.dtype.to_native_dtype()).newbyteorder("<"),
                   shard=shard, chunk=chunk, grid=tuple(s // c for s, c in zip(shard, chunk, strict=True)),
                   encoders=tuple(encoders), key=meta.encode_chunk_key,
                   index_at_end=sharding.index_location.value == "end")

    def file_key(self, shard: int) -> str:
        """The key of shard ``shard``'s file (rows [shard*S, (shard+1)*S)) in ``loc``."""
        from schemas.storage import join

        return join(self.prefix, self.key((shard,) + (0,) * (len(self.shard) - 1)))

    def path(self, shard: int) -> Path:
        """The file of shard ``shard`` on a local store."""
        return self.loc.path(self.file_key(shard))

    def encode_row(self, row: int, value: np.ndarray) -> dict[tuple, bytes]:
        """Encoded inner chunks of one row (``row``: index inside the shard, 0..S-1) of
        ``value`` (one sample, the array's shape without the sample axis), keyed by their
        coords in the shard's chunk grid; all-fill chunks are left out."""
        value = np.asarray(value)
        sample_shape = self.shard[1:]
        if value.shape != sample_shape:
            raise ValueError(f"row shape {value.shape}, array rows are {sample_shape}")
        inner = self.chunk[1:]
        out = {}
        for coords in product(*(range(g) for g in self.grid[1:])):
            part = value[tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, inner, strict=True))]
            raw = np.ascontiguousarray(part, dtype=self.dtype)
            if not _nonzero(raw):
                continue
            data = raw.view(np.uint8).reshape(-1)
            for enc in self.encoders:
                data = enc.encode(data)
            out[(row, *coords)] = bytes(data)
        return out

    def pack(self, chunks: dict[tuple, bytes]) -> bytes | None:
        """The shard file holding ``chunks`` (coords -> encoded bytes), or None if empty (no
        file: the whole shard reads as fill)."""
        if not chunks:
            return None
        index = np.full((*self.grid, 2), ABSENT, dtype="<u8")
        n_index = math.prod(self.grid) * _INDEX_ENTRY + _CRC
        offset = 0 if self.index_at_end else n_index
        body = []
        for coords in sorted(chunks):
            data = chunks[coords]
            index[coords] = (offset, len(data))
            body.append(data)
            offset += len(data)
        raw_index = index.tobytes()
        index_bytes = raw_index + _crc32c(raw_index)
        return b"".join(body + [index_bytes]) if self.index_at_end else b"".join([index_bytes] + body)

    def unpack(self, data: bytes) -> dict[tuple, bytes]:
        """Encoded chunks of a shard file (coords -> bytes); raises ValueError on a bad index."""
        n_index = math.prod(self.grid) * _INDEX_ENTRY + _CRC
        if len(data) < n_index:
            raise ValueError("shard file shorter than its index")
        index_bytes = data[-n_index:] if self.index_at_end else data[:n_index]
        if _crc32c(index_bytes[:-_CRC]) != index_bytes[-_CRC:]:
            raise ValueError("shard index checksum mismatch")
        index = np.frombuffer(index_bytes[:-_CRC], dtype="<u8").reshape(*self.grid, 2)
        out = {}
        for coords in product(*(range(g) for g in self.grid)):
            start, size = index[coords]
            if start != ABSENT:
                out[coords] = data[int(start):int(start) + int(size)]
        return out

    def read(self, shard: int) -> dict[tuple, bytes]:
        """Encoded chunks in shard ``shard``'s file now ({} if there is none); ValueError if the
        file is corrupt (short, or its index fails its checksum)."""
        try:
            return self.unpack(self.loc.read_bytes(self.file_key(shard)))
        except FileNotFoundError:
            return {}

    def write(self, shard: int, chunks: dict[tuple, bytes]) -> list:
        """Replace shard ``shard``'s file atomically and durably (``Location.write_bytes``: temp file,
        fsync and rename on a filesystem, one PUT on an object store; no file if empty). Returns
        ``[nbytes, crc32c]`` of the file (``[0, None]``: no file), which the shard's marker records so
        that readers can check the file is the one written."""
        from schemas.storage import file_crc, join

        if not self.loc.exists(join(self.prefix, "zarr.json")):  # the store was removed or replaced
            raise FileNotFoundError(f"array {self.prefix or self.loc} is gone")
        key = self.file_key(shard)
        data = self.pack(chunks)
        if data is None:
            self.loc.delete(key)
            return [0, None]
        self.loc.write_bytes(key, data, sweep=True)  # sweep: temp files of a writer killed mid-write
        return [len(data), file_crc(data)]


def _little(codec) -> bool:
    return codec.endian is None or codec.endian.value == "little"


def _nonzero(raw: np.ndarray) -> bool:
    """Any byte of the C-contiguous array not zero (the fill value's bytes)."""
    flat = raw.reshape(-1).view(np.uint8)
    if flat.size and (flat[0] or flat[-1] or flat[flat.size // 2]):
        return True  # a picture's corner or centre: no scan
    n8 = flat.size - flat.size % 8
    return bool(flat[:n8].view(np.uint64).any() or flat[n8:].any())


def _crc32c(data) -> bytes:
    import google_crc32c  # zarr-python's own dependency for the crc32c codec

    return np.uint32(google_crc32c.value(bytes(data))).astype("<u4").tobytes()


class _Crc32c:
    """The ``crc32c`` bytes-to-bytes codec: the data, then its CRC-32C (little endian)."""

    def encode(self, data) -> bytes:
        data = bytes(data)
        return data + _crc32c(data)
