"""A job's input items, held compactly: the driver of an Objaverse-XL run holds 10M of them.

A list of 10M ``WorkItem`` objects costs ~3 GB of Python objects (object, ``__dict__``, two
strings each). ``ItemTable`` keeps keys and locators as UTF-8 bytes in one buffer per column
with int64 offsets, and the sample counts as an int32 array: ~90 bytes per Objaverse item
(32-char uid, 49-char object path), ~0.9 GB at 10M. ``table[i]`` makes the ``WorkItem`` when
its shard is submitted. A table is immutable once built.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np


@dataclass(frozen=True)
class WorkItem:
    """One input item. ``key``: unique, stable id; ``locator``: what the step needs to find
    the input (a path, a uid); ``n_samples``: samples it yields, known before running."""

    key: str
    locator: str
    n_samples: int = 1


CHUNK = 1 << 18  # strings encoded / decoded per step (bounds the temporary Python objects)


class StringColumn:
    """``n`` strings as one UTF-8 buffer (``data``) and byte offsets (int64, n + 1)."""

    __slots__ = ("data", "offsets")

    def __init__(self, data: bytes | bytearray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets

    @classmethod
    def of(cls, strings: Iterable[str]) -> StringColumn:
        data = bytearray()
        lengths = []
        it = iter(strings)
        while chunk := [s.encode() for s in islice(it, CHUNK)]:
            data += b"".join(chunk)
            lengths.append(np.fromiter(map(len, chunk), np.int64, len(chunk)))
        offsets = np.zeros(1 + sum(map(len, lengths)), np.int64)
        if lengths:
            np.cumsum(np.concatenate(lengths), out=offsets[1:])
        return cls(data, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        o = self.offsets
        return self.data[o[i]:o[i + 1]].decode()

    def decode(self, start: int, stop: int) -> list[str]:
        """Strings ``start..stop-1`` as a list."""
        o = self.offsets[start:stop + 1]
        block = bytes(self.data[o[0]:o[-1]])
        cuts = (o - o[0]).tolist()
        text = block.decode()
        if len(text) == len(block):  # ASCII: byte offsets are character offsets (one decode)
            return [text[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        return [block[a:b].decode() for a, b in zip(cuts[:-1], cuts[1:], strict=True)]

    def chunks(self, size: int | None = None) -> Iterator[list[str]]:
        size = size or CHUNK
        for start in range(0, len(self), size):
            yield self.decode(start, min(len(self), start + size))

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.offsets.nbytes


class ItemTable(Sequence):
    """Items as columns: ``keys``, ``locators`` (None: each locator is its key) and
    ``n_samples`` (int32, one per item). A ``Sequence`` of ``WorkItem`` (made on access)."""

    def __init__(self, keys: StringColumn, locators: StringColumn | None, n_samples: np.ndarray):
        if locators is not None and len(locators) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(locators)} locators")
        if len(n_samples) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(n_samples)} sample counts")
        self.keys, self.locators = keys, locators
        self.n_samples = np.ascontiguousarray(n_samples, dtype=np.int32)

    @classmethod
    def of(cls, items: Iterable[WorkItem] | ItemTable) -> ItemTable:
        """A table of ``WorkItem``s (a list from a job's source); a table is returned as is."""
        if isinstance(items, ItemTable):
            return items
        items = list(items)
        keys = StringColumn.of(i.key for i in items)
        same = all(i.locator == i.key for i in items)
        locators = None if same else StringColumn.of(i.locator for i in items)
        return cls(keys, locators, np.fromiter((i.n_samples for i in items), np.int32, len(items)))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], n_samples: int) -> ItemTable:
        """(key, locator) pairs, all with ``n_samples`` samples; keeps one string list at a time."""
        pairs = pairs if isinstance(pairs, list) else list(pairs)
        keys = StringColumn.of(k for k, _ in pairs)
        same = all(k == loc for k, loc in pairs)
        locators = None if same else StringColumn.of(loc for _, loc in pairs)
        return cls(keys, locators, np.full(len(keys), n_samples, np.int32))

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        key = self.keys[i]
        return WorkItem(key=key, locator=key if self.locators is None else self.locators[i],
                        n_samples=int(self.n_samples[i]))

    def __iter__(self) -> Iterator[WorkItem]:
        for keys, locs, ns in self.chunks():
            yield from (WorkItem(k, loc, n) for k, loc, n in zip(keys, locs, ns, strict=True))

    def __add__(self, other) -> list[WorkItem]:
        return list(self) + list(other)

    def chunks(self, size: int | None = None) -> Iterator[tuple[list[str], list[str], list[int]]]:
        """(keys, locators, n_samples) lists of up to ``size`` (``CHUNK``) items at a time, in order."""
        size = size or CHUNK
        for start in range(0, len(self), size):
            stop = min(len(self), start + size)
            keys = self.keys.decode(start, stop)
            locs = keys if self.locators is None else self.locators.decode(start, stop)
            yield keys, locs, self.n_samples[start:stop].tolist()

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + (self.locators.nbytes if self.locators is not None else 0) + self.n_samples.nbytes
