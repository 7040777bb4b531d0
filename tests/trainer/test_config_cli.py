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
