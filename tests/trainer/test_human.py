"""Human items in the trainer: G_1 on the skeleton (eq. 5), §3.3 zero-out, three-source mixing,
training on all three sources and sampling a human store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.store import LAYER_NAMES
from trainer.conditions import SOURCES, collate, prepare_batch
from trainer.config import load_config
from trainer.data import MixedStores
from trainer.latents import latent_channels
from trainer.model import build_model

R = 16


def item(source: str, seed: int = 0, layers=LAYER_NAMES, frames: int = 2, skeleton: bool = True) -> dict:
    """A raw item with every condition non-zero (even a human one: zeroing is prepare_batch's job)."""
    rng = np.random.default_rng(seed)
    ls = len(layers)
    depth = rng.uniform(0.4, 0.6, (frames, ls, R, R)).astype(np.float16)
    it = {"rgb": rng.integers(0, 256, (frames, R, R, 3), dtype=np.uint8),
          "normal": rng.integers(1, 256, (frames, ls, R, R, 3)).astype(np.uint8), "depth": depth,
          "layer_idx": np.array([LAYER_NAMES.index(n) for n in layers], dtype=np.int64),
          "refs": rng.integers(1, 256, (8, R, R, 3), dtype=np.uint8),  # 6 views, background, first frame
          "points": rng.normal(size=(2048, 6)).astype(np.float32), "source": np.int64(SOURCES.index(source)),
          "ref_keep": np.float32(1), "jitter": np.ones(3, np.float32), "flip": np.bool_(True),
          "person_mask": rng.random((frames, R, R)) < 0.5}
    if skeleton:
        it["skeleton"] = rng.integers(1, 256, (frames, R, R, 3), dtype=np.uint8)
    return it


def test_section_3_3_zeroes_every_condition_of_a_human_item_but_the_reference_person():
    items = [item("objaverse", 0), item("hoi", 1), item("human", 2)]
    c = prepare_batch(collate(items))
    for k in ("H", "D", "H_o", "points"):
        assert c[k][2].abs().sum() == 0, k                                      # human: zero
        assert c[k][0].abs().sum() > 0 and c[k][1].abs().sum() > 0, k           # others: kept
    assert c["refs"][2, :6].abs().sum() == 0 and c["refs"][2, 7].abs().sum() == 0  # views, first frame
    o_b = torch.from_numpy(items[2]["refs"][6]).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.allclose(c["refs"][2, 6], o_b, atol=1e-6)                     # O_B itself, not flipped
    assert c["refs"][1, 7].abs().sum() > 0 and c["refs"][0, :6].abs().sum() > 0
    s = torch.from_numpy(items[2]["skeleton"]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(c["S"][2], s)                                            # S kept and never mirrored
    assert torch.equal(c["mask"][2, :, 0], torch.from_numpy(items[2]["person_mask"]).float())
    t = torch.from_numpy(items[2]["rgb"]).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    assert torch.allclose(c["target"][2], t, atol=1e-6)                         # human frames not flipped
    t1 = torch.from_numpy(items[1]["rgb"]).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    assert torch.allclose(c["target"][1], t1.flip(-1), atol=1e-6)               # the others are


def _inputs(b=3, f=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = {"H": torch.randn(b, f, 39, 64, 64, generator=g), "D": torch.rand(b, f, 13, 64, 64, generator=g),
            "H_o": torch.randn(b, f, 3, 64, 64, generator=g), "points": torch.randn(b, 2048, 6, generator=g),
            "S": torch.rand(b, f, 3, 64, 64, generator=g)}
    c = latent_channels(load_config("tiny"))
    return (torch.randn(b, f, c, 8, 8, generator=g), torch.randint(0, 1000, (b,), generator=g), cond,
            torch.randn(b, 7, c, 8, 8, generator=g))


@pytest.mark.parametrize("mode", ["latent"])  # eq. 5: added to the noisy latent
def test_skeleton_guider_g1_is_zero_initialised_and_wired_in(mode):
    torch.manual_seed(0)
    assert load_config("tiny").use_skeleton is False                            # off by default
    on = build_model(load_config("tiny", overrides={"pose_guider_mode": mode, "use_skeleton": True})).eval()
    g1 = on.skeleton_guider
    assert type(g1) is type(on.pose_guider) and g1.config.in_channels == 3      # same structure as G, on S
    assert g1.config.channels == on.pose_guider.config.channels
    assert g1.config.out_channels == on.pose_guider.config.out_channels == latent_channels(on.cfg)
    noisy, t, cond, refs = _inputs()
    with torch.no_grad():
        on.skeleton_guider = None                                               # the same model without G_1
        want = on(noisy, t, cond, refs)
        on.skeleton_guider = g1
        assert torch.equal(on(noisy, t, cond, refs), want)                      # enabling it changes nothing
        g = torch.Generator().manual_seed(1)
        for p in g1.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        assert not torch.allclose(on(noisy, t, cond, refs), want, atol=1e-3)    # ... until G_1 has weights
        assert torch.equal(on(noisy, t, {k: v for k, v in cond.items() if k != "S"}, refs), want)


def test_three_sources_mix_in_the_configured_shares_over_a_long_draw(objaverse_store, hoi_store, human_store):
    stores = [str(objaverse_store), str(hoi_store), str(human_store)]
    n = 6000

    def shares(**kw):
        cfg = load_config("tiny", overrides=dict(stores=stores, **kw))
        ds = MixedStores(stores, cfg)
        counts = np.bincount([SOURCES.index(ds.draw(i)["source"]) for i in range(n)], minlength=3)
        return counts / n

    even = shares()
    assert np.abs(even - 1 / 3).max() < 0.02, even                              # equal by default (paper)
    # stratified, as the paper samples "equally from each dataset in each iteration": every aligned run of
    # three stream positions (a step of batch 3, or three steps of batch 1) holds each source once
    ds = MixedStores(stores, load_config("tiny", overrides=dict(stores=stores)))
    blocks = np.array([SOURCES.index(ds.draw(i)["source"]) for i in range(300)]).reshape(-1, 3)
    assert (np.sort(blocks, axis=1) == [0, 1, 2]).all()
    assert len({tuple(b) for b in blocks}) > 1                                  # in a shuffled order
    skew = shares(mix_objaverse=1.0, mix_hoi=2.0, mix_human=1.0)
    assert np.abs(skew - [0.25, 0.5, 0.25]).max() < 0.02, skew
    assert shares(mix_human=0.0)[2] == 0


def test_train_draws_all_three_sources_and_samples_a_human_store(objaverse_store, hoi_store, human_store,
                                                               tmp_path):
    from trainer.sample import sample_store
    from trainer.train import train

    stores = [str(objaverse_store), str(hoi_store), str(human_store)]
    cfg = load_config("tiny", overrides=dict(stores=stores, run_dir=str(tmp_path / "run"), use_skeleton=True,
                                             stage1_batch=3, log_every=1, ckpt_every=0, val_every=0))
    ds = MixedStores(stores, cfg)
    drawn = {ds.draw(i)["source"] for i in range(2 * 3)}                        # the first 2 steps' items
    assert drawn == set(SOURCES)
    lines = []
    run = train(cfg, "stage1", max_steps=2, log=lines.append)
    assert np.isfinite(run["losses"]).all() and all(run["sources_drawn"][s] > 0 for s in SOURCES), run
    out = tmp_path / "human.mp4"
    res = sample_store(run["checkpoint"], str(human_store), 0, str(out), steps=2)
    import imageio.v2 as imageio

    frames = [f for f in imageio.get_reader(out)]
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    side = [f for f in imageio.get_reader(tmp_path / "human_side.mp4")]
    assert side[0].shape == (64, 192, 3) and np.isfinite(res["metrics"]["psnr_full"])
    assert np.isfinite(res["metrics"]["psnr_region"])                           # region = the person mask
