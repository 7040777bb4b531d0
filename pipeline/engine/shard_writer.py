"""Writing stores: layout on disk, shard planning, sample writes, completion markers.

On disk (one folder, a Zarr v3 group)::

    STORE/zarr.json              group; attributes = StoreLayout.to_attrs() (the contract)
    STORE/<array>/...            one Zarr array per contract array, N rows (samples) first,
                                 sharded S rows per shard, chunked per read (one frame/layer)
    STORE/manifest.json          the run: title, fingerprint, options, counts (written last
                                 at creation: a folder without it is an unfinished creation)
    STORE/_shards/<k>.json       completion marker of shard k: one record per item
                                 (key, rows, ok, stage, reason, detail, seconds, attrs);
                                 readers see only rows of shards that have one
    STORE/_shards/<k>.journal    per-attempt journal (start/end/retry lines) used to resume a
                                 shard inside a crashed or timed-out task
    STORE/failures.jsonl         all failed items (rebuilt from the markers at the end of a run)

One task owns one shard index k: it writes rows [k*S, (k+1)*S) of every array and then
the marker. Rows are compressed as items are made and each array's shard file is written once
(``ShardRows``, with our own ``shard_file`` encoder), by temp file + rename, so a killed task
never leaves a torn file; an unmarked shard is simply redone.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.engine import shard_file
from schemas import StoreLayout, validate_sample
from schemas.reader import SHARDS_DIR
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


def is_store(out: Path) -> bool:
    """True if ``out`` holds a manivideo store (finished creating or not)."""
    meta = Path(out) / "zarr.json"
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("schema") == SCHEMA_NAME
    except (OSError, ValueError):
        return False


def create_store(out: Path, layout: StoreLayout, n_shards: int, manifest: dict) -> None:
    """Create the group and every array (shape N = n_shards * S); the manifest last.

    ``out`` must be absent, empty, or a manivideo store (which is replaced); the caller checks.
    """
    out = Path(out)
    if out.exists():
        if any(out.iterdir()) and not is_store(out):
            raise RuntimeError(f"refusing to replace {out}: not a manivideo store")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    group = zarr.open_group(str(out), mode="w", zarr_format=3, attributes=layout.to_attrs())
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
    (out / SHARDS_DIR).mkdir()
    _atomic_write_json(out / MANIFEST, manifest)


def read_manifest(out: Path) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def open_arrays(out: Path, layout: StoreLayout) -> dict[str, zarr.Array]:
    group = zarr.open_group(str(out), mode="r+")
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

    def __init__(self, out: Path, layout: StoreLayout, shard: int):
        self.layout, self.shard = layout, shard
        self.arrays = open_arrays(out, layout)
        self.specs = {name: shard_file.ShardSpec.of(arr, Path(out) / name) for name, arr in self.arrays.items()}
        self.chunks: dict[str, dict[tuple, bytes]] = {name: {} for name, s in self.specs.items() if s is not None}
        self.rows: set[int] = set()  # rows inside the shard (0..S-1) held here
        self.nbytes = 0

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

    def flush(self, check=None) -> bool:
        """Write the held rows into the shard files (each array's file replaced atomically),
        keeping the chunks of other rows already there. ``check``: called before each file;
        False stops the flush (the store was replaced) and returns False."""
        if not self.rows:
            return True
        for name, held in self.chunks.items():
            if check is not None and not check():
                return False
            spec = self.specs[name]
            chunks = {k: v for k, v in spec.read(self.shard).items() if k[0] not in self.rows}
            chunks.update(held)
            spec.write(self.shard, chunks)
        for held in self.chunks.values():
            held.clear()
        self.rows.clear()
        self.nbytes = 0
        return True


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


def marker_path(out: Path, shard: int) -> Path:
    return Path(out) / SHARDS_DIR / f"{shard:07d}.json"


def journal_path(out: Path, shard: int) -> Path:
    return Path(out) / SHARDS_DIR / f"{shard:07d}.journal"


def completed_shards(out: Path) -> set[int]:
    """Shard indices that have a completion marker (resume = list the markers)."""
    d = Path(out) / SHARDS_DIR
    if not d.exists():
        return set()
    return {int(e.name[:-5]) for e in os.scandir(d) if e.name.endswith(".json") and e.name[:-5].isdigit()}


def write_marker(out: Path, shard: int, records: list[dict], retries: list[str] | None = None,
                 flush_seconds: float | None = None) -> None:
    """Write (or replace, for ``--retry-failed``) shard k's marker atomically (temp file + rename).
    ``retries``: the retry run ids already applied to this shard; ``flush_seconds``: the time
    spent writing the shard's files (the items' own ``timings`` hold their compression)."""
    marker = {"shard": shard, "finished": time.time(), "items": records}
    if flush_seconds is not None:
        marker["flush_seconds"] = flush_seconds
    if retries:
        marker["retries"] = list(retries)
    _atomic_write_json(marker_path(out, shard), marker)


def iter_markers(out: Path):
    """The markers, one at a time, in shard order (a 10M-item store has 625K of them)."""
    for k in sorted(completed_shards(out)):
        yield json.loads(marker_path(out, k).read_text())


def read_markers(out: Path) -> list[dict]:
    return list(iter_markers(out))


def write_failures(out: Path, keep: int = 1000) -> tuple[list[dict], Counter]:
    """Rebuild failures.jsonl from the markers, one marker at a time, streaming the file (a 10M-item
    store may hold a million failures); returns (the first ``keep`` failure records, the count of
    every failure by (stage, reason))."""
    first, counts = [], Counter()
    tmp = Path(out) / "failures.jsonl.tmp"
    with open(tmp, "w") as f:
        for marker in iter_markers(out):
            for r in marker["items"]:
                if not r["ok"]:
                    f.write(json.dumps(r) + "\n")
                    counts[(r["stage"], r["reason"])] += 1
                    if len(first) < keep:
                        first.append(r)
    tmp.replace(Path(out) / "failures.jsonl")
    return first, counts


def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def store_bytes(out: Path) -> int:
    """Bytes on disk of a store folder."""
    return sum(e.stat().st_size for e in Path(out).rglob("*") if e.is_file())
