"""Planning at scale: the compact item table, shard bounds, fingerprint and duplicate check
against the straightforward versions they replace (written out here as the reference)."""

import hashlib
import json
import random

import numpy as np
import pytest

from pipeline.engine import items as items_module
from pipeline.engine import plan
from pipeline.engine.items import ItemTable, StringColumn, WorkItem


def greedy_shards(n_samples, S):
    """The packing of earlier versions: a new shard when the next item does not fit."""
    shards, used = [], S
    for i, n in enumerate(n_samples):
        if used + n > S:
            shards.append([])
            used = 0
        shards[-1].append(i)
        used += n
    return shards


def old_fingerprint(body, items):
    full = {**body, "items": [[i.key, i.locator, i.n_samples] for i in items]}
    return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:20]


def test_shard_bounds_pack_items_as_the_greedy_loop_did():
    rng = random.Random(0)
    for _ in range(500):
        S = rng.randint(1, 24)
        n = [rng.randint(1, S) for _ in range(rng.randint(1, 80))]
        if rng.random() < 0.3:
            n = [n[0]] * len(n)
        b = plan.shard_bounds(np.array(n), S)
        assert [list(range(b[k], b[k + 1])) for k in range(len(b) - 1)] == greedy_shards(n, S), (n, S)
        for k in range(len(b) - 1):
            rows = plan.shard_rows(np.array(n, np.int32), b, k, S)
            assert [len(r) for r in rows] == n[b[k]:b[k + 1]] and rows[0][0] == k * S
            assert sum(map(len, rows)) <= S and all(r[-1] < (k + 1) * S for r in rows)
    with pytest.raises(ValueError, match="item 1 yields 5"):
        plan.shard_bounds(np.array([1, 5]), 4)
    with pytest.raises(ValueError, match="at least one"):
        plan.shard_bounds(np.array([1, 0]), 4)


def test_item_table_round_trips_items_with_any_text():
    items = [WorkItem("é/ü 1", "/data/é 1.glb", 2), WorkItem("b\n2", "b", 1), WorkItem("", "x", 3),
             WorkItem("emoji-🙂", "🙂", 1)]
    table = ItemTable.of(items)
    assert list(table) == items and [table[i] for i in range(len(items))] == items and table[-1] == items[-1]
    assert table[1:3] == items[1:3] and len(table) == 4
    same = ItemTable.from_pairs([("a", "a"), ("b", "b")], 3)
    assert same.locators is None and list(same) == [WorkItem("a", "a", 3), WorkItem("b", "b", 3)]
    col = StringColumn.of(f"k{i}" for i in range(1000))
    assert col.decode(10, 13) == ["k10", "k11", "k12"] and col[999] == "k999"
    assert [s for chunk in col.chunks(7) for s in chunk] == [f"k{i}" for i in range(1000)]


def test_fingerprint_is_the_old_digest_and_duplicates_are_found(monkeypatch):
    monkeypatch.setattr(items_module, "CHUNK", 128)  # many chunks: the joins between them count too
    body = {"title": "t", "layout": {"b": [1, 2], "a": "x"}, "step": "m:f", "options": {"z": None, "y": 1.5}}
    items = [WorkItem(f"uid-{i:05d}", f"glbs/000-{i % 7:03d}/uid-{i:05d}.glb", 1 + i % 3) for i in range(3000)]
    items.append(WorkItem("ünïcode \"quoted\"", "ünïcode", 2))
    fp, dup = plan.fingerprint_and_duplicate(body, ItemTable.of(items))
    assert fp == old_fingerprint(body, items) and dup is None  # stores made before resume as before
    fp1, _ = plan.fingerprint_and_duplicate(body, ItemTable.of(items[:1]))
    assert fp1 == old_fingerprint(body, items[:1])
    other = list(items)
    other[1234] = WorkItem(other[1234].key, other[1234].locator, 9)
    assert plan.fingerprint_and_duplicate(body, ItemTable.of(other))[0] != fp
    twice = items + [WorkItem(items[42].key, "elsewhere", 1)]
    assert plan.fingerprint_and_duplicate(body, ItemTable.of(twice))[1] == items[42].key
