"""Held-out split (schemas.split), training never sees test items, validation metrics,
checkpoint retention, and checkpoints that need nothing but themselves."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from schemas.reader import StoreReader
from schemas.split import held_out_keys, key_hash


def test_split_is_a_fixed_function_of_the_key():
    # u(key) is SHA-256's first 8 bytes big-endian / 2**64, whatever the machine
    assert key_hash("seq0/cam0") == int(hashlib.sha256(b"seq0/cam0").hexdigest()[:16], 16) / 2**64
    keys = [f"obj{i:05d}" for i in range(20_000)]
    test = held_out_keys(keys)
    assert 0.025 < len(test) / len(keys) < 0.035                       # 3% of the items
    assert test == held_out_keys(list(reversed(keys)) + keys[:50])         # order / repeats do not matter
    assert held_out_keys(["only-one"]) == set()                             # one item: nothing held out
    small = held_out_keys(["a", "b", "c"])                                  # small store: one test item
    assert len(small) == 1 and small == {min("abc", key=key_hash)}


def test_reader_splits_by_item_and_training_never_sees_test(objaverse_store, hoi_store, tiny_cfg):
    import dataclasses

    from trainer.data import MixedStores

    for store in (objaverse_store, hoi_store):
        full, train, test = (StoreReader(store, split=s) for s in ("all", "train", "test"))
        assert len(train) + len(test) == len(full) and len(test) >= 1 and len(train) >= 1
        assert not {train.key(i) for i in range(len(train))} & {test.key(i) for i in range(len(test))}
        assert full.n_test == len(test)
        from pipeline.inspection.inspect_store import format_report, inspect

        report = inspect(store)
        assert report["split"]["test"] == len(test) and report["split"]["train"] == len(train)
        assert f"{len(train)} train / {len(test)} test" in format_report(report)
    cfg = dataclasses.replace(tiny_cfg, stores=[str(objaverse_store), str(hoi_store)], split="train")
    data = MixedStores(cfg.stores, cfg, frames=1)
    assert data.split == "train"
    held = {k for s in cfg.stores for r in [StoreReader(s, split="test")] for k in (r.key(i) for i in range(len(r)))}
    seen = set()
    for n in range(200):
        d = data.draw(n)
        seen.add(data.readers[d["store"]].key(d["index"]))
    assert seen and not seen & held


def _fake_pretrained(cfg, folder):
    """A local SD1.5-style folder (unet/, vae/) in diffusers' format, of the tiny layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from trainer.latents import vae_config
    from trainer.model import unet_config

    UNet2DConditionModel(**unet_config(cfg)).save_pretrained(folder / "unet")
    AutoencoderKL(**vae_config(cfg)).save_pretrained(folder / "vae")
    return folder


def test_checkpoint_carries_itself_retention_and_validation(objaverse_store, tiny_cfg, tmp_path):
    import dataclasses

    from trainer.sample import sample_store
    from trainer.train import train

    vae_cfg = dataclasses.replace(tiny_cfg, latent="vae", prediction_type="epsilon", vae_scale=3.0)  # SD-style
    pre = _fake_pretrained(vae_cfg, tmp_path / "sd15")
    cfg = dataclasses.replace(vae_cfg, pretrained_sd15=str(pre), ckpt_every=1, keep_checkpoints=1, val_every=3,
                              val_clips=1, sample_steps=2, ema_decay=0.9)
    run = train(cfg, "stage1", max_steps=3, log=lambda *a: None)
    rundir = tmp_path / "run"
    assert sorted(p.name for p in rundir.glob("stage1_step*.pt")) == ["stage1_step0000002.pt"]  # kept the last 1
    recs = [json.loads(line) for line in (rundir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in recs if r.get("split") == "test"]
    assert len(val) == 1 and val[0]["step"] == 3 and val[0]["val/clips"] == 1
    assert val[0]["val/psnr_full"] > 0 and (rundir / "tb").is_dir()
    # carry: the checkpoint alone, in an empty folder, with the original weights gone
    shutil.rmtree(pre)
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    ckpt = shutil.move(run["checkpoint"], alone / "model.pt")
    res = sample_store(str(ckpt), str(objaverse_store), 0, str(tmp_path / "s.png"), steps=2, split="test")
    assert res["metrics"]["split"] == "test" and (tmp_path / "s.png").exists()
    # the diffusers export loads too and holds the same (EMA) weights as the checkpoint
    from trainer.checkpoint import load_any

    a, _, _ = load_any(ckpt)
    b, _, stage = load_any(rundir / "export_stage1")
    assert stage == "stage1"
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert [k for k in sa if not torch.equal(sa[k], sb[k])] == []
    resumed = train(dataclasses.replace(cfg, val_every=0), "stage1", resume=str(ckpt), max_steps=4,
                    log=lambda *a: None)                                   # --resume: the checkpoint alone too
    assert resumed["step"] == 4


def test_sd15_without_weights_warns_or_fails():
    from pipeline.errors import UserError
    from trainer.commands import check_pretrained
    from trainer.config import load_config

    cfg = load_config("sd15")
    said = []
    check_pretrained(cfg, False, echo=lambda m, err=False: said.append(m))
    assert said and "RANDOMLY INITIALISED" in said[0]
    with pytest.raises(UserError, match="pretrained_sd15"):
        check_pretrained(cfg, True)
    check_pretrained(load_config("tiny"), True)                          # tiny: random init is the point


def test_toolkit_split_follows_the_official_split_the_store_was_made_from(tmp_path):
    from schemas.store import LAYER_NAMES
    from tests.trainer.conftest import write_hoi_store

    store = write_hoi_store(tmp_path / "s.zarr", LAYER_NAMES, n=2)
    manifest = store / "manifest.json"
    # a store made without an official split (Objaverse, human, a whole dataset): the hash split
    by_hash = StoreReader(store, split="test")
    assert len(by_hash) == 1  # 2 items, none under 3 %: the smallest hash is held out
    assert [by_hash.key(0)] == [StoreReader(store, split="test", split_by="toolkit").key(0)]
    for official, n_test in (("s0-test", 2), ("s0-train", 0)):
        meta = json.loads(manifest.read_text())
        meta["options"] = {"selection": {"split": official}}
        manifest.write_text(json.dumps(meta))
        r = StoreReader(store, split="test", split_by="toolkit")
        assert r.official_split == official and len(r) == n_test
        assert len(StoreReader(store, split="train", split_by="toolkit")) == 2 - n_test


def test_every_adapters_held_out_split_names_count_as_test():
    """split_by=toolkit on stores made with each adapter's own split names (render-hoi --split):
    DexYCB s*-test/val, ARCTIC p1-* (also written p1_test), TACO train / test_1..test_4."""
    from schemas.split import official_is_test

    for name in ("s0-test", "s3-val", "p1-test", "p1_val", "p1a-test", "test_1", "test_4"):
        assert official_is_test(name) is True, name
    for name in ("s0-train", "p1-train", "p1_train", "train"):
        assert official_is_test(name) is False, name
    assert official_is_test(None) is None
