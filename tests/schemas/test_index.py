"""The sample index: the same samples, keys, attributes and split as reading every marker, in a few
bytes per sample; rebuilt after a run, ignored when stale, and the held-out split computed from hashes."""

from __future__ import annotations

import pickle
import uuid

import numpy as np
import pytest

from schemas import index as sample_index
from schemas.reader import StoreReader
from schemas.split import held_out_keys, held_out_mask
from schemas.storage import open_location
from schemas.store import StoreLayout


def _store(where, n_shards=6, per=4, seed=0):
    """A store whose markers name rows (no pixels needed for the index): shard k holds ``per`` items,
    every 5th failed, one item of two clips per shard; per-sample attrs on each."""
    from pipeline.engine import shard_writer

    layout = StoreLayout(kind="objaverse", frames=2, resolution=8, layers=("object",), samples_per_shard=per + 1)
    shard_writer.create_store(where, layout, n_shards, {"title": "index test", "nonce": "n1"})
    rng = np.random.default_rng(seed)
    expect = []
    for k in range(n_shards):
        recs, row, mine = [], k * layout.samples_per_shard, []
        for j in range(per):
            n = 2 if j == 0 else 1
            key = f"{uuid.UUID(int=int(rng.integers(2**62))).hex}"
            ok = (k * per + j) % 5 != 3
            rows = list(range(row, row + n))
            row += n
            rec = {"key": key, "rows": rows, "ok": ok, "stage": None if ok else "load", "reason": None if ok else "x"}
            if ok:
                rec["attrs"] = [{"faces": int(r), "key": key} for r in rows]
                mine += [(r, key) for r in rows]
            recs.append(rec)
        if k != 4:  # shard 4 unfinished: no marker
            shard_writer.write_marker(where, k, recs)
            expect += mine
    return layout, expect


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_index_serves_what_the_markers_say(tmp_path, where, request):
    out = tmp_path / "s.zarr" if where == "local" else request.getfixturevalue("s3_prefix") + "/s.zarr"
    _, expect = _store(out)
    loc = open_location(out)
    assert sample_index.read(out, "n1") is None  # none written yet: readers build it from the markers
    from_markers = StoreReader(out)
    built = sample_index.build(out)
    meta = sample_index.write(out, built, "n1")
    assert meta["samples"] == len(expect) and meta["shards"] == 5 and meta["failed"] == 4 and meta["corrupt"] == []
    written = sample_index.read(out, "n1")
    assert sample_index.read(out, "other nonce") is None
    np.testing.assert_array_equal(written.rows, [r for r, _ in expect])
    assert written.rows.dtype == np.uint32 and written.item.dtype == np.uint32
    from_index = StoreReader(out)
    for reader in (from_markers, from_index):
        assert [(reader.row(i), reader.key(i)) for i in range(len(reader))] == expect
        assert all(reader.attrs(i) == {"faces": reader.row(i), "key": reader.key(i)} for i in range(len(reader)))
        assert reader.n_failed == 4 and reader.n_shards_complete == 5 and len(reader.failures()) == 4
    # a reader pickled into a DataLoader worker carries its rows, not the keys or attributes
    worker = pickle.loads(pickle.dumps(from_index))
    assert worker.key(3) == from_index.key(3) and worker.attrs(3) == from_index.attrs(3)
    # the files of the replaced index are removed; invalidating makes readers use the markers again
    sample_index.write(out, sample_index.build(out), "n1")
    assert len([k for k in loc.list("_index") if k.endswith(".npz")]) == 2
    sample_index.invalidate(out)
    assert not sample_index.is_current(out, "n1") and [StoreReader(out).key(i) for i in range(3)] == \
        [k for _, k in expect[:3]]


def test_split_from_hashes_is_the_split_from_keys():
    rng = np.random.default_rng(1)
    keys = [uuid.UUID(int=int(rng.integers(2**62)) << 60 | int(rng.integers(2**60))).hex for _ in range(20000)]
    keys += [f"sub/seq{i}/cam{j}" for i in range(50) for j in range(3)]
    for fraction in (0.03, 0.1, 0.5):
        mask = held_out_mask(sample_index.key_hashes(keys), fraction)
        assert {k for k, m in zip(keys, mask, strict=True) if m} == held_out_keys(keys, fraction)
    small = ["a", "b", "c"]  # no key under 3 %: the smallest hash is the test item, as with keys
    assert {k for k, m in zip(small, held_out_mask(sample_index.key_hashes(small), 0.03), strict=True) if m} == \
        held_out_keys(small, 0.03) and len(held_out_keys(small, 0.03)) == 1


def test_train_and_test_readers_split_the_index_without_overlap(tmp_path):
    out = tmp_path / "s.zarr"
    _, expect = _store(out, n_shards=30)
    sample_index.write(out, sample_index.build(out), "n1")
    train, test, both = (StoreReader(out, split=s, test_fraction=0.2) for s in ("train", "test", "all"))
    assert len(train) + len(test) == len(both) == len(expect) and len(test) == both.n_test > 0
    tk = {train.key(i) for i in range(len(train))}
    sk = {test.key(i) for i in range(len(test))}
    assert not tk & sk and sk == held_out_keys([k for _, k in expect], 0.2)
