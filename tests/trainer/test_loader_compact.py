"""Layer maps moved as bounding-box crops (trainer.compact): exact round trip, fewer bytes, same conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.store import LAYER_NAMES
from tests.trainer.conftest import write_hoi_store
from trainer.compact import batch_bytes, compact_layers, expand_compact
from trainer.conditions import SOURCES, collate, collate_compact, expand_layers, prepare_batch
from trainer.config import load_config
from trainer.data import MixedStores, make_loader

R = 24


def sparse_item(layers: tuple[str, ...], source: str = "hoi", frames: int = 3, seed: int = 0) -> dict:
    """Each (frame, layer) is a random rectangle blob (some empty, one touching the image border);
    normals non-zero exactly where depth is, plus one stray normal-only pixel (must survive too)."""
    rng = np.random.default_rng(seed)
    ls = len(layers)
    depth = np.zeros((frames, ls, R, R), np.float16)
    normal = np.zeros((frames, ls, R, R, 3), np.uint8)
    for f in range(frames):
        for k in range(ls):
            if rng.random() < 0.3:
                continue  # layer absent in this frame
            y0, x0 = rng.integers(0, R - 4, 2)
            h, w = rng.integers(1, R - max(y0, x0), 2)
            depth[f, k, y0:y0 + h, x0:x0 + w] = rng.uniform(0.3, 0.9, (h, w))
            normal[f, k, y0:y0 + h, x0:x0 + w] = rng.integers(1, 256, (h, w, 3))
    depth[0, 0, R - 1, R - 2:] = 0.5                       # touches the bottom-right border
    normal[-1, -1, 0, 0] = (0, 0, 7)                      # a normal where depth is 0
    return {"rgb": rng.integers(0, 256, (frames, R, R, 3), dtype=np.uint8), "normal": normal, "depth": depth,
            "layer_idx": np.array([LAYER_NAMES.index(n) for n in layers], dtype=np.int64),
            "refs": rng.integers(0, 256, (7, R, R, 3), dtype=np.uint8),
            "points": rng.normal(size=(2048, 6)).astype(np.float32), "source": np.int64(SOURCES.index(source)),
            "ref_keep": np.float32(1), "jitter": np.ones(3, np.float32), "flip": np.bool_(False)}


def test_boxes_round_trip_exactly_and_give_the_same_conditions():
    obj = sparse_item(("object",), "objaverse")
    hoi = dict(sparse_item(LAYER_NAMES, seed=1), flip=np.bool_(True))
    hands = sparse_item(LAYER_NAMES[1:7], seed=2)
    items = [obj, hoi, hands]
    dense, compact = collate(items), collate_compact(items)
    assert "normal" not in compact and compact["boxes"].shape[1] == 7
    normal, depth = expand_compact(compact["boxes"], compact["normal_px"], compact["depth_px"], 3, 3, R)
    assert torch.equal(normal, expand_layers(dense["normal"], dense["layer_idx"]))
    assert torch.equal(depth, expand_layers(dense["depth"].float(), dense["layer_idx"]))
    a, b = prepare_batch(dense, tau=0.05), prepare_batch(compact, tau=0.05)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # every box is tight: its first/last row and column hold a non-zero pixel
    for bi, f, layer, y0, x0, h, w in compact["boxes"].tolist():
        nz = (normal[bi, f, layer].int().sum(-1) > 0) | (depth[bi, f, layer] > 0)
        box = nz[y0:y0 + h, x0:x0 + w]
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        assert nz.sum() == box.sum()


def test_compact_batches_are_smaller_and_empty_items_carry_no_boxes():
    item = sparse_item(LAYER_NAMES, seed=3)
    empty = dict(item, normal=np.zeros_like(item["normal"]), depth=np.zeros_like(item["depth"]))
    c = collate_compact([empty])
    assert len(c["boxes"]) == 0 and len(c["normal_px"]) == 0
    assert batch_bytes(collate_compact([item])) < batch_bytes(collate([item]))
    n, d = expand_compact(c["boxes"], c["normal_px"], c["depth_px"], 1, 3, R)
    assert n.abs().sum() == 0 and d.abs().sum() == 0


def test_a_padding_layer_with_pixels_is_refused():
    item = sparse_item(("object", "left_palm"), seed=4)
    with pytest.raises(ValueError, match="padding layer"):
        compact_layers(item["normal"], item["depth"], np.array([0, -1]))
    c = compact_layers(item["normal"], item["depth"], item["layer_idx"])
    with pytest.raises(ValueError, match="boxes cover"):
        expand_compact(torch.from_numpy(np.c_[np.zeros(len(c["boxes"]), np.int32), c["boxes"]]),
                       torch.from_numpy(c["normal_px"][:-1]), torch.from_numpy(c["depth_px"][:-1]), 1, 3, R)


def test_loader_moves_boxes_from_a_real_store_and_conditions_match_dense(tmp_path):
    store = write_hoi_store(tmp_path / "s.zarr", LAYER_NAMES, n=2)
    cfg = load_config("tiny", overrides=dict(stores=[str(store)], split="all"))
    ds = MixedStores(cfg.stores, cfg, frames=2)
    compact = next(iter(make_loader(ds, 2)))
    dense = next(iter(make_loader(ds, 2, compact=False)))
    assert batch_bytes(compact) < batch_bytes(dense)
    a, b = prepare_batch(dense), prepare_batch(compact)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_codec_pipelines_give_the_same_batches(tmp_path):
    from pipeline.errors import UserError
    from trainer.data import use_codec_pipeline

    store = write_hoi_store(tmp_path / "s.zarr", LAYER_NAMES[:4], n=2, seed=1)
    cfg = load_config("tiny", overrides=dict(stores=[str(store)], split="all"))
    ds = MixedStores(cfg.stores, cfg, frames=3)
    with pytest.raises(UserError, match="codec pipeline"):
        use_codec_pipeline("fast")
    try:
        want = next(iter(make_loader(ds, 2, codec_pipeline="zarr")))
        pytest.importorskip("zarrs", reason="zarrs is optional (pip install zarrs)")
        got = next(iter(make_loader(ds, 2, codec_pipeline="zarrs")))
        for k in want:
            assert torch.equal(want[k], got[k]), k
    finally:
        use_codec_pipeline("zarr")  # leave this process as it was
