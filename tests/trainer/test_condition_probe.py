"""The condition probe (trainer.condition_probe) and the test that training *uses* the conditions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from trainer import train as train_mod
from trainer.condition_probe import SWAPS, derangement, fixed_pairs, probe_losses, swap_conditions, swappable
from trainer.conditions import collate
from trainer.config import load_config
from trainer.data import MixedStores
from trainer.latents import latent_channels, latent_factor
from trainer.model import build_model


def test_derangement_pairs_items_of_the_same_source_from_different_samples():
    groups = ["objaverse"] * 4 + ["hoi"] * 3 + ["human"]
    samples = ["a", "a", "b", "b", "x", "y", "z", "p"]
    perm = derangement(groups, samples)
    for i, j in enumerate(perm):
        assert groups[i] == groups[j]
        if i != j:
            assert samples[i] != samples[j]
    assert swappable(perm).tolist() == [True] * 7 + [False]           # a lone human item keeps its own
    assert sorted(perm[:4].tolist()) == [0, 1, 2, 3]                   # a permutation inside each group
    assert derangement(["o", "o"], ["a", "a"]).tolist() == [0, 1]       # one sample only: nothing to swap


def test_swap_conditions_moves_only_the_named_group():
    b = 3
    cond = {k: torch.arange(b).float().view(b, 1).expand(b, 5).clone()
            for k in ("H", "D", "H_o", "refs", "points", "target", "mask")}
    perm = np.array([1, 2, 0])
    for which, keys in SWAPS.items():
        out = swap_conditions(cond, perm, which)
        for k, v in out.items():
            want = perm if k in keys else np.arange(b)
            assert v[:, 0].tolist() == want.tolist(), (which, k)


def test_fixed_pairs_are_deterministic_and_split_into_bands():
    a, b = fixed_pairs(5, 1, 12, 8, 1000, per_item=4, seed=7), fixed_pairs(5, 1, 12, 8, 1000, per_item=4, seed=7)
    assert torch.equal(a["noise"], b["noise"]) and torch.equal(a["t"], b["t"])
    assert a["band"] == ["low", "low", "high", "high"]
    assert (a["t"][:2] < 333).all() and (a["t"][2:] >= 666).all() and a["noise"].shape == (4, 5, 1, 12, 8, 8)


def _train(cfg, batch, steps, freeze_conditions=False):
    """A short fixed-batch training (the trainer's own loss); ``freeze_conditions``: every condition
    path (G, E_F, E_N and its attention, AppearanceNet) stays at its initialisation and the reference
    attention is off, i.e. a model that ignores its conditions."""
    torch.manual_seed(0)
    model = build_model(cfg)
    if freeze_conditions:
        for m in (model.pose_guider, model.mlo_embed, model.geo_embed, model.geo_attention, model.reference_unet):
            m.requires_grad_(False)
        model.bank.enabled = False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.stage1_lr)
    sched = train_mod.make_scheduler(cfg)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        loss = train_mod.diffusion_loss(model, model, batch, sched, g, cfg, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, sched


@pytest.fixture
def one_thread():
    """One intra-op thread: on a loaded 2-core machine torch's default of one per core oversubscribes the
    cores this test shares with other processes (measured: 26 s with one thread, ~300 s without)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_makes_the_model_depend_on_its_conditions(objaverse_store, one_thread):
    """After a short training on two clips, giving each the other clip's conditions must raise the
    high-t loss: at high t the noisy latent hardly tells the clips apart, the conditions do. The same
    training with every condition path frozen (a model that ignores its conditions) shows no rise, so
    this test fails when the conditions are ignored (the old test only checked that the loss fell,
    which memorising from the noisy latent also gives)."""
    # a narrower UNet than the preset's (16/32 channels) and a high learning rate: seconds on a CPU
    cfg = load_config("tiny", overrides={"stores": [str(objaverse_store)], "split": "all", "flip_p": 0.0,
                                         "color_jitter": 0.0, "ref_dropout": 0.0, "stage1_lr": 3e-3,
                                         "block_out_channels": [16, 32]})
    ds = MixedStores(cfg.stores, cfg, frames=1)
    assert len(ds.readers[0]) == 2
    items = [ds.load(0, s, 0) for s in range(2)]
    batch = collate(items)
    perm = derangement(["objaverse"] * 2, [0, 1])
    pairs = fixed_pairs(2, 1, latent_channels(cfg), cfg.resolution // latent_factor(cfg), cfg.num_train_timesteps,
                        per_item=4, seed=3)

    def rise(model, sched):
        own = probe_losses(model, batch, pairs, sched, cfg, torch.device("cpu"))
        swapped = probe_losses(model, batch, pairs, sched, cfg, torch.device("cpu"), perm=perm, which="all")
        return float(swapped["high"].mean() / own["high"].mean() - 1), float(own["high"].mean())

    untrained = rise(*_train(cfg, batch, 0))
    used, loss_used = rise(*_train(cfg, batch, 100))
    ignored, loss_ignored = rise(*_train(cfg, batch, 100, freeze_conditions=True))
    assert abs(untrained[0]) < 0.01, untrained                         # zero-initialised paths: no effect yet
    print(f"swap rise: untrained {untrained[0]:+.4f}, trained {used:+.4f}, conditions ignored {ignored:+.4f}")
    assert used > 0.5, (used, loss_used)                               # trained: the conditions matter
    assert abs(ignored) < 0.02, ignored                                # conditions ignored: the probe says so
    assert loss_used < loss_ignored                                    # and using them predicts better


@pytest.mark.parametrize("which", sorted(SWAPS))
def test_probe_of_an_untrained_model_is_blind_to_zero_initialised_conditions(objaverse_store, which):
    cfg = load_config("tiny", overrides={"stores": [str(objaverse_store)], "split": "all"})
    ds = MixedStores(cfg.stores, dataclasses.replace(cfg, ref_dropout=0.0), frames=1)
    batch = collate([ds.load(0, 0, 0), ds.load(0, 1, 0)])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.bank.enabled = False  # AppearanceNet is the one path that is live at init
    pairs = fixed_pairs(2, 1, latent_channels(cfg), cfg.resolution // latent_factor(cfg), 1000, per_item=2)
    sched = train_mod.make_scheduler(cfg)
    own = probe_losses(model, batch, pairs, sched, cfg, torch.device("cpu"))
    sw = probe_losses(model, batch, pairs, sched, cfg, torch.device("cpu"), perm=np.array([1, 0]), which=which)
    zero = probe_losses(model, batch, pairs, sched, cfg, torch.device("cpu"), zero=True)
    assert np.allclose(own["high"], sw["high"]) and np.allclose(own["low"], sw["low"])
    assert not np.allclose(own["high"], zero["high"])
