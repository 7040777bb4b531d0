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

from schemas.split import SPLIT_BY, TEST_FRACTION, check_split, held_out_keys, official_is_test
from schemas.store import ARRAYS, SchemaError, StoreLayout

SHARDS_DIR = "_shards"
# arrays whose first per-sample axis is time (T): ``frames=`` selects on it
TIME_ARRAYS = frozenset(a.name for a in ARRAYS if a.shape[0] == "T")


class StoreReader:
    """Random access to the valid samples of one store.

    Sample i (0 <= i < len) maps to a row of the arrays; rows of failed items and of
    shards without a completion marker are never returned. ``split`` ("train" | "test" | "all")
    keeps only that side of the held-out split (``schemas.split``: by item key, ``test_fraction``;
    ``split_by="toolkit"``: by the dataset's official split recorded in the manifest; a store made
    without one -- Objaverse, human, an HOI store of a whole dataset -- falls back to the hash split,
    so the paper's mixed training works with toolkit splits).
    """

    def __init__(self, path: str | os.PathLike, split: str = "all", test_fraction: float = TEST_FRACTION,
                 split_by: str = "hash"):
        self.path = Path(path)
        meta = self.path / "zarr.json"
        if not meta.exists():
            raise SchemaError(f"{self.path} is not a store (no zarr.json)")
        attrs = json.loads(meta.read_text()).get("attributes", {})
        self.layout = StoreLayout.from_attrs(attrs)
        self.schema_version = attrs.get("schema_version")  # an older one when schemas.store.READABLE_OLDER allows
        self._rows: list[int] = []
        self._keys: list[str] = []
        self._attrs: list[dict] = []
        self._failures: list[dict] = []
        shard_dir = self.path / SHARDS_DIR
        names = sorted(e.name for e in os.scandir(shard_dir) if e.name.endswith(".json")) if shard_dir.exists() else []
        for name in names:
            marker = json.loads((shard_dir / name).read_text())
            for rec in marker["items"]:
                if rec["ok"]:
                    self._rows.extend(rec["rows"])
                    self._keys.extend([rec["key"]] * len(rec["rows"]))
                    self._attrs.extend(rec.get("attrs") or [{}] * len(rec["rows"]))
                else:
                    self._failures.append(rec)
        self.n_shards_complete = len(names)
        self._group = None
        self.split = check_split(split)
        if split_by not in SPLIT_BY:
            raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
        official = official_is_test(self.official_split) if split_by == "toolkit" else None
        if official is not None:
            test = set(self._keys) if official else set()
        else:
            test = held_out_keys(self._keys, test_fraction)
        self.n_test = sum(k in test for k in self._keys)
        if split != "all":
            keep = [i for i, k in enumerate(self._keys) if (k in test) == (split == "test")]
            self._rows = [self._rows[i] for i in keep]
            self._keys = [self._keys[i] for i in keep]
            self._attrs = [self._attrs[i] for i in keep]

    @property
    def official_split(self) -> str | None:
        """The dataset's official split this store was made from (render-hoi --split), or None."""
        manifest = self.path / "manifest.json"
        if not manifest.exists():
            return None
        options = json.loads(manifest.read_text()).get("options") or {}
        return (options.get("selection") or {}).get("split")

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self):  # pickle without open zarr handles (DataLoader workers)
        state = self.__dict__.copy()
        state["_group"] = None
        return state

    @property
    def group(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(str(self.path), mode="r")
        return self._group

    @property
    def array_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.layout.arrays)

    def row(self, i: int) -> int:
        if not 0 <= i < len(self._rows):
            raise IndexError(f"sample {i} out of range (store has {len(self._rows)} valid samples)")
        return self._rows[i]

    def key(self, i: int) -> str:
        """The item id (object uid, sequence/camera) of sample i."""
        self.row(i)
        return self._keys[i]

    def attrs(self, i: int) -> dict:
        """Per-sample attributes of sample i (``schemas.store.SAMPLE_ATTRS``); {} if none."""
        self.row(i)
        return dict(self._attrs[i])

    def failures(self) -> list[dict]:
        """Failed items of completed shards: dicts with key, stage, reason."""
        return list(self._failures)

    def read(self, i: int, names=None, frames=None, buffers: dict | None = None) -> dict[str, np.ndarray]:
        """Arrays of sample i under the contract's names.

        ``names``: which arrays (default all). ``frames``: a slice or list of frame indices
        applied to the time axis of time arrays (``TIME_ARRAYS``); others are read whole.
        ``buffers``: {name: array} to decode into, reused between reads (no fresh pages to fault in:
        a 24 x 512^2 13-layer clip's maps are 413 MB); only with ``frames`` None or a slice, and
        the returned array is that buffer (overwritten by the next read into it).
        """
        row = self.row(i)
        names = self.array_names if names is None else tuple(names)
        out = {}
        for name in names:
            if name not in self.array_names:
                raise KeyError(f"array {name!r} is not in this {self.layout.kind} store")
            arr = self.group[name]
            if buffers is not None and name in buffers and (frames is None or isinstance(frames, slice)):
                from zarr.core.buffer import default_buffer_prototype

                sel = (row, frames) if frames is not None and name in TIME_ARRAYS else (row,)
                arr.get_basic_selection(sel, out=default_buffer_prototype().nd_buffer.from_numpy_array(buffers[name]))
                out[name] = buffers[name]
            elif frames is not None and name in TIME_ARRAYS:
                if isinstance(frames, slice):
                    out[name] = arr[row, frames]
                else:  # runs of consecutive frames as slices: zarr's orthogonal (fancy) selection
                    # is 30-40x slower than basic slicing for the same chunks
                    out[name] = _read_frames(arr, row, np.asarray(frames, np.int64))
            else:
                out[name] = arr[row]
        return out


def _read_frames(arr, row: int, frames: np.ndarray) -> np.ndarray:
    """``arr[row, frames]`` for an index array, read as one slice per run of consecutive frames."""
    if frames.size == 0:
        return arr[row, 0:0]
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    parts = [arr[row, int(r[0]):int(r[-1]) + 1] for r in np.split(frames, breaks)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
