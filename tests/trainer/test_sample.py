"""`python cli.py sample` writes a playable video, a side-by-side and region metrics; PSNR/SSIM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch

from trainer.metrics import masked_psnr, masked_ssim

ROOT = Path(__file__).resolve().parents[2]


def test_sample_command_writes_a_playable_video_and_metrics(stage1_run, objaverse_store, tmp_path):
    cfg, run = stage1_run
    out = tmp_path / "clip.mp4"
    proc = subprocess.run([sys.executable, "cli.py", "sample", "--checkpoint", run["checkpoint"], "--store",
                           str(objaverse_store), "--index", "1", "--out", str(out), "--steps", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "PSNR" in proc.stdout
    frames = [f for f in imageio.get_reader(out)]
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)           # every frame of the clip
    side = [f for f in imageio.get_reader(tmp_path / "clip_side.mp4")]
    assert len(side) == 4 and side[0].shape == (64, 192, 3)            # conditions | result | truth
    metrics = json.loads((tmp_path / "clip.json").read_text())
    assert {"psnr_region", "ssim_region", "psnr_full", "key"} <= metrics.keys()
    bad = subprocess.run([sys.executable, "cli.py", "sample", "--checkpoint", run["checkpoint"], "--store",
                          str(objaverse_store), "--index", "99", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert bad.returncode == 2 and "out of range" in bad.stderr


def test_region_metrics():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    b = a.clone()
    b[..., :4, :] = 1 - b[..., :4, :]                                   # damage outside the mask only
    assert masked_psnr(a, b, mask) == float("inf") and masked_psnr(a, b) < 20
    assert abs(masked_ssim(a, a, mask) - 1) < 1e-5
    noisy = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert 15 < masked_psnr(noisy, a, mask) < 25 and masked_ssim(noisy, a, mask) < 0.95


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddim_loop_with_an_oracle_denoiser_recovers_the_ground_truth(objaverse_store, prediction):
    """Swap the network for the exact answer: the sampling loop (timesteps, CFG mix, DDIM
    update, zero-terminal-SNR spacing) must then return the clip's own latents."""
    from trainer.conditions import collate, prepare_batch
    from trainer.config import load_config
    from trainer.data import MixedStores
    from trainer.inference import ddim_scheduler
    from trainer.model import build_model
    from trainer.sample import generate

    cfg = load_config("tiny", overrides={"stores": [str(objaverse_store)], "prediction_type": prediction,
                                         "zero_terminal_snr": prediction == "v_prediction"})
    model = build_model(cfg).eval()
    item = MixedStores(cfg.stores, cfg, frames=4).load(0, 0, 0)
    x0 = model.encode(prepare_batch(collate([item]))["target"][0])[None]
    ac = ddim_scheduler(cfg).alphas_cumprod

    def oracle(noisy, t, cond, refs, tokens=None, reuse_reference=False):
        a = ac[t[0]].item()
        eps = (noisy - a**0.5 * x0) / (1 - a) ** 0.5
        return {"epsilon": eps, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0, "sample": x0.expand_as(noisy)}[prediction]

    model.forward = oracle
    out = generate(model, item, cfg, torch.device("cpu"), steps=10)
    assert out["metrics"]["latent_rel_error"] < 1e-4


def test_guidance_one_skips_the_unconditional_branch_and_changes_nothing(objaverse_store):
    """At guidance 1 sampling runs only the conditional branch; that must equal the two-branch mix
    uncond + g (full - uncond) as g -> 1 (both branches run, mixed with weight 1 + 1e-6)."""
    from trainer.config import load_config
    from trainer.data import MixedStores
    from trainer.inference import sample_clips
    from trainer.model import build_model

    cfg = load_config("tiny", overrides={"stores": [str(objaverse_store)]})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for p in model.parameters():  # give the zero-initialised condition paths weights: the branches differ
        p.data.add_(torch.randn_like(p) * 0.02)
    item = MixedStores(cfg.stores, cfg, frames=1).load(0, 0, 0)
    calls = []
    forward = model.forward
    model.forward = lambda noisy, *a, **k: calls.append(noisy.shape[0]) or forward(noisy, *a, **k)
    fast = sample_clips(model, [item], cfg, torch.device("cpu"), steps=3, guidance=1.0, seeds=[5])["video"]
    assert set(calls) == {1}
    calls.clear()
    mixed = sample_clips(model, [item], cfg, torch.device("cpu"), steps=3, guidance=1.0 + 1e-6, seeds=[5])["video"]
    assert set(calls) == {2}
    assert torch.allclose(fast, mixed, atol=1e-4)
    guided = sample_clips(model, [item], cfg, torch.device("cpu"), steps=3, guidance=3.0, seeds=[5])["video"]
    assert not torch.allclose(fast, guided, atol=1e-3)


def test_single_clip_sampling_is_the_batched_loop(objaverse_store):
    """``sample`` (trainer.sample.generate) runs ``sample_clips``: the same clip for the same seed, and its
    latent error is measured on the loop's own final latents."""
    from trainer.config import load_config
    from trainer.data import MixedStores
    from trainer.inference import sample_clips
    from trainer.model import build_model
    from trainer.sample import generate

    cfg = load_config("tiny", overrides={"stores": [str(objaverse_store)]})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    item = MixedStores(cfg.stores, cfg, frames=4).load(0, 0, 0)
    one = generate(model, item, cfg, torch.device("cpu"), steps=2, guidance=2.0, seed=3)
    batched = sample_clips(model, [item, item], cfg, torch.device("cpu"), steps=2, guidance=2.0, seeds=[7, 3])
    assert one["video"].shape == (4, 64, 64, 3)
    assert torch.allclose(batched["video"][1].permute(0, 2, 3, 1), torch.as_tensor(one["video"]), atol=1e-4)
    assert not torch.allclose(batched["video"][0], batched["video"][1], atol=1e-3)   # the seed matters
    assert one["metrics"]["guidance"] == 2.0 and one["metrics"]["frames"] == 4
