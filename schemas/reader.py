"""Reading stores: only samples of completed shards are visible.

The reader needs nothing of the pipeline (no rendering stack): the trainer imports it.
Zarr is opened lazily on first read, so a reader can be built in a parent process and
used inside DataLoader worker processes (each opens its own handles; zarr v3 runs an
asyncio loop per process, so use the spawn/forkserver start methods).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from schemas import index as sample_index
from schemas.split import SPLIT_BY, TEST_FRACTION, check_split, held_out_mask, official_is_test
from schemas.storage import open_location, read_error
from schemas.store import ARRAYS, SchemaError, StoreLayout

SHARDS_DIR = sample_index.SHARDS_DIR
# arrays whose first per-sample axis is time (T): ``frames=`` selects on it
TIME_ARRAYS = frozenset(a.name for a in ARRAYS if a.shape[0] == "T")


class StoreReader:
    """Random access to the valid samples of one store (a folder or an object-store URL).

    Sample i (0 <= i < len) maps to a row of the arrays; rows of failed items, of shards without
    a completion marker and of corrupt shards (``schemas.index``: files that differ from what the
    marker records) are never returned. The valid rows come from the store's sample index (two reads),
    or, when the last run did not finish and left none, from the markers. ``split`` ("train" |
    "test" | "all") keeps only that side of the held-out split (``schemas.split``: by item key,
    ``test_fraction``; ``split_by="toolkit"``: by the dataset's official split recorded in the
    manifest; a store made without one -- Objaverse, human, an HOI store of a whole dataset -- falls
    back to the hash split, so the paper's mixed training works with toolkit splits).

    Memory: 8 bytes per sample of the chosen split (row and item number); keys and per-sample
    attributes are read when asked for.
    """

    def __init__(self, path: str | os.PathLike, split: str = "all", test_fraction: float = TEST_FRACTION,
                 split_by: str = "hash"):
        self.loc = open_location(path)
        self.path = Path(path) if self.loc.is_local else str(self.loc)
        try:
            attrs = self.loc.read_json("zarr.json").get("attributes", {})
        except FileNotFoundError:
            raise SchemaError(f"{self.path} is not a store (no zarr.json)") from None
        except Exception as e:
            mapped = read_error(e, str(self.path))
            if mapped is None:
                raise
            raise mapped from None
        self.layout = StoreLayout.from_attrs(attrs)
        self.schema_version = attrs.get("schema_version")  # an older one when schemas.store.READABLE_OLDER allows
        self._manifest = self.loc.read_json_or_none("manifest.json") or {}
        index = sample_index.load(self.loc, self._manifest.get("nonce"))
        self.n_shards_complete = index.shards - len(index.corrupt)
        self.n_failed = index.failed
        self._corrupt = list(index.corrupt)
        self._group = None
        self._markers: dict[int, dict] = {}  # a few markers, for attrs(i)
        self.split = check_split(split)
        if split_by not in SPLIT_BY:
            raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
        official = official_is_test(self.official_split) if split_by == "toolkit" else None
        if official is not None:
            test_item = np.full(index.hashes.size, official, dtype=bool)
        else:
            test_item = held_out_mask(index.hashes, test_fraction)
        test = test_item[index.item]
        self.n_test = int(test.sum())
        if split == "all":
            self._rows, self._item = index.rows, index.item
        else:
            keep = test if split == "test" else ~test
            self._rows, self._item = index.rows[keep], index.item[keep]
        index.rows = index.item = index.hashes = None  # this reader keeps its own side only
        self._index = index

    @property
    def official_split(self) -> str | None:
        """The dataset's official split this store was made from (render-hoi --split), or None."""
        options = self._manifest.get("options") or {}
        return (options.get("selection") or {}).get("split")

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self):  # pickle without open zarr handles (DataLoader workers)
        state = self.__dict__.copy()
        state["_group"] = None
        state["_markers"] = {}
        return state

    @property
    def group(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(self.loc.zarr_store(read_only=True), mode="r")
        return self._group

    @property
    def array_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.layout.arrays)

    def row(self, i: int) -> int:
        if not 0 <= i < len(self._rows):
            raise IndexError(f"sample {i} out of range (store has {len(self._rows)} valid samples)")
        return int(self._rows[i])

    def key(self, i: int) -> str:
        """The item id (object uid, sequence/camera) of sample i."""
        self.row(i)
        return self._index.key(int(self._item[i]))

    def attrs(self, i: int) -> dict:
        """Per-sample attributes of sample i (``schemas.store.SAMPLE_ATTRS``); {} if none. Read
        from the sample's shard marker (a few markers are kept)."""
        row = self.row(i)
        shard = row // self.layout.samples_per_shard
        if shard not in self._markers:
            if len(self._markers) >= 64:
                self._markers.pop(next(iter(self._markers)))
            marker = self.loc.read_json(f"{SHARDS_DIR}/{shard:07d}.json")
            self._markers[shard] = {r: (rec.get("attrs") or [{}] * len(rec["rows"]))[j]
                                    for rec in marker["items"] if rec["ok"] for j, r in enumerate(rec["rows"])}
        return dict(self._markers[shard].get(row, {}))

    def failures(self) -> list[dict]:
        """Failed items of completed shards: dicts with key, stage, reason (reads every marker)."""
        shards = sorted(sample_index.marker_shards(self.loc))
        out = []
        for raw in self.loc.read_many([f"{SHARDS_DIR}/{k:07d}.json" for k in shards]):
            try:
                out += [r for r in json.loads(raw)["items"] if not r["ok"]]
            except (TypeError, ValueError, KeyError):
                continue  # an unreadable marker is a corrupt shard (``corrupt``)
        return out

    def corrupt(self) -> list[dict]:
        """Shards left out because their marker or files are not what was written: {shard, reason}."""
        return list(self._corrupt)

    def read(self, i: int, names=None, frames=None, buffers: dict | None = None) -> dict[str, np.ndarray]:
        """Arrays of sample i under the contract's names, all arrays read concurrently (one
        round trip of requests on an object store, the codec pipeline decoding them in parallel).

        ``names``: which arrays (default all). ``frames``: a slice or list of frame indices
        applied to the time axis of time arrays (``TIME_ARRAYS``); others are read whole.
        ``buffers``: {name: array} to decode into, reused between reads (no fresh pages to fault in:
        a 24 x 512^2 13-layer clip's maps are 413 MB); only with ``frames`` None or a slice, and
        the returned array is that buffer (overwritten by the next read into it).
        """
        import asyncio

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        row = self.row(i)
        names = self.array_names if names is None else tuple(names)
        for name in names:
            if name not in self.array_names:
                raise KeyError(f"array {name!r} is not in this {self.layout.kind} store")
        proto = default_buffer_prototype()
        jobs, where = [], []
        for name in names:
            arr = self.group[name].async_array
            timed = frames is not None and name in TIME_ARRAYS
            if buffers is not None and name in buffers and (frames is None or isinstance(frames, slice)):
                sel = (row, frames) if timed else (row,)
                jobs.append(arr.get_orthogonal_selection(sel, out=proto.nd_buffer.from_numpy_array(buffers[name]),
                                                         prototype=proto))
                where.append((name, "buffer"))
            elif timed and not isinstance(frames, slice):
                # runs of consecutive frames as slices: zarr's orthogonal (fancy) selection
                # is 30-40x slower than basic slicing for the same chunks
                runs = _frame_runs(np.asarray(frames, np.int64))
                jobs += [arr.getitem((row, r)) for r in runs]
                where.append((name, len(runs)))
            else:
                jobs.append(arr.getitem((row, frames) if timed else (row,)))
                where.append((name, 1))
        async def gather():
            return await asyncio.gather(*jobs)

        results = sync(gather())
        out, j = {}, 0
        for name, how in where:
            if how == "buffer":
                out[name] = buffers[name]
                j += 1
            else:
                parts = [np.asarray(p) for p in results[j:j + how]]
                out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
                j += how
        return out


def _frame_runs(frames: np.ndarray) -> list[slice]:
    """Index array -> slices of its runs of consecutive frames (one slice for an empty list)."""
    if frames.size == 0:
        return [slice(0, 0)]
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    return [slice(int(r[0]), int(r[-1]) + 1) for r in np.split(frames, breaks)]
