"""Real training runs of the tiny preset on CPU: learning, exact resume, stage 2, guards, logs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserError
from trainer import train as train_mod
from trainer.checkpoint import load_checkpoint, load_model_weights
from trainer.conditions import collate
from trainer.data import MixedStores
from trainer.model import build_model


def test_resumed_run_repeats_the_uninterrupted_loss_sequence(stage1_run, tmp_path):
    cfg, full = stage1_run
    again = dataclasses.replace(cfg, run_dir=str(tmp_path / "resumed"))
    resumed = train_mod.train(again, "stage1", resume=f"{cfg.run_dir}/stage1_step0000002.pt", max_steps=4)
    assert resumed["step"] == 4 and len(resumed["losses"]) == 2
    assert resumed["losses"] == pytest.approx(full["losses"][2:], abs=1e-6)
    a, b = load_checkpoint(full["checkpoint"]), load_checkpoint(resumed["checkpoint"])
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-6), k
    assert a["data"]["items_consumed"] == b["data"]["items_consumed"] == 4 * cfg.stage1_batch * 2


def test_logs_checkpoint_validation_and_diffusers_export(stage1_run):
    from diffusers import UNet2DConditionModel

    cfg, full = stage1_run
    lines = [json.loads(line) for line in open(f"{cfg.run_dir}/metrics.jsonl")]
    rows = [r for r in lines if r.get("split") != "test"]               # training rows; validation rows below
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    val = [r for r in lines if r.get("split") == "test"]
    assert [r["step"] for r in val] == [4] and val[0]["val/clips"] >= 1 and "val/psnr_region" in val[0]
    assert {"step", "loss", "lr", "grad_norm", "samples_per_s", "data_wait_s", "peak_mem_mb"} <= rows[0].keys()
    assert rows[0]["lr"] < rows[-1]["lr"]                                # warm-up
    ckpt = load_checkpoint(full["checkpoint"])
    assert {"model", "optimizer", "lr_scheduler", "ema", "rng", "data", "config", "step"} <= ckpt.keys()
    assert {"torch", "numpy", "python"} <= ckpt["rng"].keys()
    assert list((Path(cfg.run_dir) / "tb").glob("events.*"))
    assert (Path(cfg.run_dir) / "val" / "stage1_step0000004_side.png").exists()
    unet = UNet2DConditionModel.from_pretrained(f"{cfg.run_dir}/export_stage1/unet")
    assert list(unet.config.block_out_channels) == list(cfg.block_out_channels)


def test_stage2_changes_only_motion_module_parameters(stage1_run, tmp_path):
    cfg, full = stage1_run
    cfg2 = dataclasses.replace(cfg, run_dir=str(tmp_path / "s2"), grad_accum=1, ema_decay=0.0, val_every=2,
                               ckpt_every=0, frames=3, stage2_lr=1e-2)
    out = train_mod.train(cfg2, "stage2", init=full["checkpoint"], max_steps=2)
    init = load_checkpoint(full["checkpoint"])
    s1_model = build_model(cfg)
    load_model_weights(s1_model, init)  # stage-1 weights (EMA when present) + motion modules
    s1_model.to_stage2()
    start = s1_model.state_dict()
    end = load_checkpoint(out["checkpoint"])["model"]
    changed = {k for k in end if not torch.equal(end[k], start[k])}
    assert changed and all("motion_modules" in k for k in changed)
    assert (tmp_path / "s2" / "val" / "stage2_step0000002.mp4").exists()


def test_nan_loss_stops_with_a_clear_message(tiny_cfg, monkeypatch):
    monkeypatch.setattr(train_mod, "diffusion_loss", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(train_mod.TrainingDiverged, match="loss is nan at step 0"):
        train_mod.train(tiny_cfg, "stage1", max_steps=1)


def test_adam8bit_without_bitsandbytes_is_a_clear_error():
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="bitsandbytes"):
            train_mod.make_optimizer([torch.nn.Parameter(torch.zeros(1))], 1e-3, eight_bit=True)
    else:
        pytest.skip("bitsandbytes is installed")


@pytest.mark.parametrize("options", [dict(prediction_type="v_prediction", zero_terminal_snr=True, snr_gamma=5.0),
                                     dict(mixed_precision="bf16", pose_guider_mode="conv_in", mlo_mode="noise_only")])
def test_loss_and_sampling_options_stay_finite(tiny_cfg, options):
    from trainer.sample import generate

    cfg = dataclasses.replace(tiny_cfg, **options)
    ds = MixedStores(cfg.stores, cfg)
    model = build_model(cfg)
    if cfg.mixed_precision == "bf16":
        model.vae.to(torch.bfloat16)
    batch = collate([ds.load(0, 0, 0)])
    g = torch.Generator().manual_seed(0)
    loss = train_mod.diffusion_loss(model, model, batch, train_mod.make_scheduler(cfg), g, cfg, torch.device("cpu"))
    loss.backward()
    assert torch.isfinite(loss)
    out = generate(model, ds.load(0, 0, 0), cfg, torch.device("cpu"), steps=2)
    assert out["video"].shape == (1, 64, 64, 3) and bool((out["video"] >= 0).all())
