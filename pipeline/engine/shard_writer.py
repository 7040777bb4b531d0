"""Writing stores: layout, shard planning, sample writes, completion markers.

A store is one Zarr v3 group in a folder or under an object-store prefix (``schemas.storage``;
every file below is read and written through a ``Location``)::

    STORE/zarr.json              group; attributes = StoreLayout.to_attrs() (the contract), and the
                                 consolidated metadata of every array (one read opens the store)
    STORE/<array>/...            one Zarr array per contract array, N rows (samples) first,
                                 sharded S rows per shard, chunked per read (one frame/layer)
    STORE/manifest.json          the run: title, fingerprint, options, counts (written last
                                 at creation: a store without it is an unfinished creation)
    STORE/_shards/<k>.json       completion marker of shard k: one record per item
                                 (key, rows, ok, stage, reason, detail, seconds, attrs) and the
                                 [nbytes, crc32c] of each array's shard file ("files");
                                 readers see only rows of shards that have one
    STORE/_shards/<k>.journal    the shard's journal (start/end/flushed/retry lines) used to resume
                                 a shard inside a crashed or timed-out task; on an object store
                                 STORE/_journal/<k>/ (``pipeline.engine.journal``)
    STORE/_index/                the sample index (``schemas.index``), rebuilt at the end of a run
    STORE/failures.jsonl         all failed items (rebuilt from the markers at the end of a run)

One task owns one shard index k: it writes rows [k*S, (k+1)*S) of every array and then
the marker. Rows are compressed as items are made and each array's shard file is written once
(``ShardRows``, with our own ``shard_file`` encoder), atomically and durably (temp file, fsync,
rename on a filesystem; one PUT on an object store), before the marker, so a killed task (or a
node that loses power) never leaves a torn file or a marker without its data; an unmarked shard
is simply redone.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections import Counter
from pathlib import Path

import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.engine import shard_file
from pipeline.engine.journal import journal_key
from schemas import StoreLayout, validate_sample
from schemas.index import marker_shards
from schemas.reader import SHARDS_DIR
from schemas.storage import file_crc, mapped_errors, open_location
from schemas.store import SCHEMA_NAME

MANIFEST = "manifest.json"

def codecs_for(codec: str, ndim: int) -> tuple[list, list]:
    """(filters, compressors) for an array of ``ndim`` dims (sample axis included). All lossless.

    Only codecs of the Zarr v3 core specification (transpose, bytes, blosc, sharding_indexed,
    crc32c) and the registered ``zstd`` extension (zarr-developers/zarr-extensions), so any v3
    reader opens a store: zarr-python, tensorstore, zarrs (tests/schemas/test_codecs.py reads them
    with tensorstore, bit-identical). No numcodecs filters (``numcodecs.delta`` is registered but
    tensorstore cannot read it).

    "image": uint8 [..., H, W, 3] pictures (RGB, references, backgrounds, skeleton maps): blosc zstd,
    no shuffle. "normal": encoded normal maps: blosc's byte shuffle with a type size of 3 (one pixel)
    groups each channel of a block into one run, so the smooth planes of a surface reach zstd as
    smooth runs (2.7x smaller than unshuffled); blosc is a bytes-to-bytes codec, its ``typesize`` is
    the shuffle's element size (any v3 reader decodes it: the blosc header carries it). "depth":
    float16 maps, byte shuffle. "small": everything else, plain zstd.

    Levels and blocks are chosen for a writer that has one core per worker: blosc's clevel c runs
    zstd at level 2c-1 (c-blosc ``zstd_wrap_compress``), and 256 KiB blocks (instead of blosc's
    automatic 32-128 KiB) compress about as well as a level more. At these levels the pixel shuffle
    no longer helps RGB (2.25 MB shuffled, 2.24 MB not, and 20 % slower). Per 24 x 512^2 Objaverse
    sample of the five builtin objects, one core, MB = 10^6 bytes:

      =================================  ==========  ======  ==========  ======
      images / normals / depth           compress s  RGB MB  normals MB  sample
      =================================  ==========  ======  ==========  ======
      all clevel 5, auto blocks (v3.0)   0.36        1.85    0.66        3.26
      3 shuffled / 2 / 2, 256 KiB        0.14        2.25    0.74        3.81
      3 unshuffled / 2 / 2, 256 KiB      0.11        2.24    0.74        3.80
      2 unshuffled / 2 / 2, 256 KiB      0.08        2.34    0.74        3.93
      =================================  ==========  ======  ==========  ======

    (the third row is used). Geometry is lossless either way. A transpose codec (channels first)
    compresses like the shuffle but decodes 2.5x slower (an interleaving copy of the 245 MB of
    normal maps of an HOI clip). ``shard_file`` writes these chains itself.
    """
    block = 256 * 2**10
    if codec == "image":
        return [], [BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle", typesize=1, blocksize=block)]
    if codec == "normal":
        return [], [BloscCodec(cname="zstd", clevel=2, shuffle="shuffle", typesize=3, blocksize=block)]
    if codec == "depth":
        return [], [BloscCodec(cname="zstd", clevel=2, shuffle="shuffle", blocksize=block)]
    return [], [ZstdCodec(level=5)]


def plan_shards(n_samples: list[int], samples_per_shard: int) -> list[list[int]]:
    """Pack items (in order) into shards of at most S rows; an item never spans two shards.

    Returns, per shard, the item indices it holds. Deterministic in its inputs. (The runner
    uses ``plan.shard_bounds``, the same packing as an array of bounds.)
    """
    from pipeline.engine.plan import shard_bounds

    b = shard_bounds(n_samples, samples_per_shard).tolist()
    return [list(range(b[k], b[k + 1])) for k in range(len(b) - 1)]


def shard_rows(layout: StoreLayout, shard: int, n_samples: list[int], items: list[int]) -> list[list[int]]:
    """Rows of each item of a shard (items fill the shard's rows in order)."""
    row = shard * layout.samples_per_shard
    out = []
    for i in items:
        out.append(list(range(row, row + n_samples[i])))
        row += n_samples[i]
    return out


def is_store(out) -> bool:
    """True if ``out`` (a path, URL or Location) holds a manivideo store (finished creating or not)."""
    try:
        return open_location(out).read_json("zarr.json").get("attributes", {}).get("schema") == SCHEMA_NAME
    except (OSError, ValueError, AttributeError):
        return False


def create_store(out, layout: StoreLayout, n_shards: int, manifest: dict) -> None:
    """Create the group and every array (shape N = n_shards * S), consolidate the Zarr metadata
    (one read opens the group and its arrays: one GET on an object store), make it durable, and
    write the manifest last.

    ``out`` (a path, URL or Location) must be absent, empty, or a manivideo store (which is
    replaced); the caller checks.
    """
    loc = open_location(out)
    if not loc.is_empty():
        if not is_store(loc):
            raise RuntimeError(f"refusing to replace {loc}: not a manivideo store")
        loc.remove_all()
    if loc.is_local:
        loc.root.mkdir(parents=True)
    with mapped_errors(str(loc)):
        store = loc.zarr_store(read_only=False)
        group = zarr.open_group(store, mode="w", zarr_format=3, attributes=layout.to_attrs())
        S = layout.samples_per_shard
        n_rows = max(1, n_shards) * S
        for spec in layout.arrays:
            shape, chunk = layout.sample_shape(spec.name), layout.chunk_shape(spec.name)
            filters, compressors = codecs_for(spec.codec, 1 + len(shape))
            group.create_array(
                spec.name, shape=(n_rows, *shape), dtype=spec.dtype, chunks=(1, *chunk), shards=(S, *shape),
                filters=filters, compressors=compressors, fill_value=0, config={"write_empty_chunks": False},
                attributes={"unit": spec.unit, "doc": spec.doc},
            )
        with warnings.catch_warnings():  # an extension of the v3 group metadata: readers that do not know
            warnings.simplefilter("ignore")  # it open each array's own zarr.json (tests/schemas/test_codecs.py)
            zarr.consolidate_metadata(store)
        if loc.is_local:
            (loc.root / SHARDS_DIR).mkdir()
        loc.sync()  # zarr's own writes are not fsynced: make them durable before the manifest
    loc.write_json(MANIFEST, manifest)


def read_manifest(out) -> dict | None:
    return open_location(out).read_json_or_none(MANIFEST)


def open_arrays(out, layout: StoreLayout) -> dict[str, zarr.Array]:
    group = zarr.open_group(open_location(out).zarr_store(read_only=False), mode="r+")
    return {spec.name: group[spec.name] for spec in layout.arrays}


class ShardRows:
    """The rows a shard task has made and not yet written, compressed as they come.

    ``add`` checks samples against the contract and compresses their chunks at once (the item's
    "encode" seconds); ``flush`` writes each array's shard file once, keeping the chunks already
    in the file for rows this buffer does not hold (rows of items an earlier attempt finished,
    the good rows of a ``--retry-failed`` shard). Memory: the compressed rows of one shard
    (~4 MB per Objaverse sample). Arrays whose codecs ``shard_file`` does not write are
    written through zarr-python at ``add``.
    """

    def __init__(self, out, layout: StoreLayout, shard: int):
        self.layout, self.shard = layout, shard
        self.loc = open_location(out)
        self.arrays = open_arrays(self.loc, layout)
        self.specs = {name: shard_file.ShardSpec.of(arr, self.loc, name) for name, arr in self.arrays.items()}
        self.chunks: dict[str, dict[tuple, bytes]] = {name: {} for name, s in self.specs.items() if s is not None}
        self.rows: set[int] = set()  # rows inside the shard (0..S-1) held here
        self.nbytes = 0
        self.files: dict[str, list] = {}  # array -> [nbytes, crc32c] of the file this buffer last wrote

    def add(self, rows: list[int], samples: list[dict]) -> None:
        """Check and compress ``samples`` for store rows ``rows`` (all in this shard). Raises
        SchemaError (nothing added) if a sample breaks the contract; on any error nothing is
        added to the buffer (arrays written through zarr-python may have been written)."""
        S = self.layout.samples_per_shard
        for row in rows:
            if row // S != self.shard:
                raise ValueError(f"row {row} is not in shard {self.shard}")
        for sample in samples:
            validate_sample(self.layout, sample)
        new: dict[str, dict[tuple, bytes]] = {name: {} for name in self.chunks}
        for row, sample in zip(rows, samples, strict=True):
            for name, spec in self.specs.items():
                if spec is None:
                    self.arrays[name][row] = sample[name]
                else:
                    new[name].update(spec.encode_row(row % S, sample[name]))
        made = {row % S for row in rows}
        for name, held in self.chunks.items():
            for key in [k for k in held if k[0] in made]:  # a row made again replaces all its chunks
                self.nbytes -= len(held.pop(key))
            held.update(new[name])
            self.nbytes += sum(map(len, new[name].values()))
        self.rows |= made

    def flush(self, check=None, keep: set[int] | None = None) -> bool:
        """Write the held rows into the shard files (each array's file replaced atomically),
        keeping the chunks of other rows already there: all of them (``keep`` None), or only those
        of the rows in ``keep`` (rows inside the shard whose items are finished and written; an
        empty ``keep`` never reads the old file, so a corrupt one is simply replaced). A corrupt
        old file whose rows must be kept raises ShardCorrupt. ``check``: called before each file;
        False stops the flush (the store was replaced) and returns False."""
        if not self.rows:
            return True
        for name, held in self.chunks.items():
            if check is not None and not check():
                return False
            spec = self.specs[name]
            chunks = {}
            if keep is None or keep - self.rows:
                try:
                    old = spec.read(self.shard)
                except ValueError as e:
                    raise ShardCorrupt(f"{name} file of shard {self.shard} is corrupt ({e}) and holds rows "
                                       "of finished items; redo the shard (--retry-failed)") from None
                chunks = {k: v for k, v in old.items() if k[0] not in self.rows and (keep is None or k[0] in keep)}
            chunks.update(held)
            self.files[name] = spec.write(self.shard, chunks)
        for held in self.chunks.values():
            held.clear()
        self.rows.clear()
        self.nbytes = 0
        return True

    def file_records(self) -> dict[str, list]:
        """[nbytes, crc32c] of every array's shard file as it is now ([0, None]: no file), for the
        marker: what this buffer wrote, else (a resumed attempt with nothing left to write) read back."""
        out = {}
        for name, spec in self.specs.items():
            if spec is None:
                continue  # written through zarr-python: not checked
            if name not in self.files:
                try:
                    data = self.loc.read_bytes(spec.file_key(self.shard))
                    self.files[name] = [len(data), file_crc(data)]
                except FileNotFoundError:
                    self.files[name] = [0, None]
            out[name] = self.files[name]
        return out


class ShardCorrupt(RuntimeError):
    """A shard file cannot be decoded (the shard must be redone as a whole)."""


def write_samples(out: Path, layout: StoreLayout, rows: list[int], samples: list[dict]) -> None:
    """Validate each sample against the contract and write it at its row (rows may span
    shards; each touched shard file is rewritten once)."""
    S = layout.samples_per_shard
    by_shard: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_shard.setdefault(row // S, []).append(i)
    for shard, idx in sorted(by_shard.items()):
        buf = ShardRows(out, layout, shard)
        buf.add([rows[i] for i in idx], [samples[i] for i in idx])
        buf.flush()


def marker_key(shard: int) -> str:
    return f"{SHARDS_DIR}/{shard:07d}.json"


def marker_path(out, shard: int) -> Path:
    """The marker file of a local store."""
    return Path(out) / marker_key(shard)


def journal_path(out, shard: int) -> Path:
    """The journal file of a local store (object stores: ``journal.ShardJournal``)."""
    return Path(out) / journal_key(shard)


def completed_shards(out) -> set[int]:
    """Shard indices that have a completion marker (resume = list the markers: one scandir, or a
    LIST of ``_shards/`` on an object store, 1000 markers per request)."""
    return marker_shards(open_location(out))


def write_marker(out, shard: int, records: list[dict], retries: list[str] | None = None,
                 flush_seconds: float | None = None, files: dict | None = None) -> None:
    """Write (or replace, for ``--retry-failed``) shard k's marker atomically and durably (temp
    file, fsync, rename; one PUT on an object store), after the shard's files are durable.
    ``retries``: the retry run ids already applied to this shard; ``flush_seconds``: the time
    spent writing the shard's files (the items' own ``timings`` hold their compression);
    ``files``: array -> [nbytes, crc32c] of the shard's files (readers check them)."""
    marker = {"shard": shard, "finished": time.time(), "items": records}
    if flush_seconds is not None:
        marker["flush_seconds"] = flush_seconds
    if retries:
        marker["retries"] = list(retries)
    if files is not None:
        marker["files"] = files
    open_location(out).write_json(marker_key(shard), marker)


def iter_markers(out, chunk: int = 256):
    """Every readable marker, one at a time, in shard order (a 10M-item store has 625K of them);
    read ``chunk`` at a time (concurrently on an object store). An unreadable marker is left out
    (``schemas.index`` reports it)."""
    loc = open_location(out)
    shards = sorted(marker_shards(loc))
    for i in range(0, len(shards), chunk):
        for raw in loc.read_many([marker_key(k) for k in shards[i:i + chunk]]):
            try:
                yield json.loads(raw)
            except (TypeError, ValueError):
                continue


def read_markers(out) -> list[dict]:
    return list(iter_markers(out))


def write_failures(out, keep: int = 1000) -> tuple[list[dict], Counter]:
    """Rebuild failures.jsonl from the markers, one marker at a time (a 10M-item store may hold a
    million failures: a local store streams to a temp file renamed at the end; an object store gets
    one PUT); returns (the first ``keep`` failure records, the count of every failure by (stage, reason))."""
    first, counts = [], Counter()
    loc = open_location(out)
    local = loc.is_local
    tmp = loc.root / "failures.jsonl.tmp" if local else None
    chunks: list[str] = []
    with open(tmp, "w") if local else contextlib.nullcontext() as f:
        for marker in iter_markers(out):
            for r in marker["items"]:
                if not r["ok"]:
                    line = json.dumps(r) + "\n"
                    f.write(line) if local else chunks.append(line)
                    counts[(r["stage"], r["reason"])] += 1
                    if len(first) < keep:
                        first.append(r)
    if local:
        tmp.replace(loc.root / "failures.jsonl")
    else:
        loc.write_bytes("failures.jsonl", "".join(chunks).encode())
    return first, counts


def store_bytes(out) -> int:
    """Bytes of a store (every file under it)."""
    return sum(open_location(out).list("").values())
