"""Config layering (preset -> file -> overrides) and the `train` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from schemas.config import ConfigError
from trainer.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_presets_file_and_overrides_layer_in_order(tmp_path):
    tiny, sd15 = load_config("tiny"), load_config("sd15")
    assert tiny.resolution == 64 and sd15.resolution == 512 and sd15.block_out_channels == [320, 640, 1280, 1280]
    assert sd15.stage1_batch == 4 and sd15.stage1_lr == 1e-5 and sd15.stage2_lr == 8e-6 and sd15.frames == 24
    f = tmp_path / "c.yaml"
    f.write_text("preset: sd15\nstage1_lr: 2.0e-5\nmlo_mode: noise_only\n")
    cfg = load_config(file=f, overrides=["stage1_lr=3e-5", "stores=[a.zarr, b.zarr]", "use_objaverse=false"])
    assert cfg.preset == "sd15" and cfg.stage1_lr == 3e-5 and cfg.mlo_mode == "noise_only"
    assert cfg.stores == ["a.zarr", "b.zarr"] and cfg.use_objaverse is False
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"pose_guider_mode": "conv_in"}))
    assert load_config(file=j).pose_guider_mode == "conv_in"
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_config(overrides=["learning_rate=1"])
    with pytest.raises(ConfigError, match="mlo_mode"):
        load_config(overrides=["mlo_mode=none"])


def test_sd15_preset_builds_the_paper_size_model_without_weights():
    from diffusers import UNet2DConditionModel

    from trainer.model import unet_config

    cfg = load_config("sd15")
    with torch.device("meta"):  # shapes only: no weights, no download, no 3.4 GB allocation
        unet = UNet2DConditionModel.from_config(unet_config(cfg))
    n = sum(p.numel() for p in unet.parameters())
    assert 850e6 < n < 870e6 and unet.config.cross_attention_dim == 768   # SD1.5 UNet: 859.5M


def run_cli(*args):
    return subprocess.run([sys.executable, "cli.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_train_command_runs_and_missing_store_is_exit_2(objaverse_store, tmp_path):
    missing = run_cli("train", "stage2", "--store", str(tmp_path / "none.zarr"))
    assert missing.returncode == 2 and "render-objaverse" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    ok = run_cli("train", "stage1", "--store", str(objaverse_store), "--run-dir", str(tmp_path / "run"),
                 "--steps", "1", "--set", "val_every=0", "--set", "mlo_mode=depth_only")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "run" / "stage1_last.pt").exists() and "stage1 done" in ok.stdout
    again = run_cli("train", "stage1", "--resume", str(tmp_path / "run" / "stage1_last.pt"), "--steps", "2")
    assert again.returncode == 0, again.stderr                       # the run's own config (store, run dir)
    assert "resumed" in again.stdout and "2 steps" in again.stdout
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2]


def test_config_errors_are_caught_before_training(tmp_path):
    with pytest.raises(ConfigError, match="v_prediction"):
        load_config(overrides=["zero_terminal_snr=true", "prediction_type=epsilon"])  # undefined at zero SNR
    load_config(overrides=["zero_terminal_snr=true", "prediction_type=v_prediction"])
    load_config(overrides=["zero_terminal_snr=true"])  # the tiny preset predicts x0: defined at zero SNR
    with pytest.raises(ConfigError, match="latent=vae"):
        load_config(overrides=["pretrained_sd15=/somewhere"])  # SD's weights need SD's VAE, not pixel patches
    for bad in (["log_every=0"], ["sample_steps=0"], ["stage1_lr=-1"], ["num_workers=-1"]):
        with pytest.raises(ConfigError):
            load_config(overrides=bad)
    broken = tmp_path / "c.yaml"
    broken.write_text("stage1_lr: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(file=broken)


def test_stage2_init_takes_the_stage1_config_and_resume_keeps_the_data_position(objaverse_store, tmp_path):
    run = tmp_path / "run"
    ok = run_cli("train", "stage1", "--store", str(objaverse_store), "--run-dir", str(run), "--steps", "1",
                 "--set", "val_every=0", "--set", "prediction_type=v_prediction")
    assert ok.returncode == 0, ok.stderr
    ckpt = run / "stage1_last.pt"
    # stage 2 inherits stage 1's store, run folder and prediction type without repeating them
    s2 = run_cli("train", "stage2", "--init", str(ckpt), "--steps", "1", "--set", "val_every=0")
    assert s2.returncode == 0, s2.stderr
    assert (run / "stage2_last.pt").exists() and "without --init" not in s2.stdout
    assert torch.load(run / "stage2_last.pt", weights_only=False)["config"]["prediction_type"] == "v_prediction"
    clash = run_cli("train", "stage2", "--init", str(ckpt), "--set", "prediction_type=epsilon")
    assert clash.returncode == 2 and "cannot change prediction_type" in clash.stderr
    moved = run_cli("train", "stage1", "--resume", str(ckpt), "--set", "grad_accum=4")
    assert moved.returncode == 2 and "cannot change grad_accum" in moved.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    bad = run_cli("train", "stage1", "--resume", str(junk))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_every_trainable_reference_parameter_feeds_a_reader():
    """AppearanceNet freezes exactly what comes after its last writer: after one backward
    through the denoiser, every trainable reference parameter has a gradient (none unused
    under DDP), including the last up block's resnets (the high-resolution appearance)."""
    from tests.trainer.test_model import inputs, perturb
    from trainer.model import build_model

    model = build_model(load_config("tiny"))
    perturb(model.pose_guider), perturb(model.geo_embed), perturb(model.mlo_embed), perturb(model.unet)
    model(*inputs()).square().mean().backward()
    ref = dict(model.reference_unet.named_parameters())
    # None = outside the graph (DDP's "unused parameter"); zeros are fine (e.g. cross-attention
    # over the reference net's constant context)
    missing = [n for n, p in ref.items() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    last_resnets = [p for n, p in ref.items() if n.startswith(f"up_blocks.{len(model.reference_unet.up_blocks) - 1}.resnets")]
    assert last_resnets and all(p.requires_grad and p.grad.abs().sum() > 0 for p in last_resnets)
    assert not any(p.requires_grad for p in model.reference_unet.conv_out.parameters())
