"""The dataset over real stores: mixing, zeroing per source, determinism, worker processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from schemas.reader import StoreReader
from trainer.conditions import SOURCES, collate, prepare_batch
from trainer.config import load_config
from trainer.data import MixedStores, make_loader


def mixed_cfg(stores, **kw):
    # split="all": these tests index the stores' samples directly (the held-out split has its own tests)
    return load_config("tiny", overrides=dict(stores=[str(s) for s in stores], **{"split": "all", **kw}))


def source_counts(ds, n=600):
    counts = dict.fromkeys(SOURCES, 0)
    for i in range(n):
        counts[ds.draw(i)["source"]] += 1
    return {k: v / n for k, v in counts.items()}


def test_each_step_mixes_sources_by_weight(objaverse_store, hoi_store, human_store):
    stores = [objaverse_store, hoi_store, human_store]
    even = source_counts(MixedStores(stores, mixed_cfg(stores)))
    assert all(abs(p - 1 / 3) < 0.07 for p in even.values()), even
    skew = source_counts(MixedStores(stores, mixed_cfg(stores, mix_hoi=2.0, mix_human=0.0)))
    assert skew["human"] == 0 and abs(skew["hoi"] - 2 / 3) < 0.07, skew
    no_obj = source_counts(MixedStores(stores, mixed_cfg(stores, use_objaverse=False)))
    assert no_obj["objaverse"] == 0 and abs(no_obj["hoi"] - 0.5) < 0.08, no_obj
    with pytest.raises(UserError):
        MixedStores([objaverse_store], mixed_cfg([objaverse_store], use_objaverse=False))


def test_items_read_only_what_a_step_needs_and_zero_what_a_source_lacks(objaverse_store, human_store):
    cfg = mixed_cfg([objaverse_store, human_store], flip_p=0.0, color_jitter=0.0, ref_dropout=0.0)
    image = MixedStores(cfg.stores, cfg, frames=1)
    clip = MixedStores(cfg.stores, cfg, frames=3)
    obj = image.load(0, 1, start=2)
    assert obj["rgb"].shape == (1, 64, 64, 3) and obj["normal"].shape == (1, 1, 64, 64, 3)
    truth = StoreReader(objaverse_store).read(1, names=["rgb"], frames=[2])["rgb"]
    assert np.array_equal(obj["rgb"], truth)
    assert clip.load(1, 0, start=1)["depth"].shape == (3, 1, 64, 64)  # human: one all-zero padding layer
    c = prepare_batch(collate([clip.load(0, 0, 1), clip.load(1, 0, 1)]))
    normals = c["H"].view(2, 3, 13, 3, 64, 64)
    assert normals[0, :, 1:].abs().sum() == 0 and normals[0, :, 0].abs().sum() > 0   # Objaverse: no hands
    assert normals[1].abs().sum() == 0 and c["D"][1].abs().sum() == 0               # human: no layers (§3.3)
    assert c["points"][1].abs().sum() == 0 and c["refs"][1, :6].abs().sum() == 0
    assert c["refs"][1, 6].abs().sum() > 0                                          # ... but O_B
    assert c["D"][0, :, 0].max() == 1


def test_stream_is_deterministic_and_resumable(objaverse_store, hoi_store):
    cfg = mixed_cfg([objaverse_store, hoi_store])
    ds = MixedStores(cfg.stores, cfg)
    full = [b for _, b in zip(range(4), make_loader(ds, 2), strict=False)]
    later = next(iter(make_loader(ds, 2, start_item=4)))
    for k in full[2]:
        assert torch.equal(full[2][k], later[k]), k
    a, b = ds.draw(7), MixedStores(cfg.stores, cfg).draw(7)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="fewer than"):
        MixedStores(cfg.stores, cfg, frames=99)


def test_missing_store_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="render-objaverse"):
        MixedStores([str(tmp_path / "nope.zarr")], mixed_cfg([tmp_path / "nope.zarr"]))


def test_spawned_workers_give_the_same_batches(objaverse_store, hoi_store):
    cfg = mixed_cfg([objaverse_store, hoi_store])
    ds = MixedStores(cfg.stores, cfg, frames=2)
    want = [b for _, b in zip(range(3), make_loader(ds, 2), strict=False)]
    got = [b for _, b in zip(range(3), make_loader(ds, 2, num_workers=2), strict=False)]
    for a, b in zip(want, got, strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_reader_frame_lists_equal_basic_slicing(objaverse_store):
    """Frame lists (runs, gaps, reversed, repeats) read as slices give what numpy indexing gives."""
    r = StoreReader(objaverse_store)
    whole = r.read(0, names=["rgb", "mlo_depth"])
    for frames in ([2], [0, 1, 2], [3, 1], [0, 2, 3], [1, 1], []):
        got = r.read(0, names=["rgb", "mlo_depth"], frames=frames)
        for name in whole:
            np.testing.assert_array_equal(got[name], whole[name][frames], err_msg=f"{name} {frames}")
