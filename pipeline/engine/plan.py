"""Planning a run from its items, in memory and time linear in the items and with no Python
object per item left behind: the job's fingerprint, the duplicate-key check, and the shards.

Shards are given by their bounds: ``bounds`` (int64, n_shards + 1) with shard k holding items
``bounds[k] .. bounds[k+1]-1``; rows of shard k start at ``k * S`` (S = samples per shard).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np

from pipeline.engine.items import ItemTable


def shard_bounds(n_samples: np.ndarray, samples_per_shard: int) -> np.ndarray:
    """Pack items, in order, into shards of at most S rows; an item never spans two shards.

    The same packing as the greedy loop it replaces (a new shard starts when the next item
    does not fit), vectorised: one ``searchsorted`` per shard, or none when every item has the
    same count. Raises ValueError for an item with more than S samples (or fewer than 1).
    """
    n = np.asarray(n_samples, dtype=np.int64)
    S = int(samples_per_shard)
    if len(n) == 0:
        return np.zeros(1, np.int64)
    if n.max() > S:
        i = int(np.argmax(n > S))
        raise ValueError(f"item {i} yields {n[i]} samples, more than samples_per_shard={S}")
    if n.min() < 1:
        i = int(np.argmax(n < 1))
        raise ValueError(f"item {i} yields {n[i]} samples; an item must yield at least one")
    if n.min() == n.max():
        per = S // int(n[0])
        return np.append(np.arange(0, len(n), per, dtype=np.int64), len(n))
    cum = np.zeros(len(n) + 1, np.int64)
    np.cumsum(n, out=cum[1:])
    bounds = [0]
    while bounds[-1] < len(n):
        a = bounds[-1]
        bounds.append(int(np.searchsorted(cum, cum[a] + S, side="right")) - 1)
    return np.asarray(bounds, np.int64)


def shard_items(bounds: np.ndarray, shard: int) -> range:
    return range(int(bounds[shard]), int(bounds[shard + 1]))


def shard_rows(n_samples: np.ndarray, bounds: np.ndarray, shard: int, samples_per_shard: int) -> list[list[int]]:
    """Rows of each item of shard k (items fill the shard's rows in order)."""
    row = shard * samples_per_shard
    out = []
    for n in n_samples[bounds[shard]:bounds[shard + 1]].tolist():
        out.append(list(range(row, row + n)))
        row += n
    return out


def fingerprint_and_duplicate(body: dict, items: ItemTable) -> tuple[str, str | None]:
    """(the job's fingerprint, the first key that appears twice or None), in one pass.

    The fingerprint is the same digest as ``sha256(json.dumps({**body, "items": [[key, locator,
    n_samples], ...]}, sort_keys=True))[:20]`` (what earlier versions wrote into manifests, so
    their stores still resume), streamed a chunk of items at a time. Duplicates are found by
    sorting 64-bit hashes of the keys (8 bytes per item) and confirmed on the strings.
    """
    head = json.dumps({**body, "items": []}, sort_keys=True)
    if not head.startswith('{"items": []'):
        raise ValueError("the fingerprint body has a key that sorts before 'items'")
    digest = hashlib.sha256(b'{"items": [')
    hashes = np.empty(len(items), np.int64)
    pos = 0
    for keys, locs, ns in items.chunks():
        if pos:
            digest.update(b", ")
        digest.update(json.dumps(list(zip(keys, locs, ns, strict=True)))[1:-1].encode())  # tuples dump as lists
        hashes[pos:pos + len(keys)] = np.fromiter(map(hash, keys), np.int64, len(keys))
        pos += len(keys)
    digest.update(head[len('{"items": ['):].encode())
    return digest.hexdigest()[:20], _first_duplicate(items, hashes)


def _first_duplicate(items: ItemTable, hashes: np.ndarray) -> str | None:
    order = np.sort(hashes)
    clash = order[1:][order[1:] == order[:-1]]
    if len(clash) == 0:
        return None
    suspects = np.flatnonzero(np.isin(hashes, clash))  # few: real duplicates or 64-bit hash collisions
    counts = Counter(items.keys[int(i)] for i in suspects)
    return next((items.keys[int(i)] for i in suspects if counts[items.keys[int(i)]] > 1), None)
