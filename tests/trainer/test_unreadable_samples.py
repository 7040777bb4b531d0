"""A sample whose shard file went bad after the index was made is skipped and logged, not a crash: the
stream replaces it by another draw of the same position, the same in every process and after a resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from schemas import index as sample_index
from schemas.storage import open_location
from schemas.store import StoreLayout
from tests.trainer.conftest import FRAMES, RES, _disc_sample
from trainer.config import load_config
from trainer.data import MAX_REDRAWS, CompactItems, MixedStores


def _two_shard_store(out):
    from pipeline.engine import shard_writer

    layout = StoreLayout(kind="hoi", frames=FRAMES, resolution=RES, layers=("object", "left_palm"), samples_per_shard=2)
    shard_writer.create_store(out, layout, 2, {"title": "t", "nonce": "n"})
    rng = np.random.default_rng(0)
    shard_writer.write_samples(out, layout, [0, 1, 2, 3], [_disc_sample(layout, rng) for _ in range(4)])
    for k in (0, 1):
        shard_writer.write_marker(out, k, [{"key": f"seq{r}/cam0", "rows": [r], "ok": True} for r in (2 * k, 2 * k + 1)])
    sample_index.write(out, sample_index.build(out), "n")
    return out


def test_an_unreadable_sample_is_replaced_by_a_redraw_of_the_same_position(tmp_path, caplog):
    out = _two_shard_store(tmp_path / "s.zarr")
    cfg = load_config("tiny", overrides=dict(stores=[str(out)], split="all"))
    before = MixedStores([str(out)], cfg)
    first = {n: before.draw(n) for n in range(24)}
    hit = [n for n, d in first.items() if d["index"] >= 2]  # first draws in shard 1
    assert hit and len(hit) < 24
    good = {n: before[n]["rgb"] for n in range(24) if n not in hit}
    loc = open_location(out)
    key = sample_index.shard_file_keys(loc)["rgb"](1)
    loc.write_bytes(key, loc.read_bytes(key)[:-9])  # shard 1's RGB file damaged after the index was made

    ds = MixedStores([str(out)], cfg)
    with caplog.at_level(logging.WARNING, logger="manivideo.data"):
        items = {n: ds[n] for n in range(24)}
    assert ds.unreadable == {(0, 2), (0, 3)}
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 2 and all("skipping unreadable sample" in m and "s.zarr" in m for m in skipped)
    for n in range(24):
        if n in good:  # positions that drew a readable sample are unchanged
            np.testing.assert_array_equal(items[n]["rgb"], good[n])
    # a fresh process (a resumed run, a DataLoader worker) gives the same stream
    again = CompactItems(MixedStores([str(out)], cfg))
    for n in hit:
        np.testing.assert_array_equal(again[n]["rgb"], items[n]["rgb"])


def test_a_store_that_cannot_be_read_at_all_stops_with_a_clear_error(tmp_path):
    out = _two_shard_store(tmp_path / "s.zarr")
    cfg = load_config("tiny", overrides=dict(stores=[str(out)], split="all"))
    loc = open_location(out)
    keys = sample_index.shard_file_keys(loc)["rgb"]
    for k in (0, 1):
        loc.write_bytes(keys(k), b"\0" * 64)
    with pytest.raises(RuntimeError, match=f"{MAX_REDRAWS + 1} draws in a row could not be read"):
        MixedStores([str(out)], cfg)[0]
