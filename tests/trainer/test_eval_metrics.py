"""Metric networks and functions on known cases. The networks are RANDOMLY INITIALISED here (no
weights can be downloaded in tests): the cases below hold for any weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.metrics import masked_psnr
from trainer.metrics.frechet import feature_distance, frechet_distance, gaussian
from trainer.metrics.hands import match_errors, summarise
from trainer.metrics.inception import InceptionFeatures
from trainer.metrics.lpips import LPIPS
from trainer.metrics.region import crop, region_box


def _images(n=6, r=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, r // 8, r // 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(r, r), mode="bilinear", align_corners=False)


def test_inception_has_pytorch_fids_layout(tmp_path):
    net = InceptionFeatures(input_size=75)
    state = net.state_dict()
    # torchvision's inception_v3 has 27,161,264 parameters; minus its aux head (3,326,696) plus the
    # 8 extra classes of the TF graph (1008 = 1000 + 8, 8 x 2049) = pytorch-fid's FID Inception
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Conv2d_1a_3x3.bn.running_var"].shape == (32,) and state["fc.weight"].shape == (1008, 2048)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)  # as the TF port
    again = InceptionFeatures(path, input_size=75)
    x = _images(2)
    assert torch.allclose(again(x), net(x))


def test_fid_is_zero_for_identical_sets_and_grows_with_a_shift():
    net = InceptionFeatures(input_size=75)
    x = _images(6)
    fx, fs = net(x).numpy(), net(torch.roll(x, 12, dims=-1)).numpy()
    same, shifted = feature_distance(fx, fx), feature_distance(fx, fs)
    assert abs(same) < 1e-6 * max(1.0, shifted) and shifted > 0


def test_low_rank_frechet_matches_the_dense_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 16)), rng.normal(size=(12, 16)) * 1.3 + 0.2
    assert feature_distance(a, b) == pytest.approx(frechet_distance(*gaussian(a), *gaussian(b)), rel=1e-6)
    c = rng.normal(size=(40, 4))
    assert feature_distance(c, c) == pytest.approx(0.0, abs=1e-9)


def test_lpips_zero_for_identical_positive_for_a_shift_and_reads_both_weight_files(tmp_path):
    net = LPIPS()
    x = _images(3)
    assert torch.all(net(x, x) == 0)
    assert torch.all(net(x, torch.roll(x, 9, dims=-1)) > 0)
    # the two files in their own formats: torchvision's AlexNet (features.* + classifier.*) and lpips' lin layers
    trunk = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    trunk["classifier.1.weight"] = torch.zeros(4096, 9216)
    torch.save(trunk, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save({k: v for k, v in net.state_dict().items() if k.startswith("lin")}, tmp_path / "alex.pth")
    again = LPIPS(tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth")
    y = torch.roll(x, 5, dims=-2)
    assert torch.allclose(again(x, y), net(x, y))


def test_psnr_identical_is_infinite():
    x = _images(2)
    assert masked_psnr(x, x) == float("inf") and masked_psnr(x, torch.roll(x, 3, dims=-1)) < 60


def test_region_box_is_a_square_around_the_mask_over_the_clip():
    mask = torch.zeros(3, 1, 64, 64)
    mask[0, :, 10:20, 30:40] = 1
    mask[2, :, 14:30, 34:38] = 1                                # union: rows 10..29, cols 30..39
    y0, y1, x0, x1 = region_box(mask, margin=0.1)
    assert y1 - y0 == x1 - x0 == 24 and y0 <= 10 and y1 >= 30 and x0 <= 30 and x1 >= 40
    assert region_box(torch.zeros(1, 1, 32, 32)) == (0, 32, 0, 32)
    assert crop(torch.rand(3, 3, 64, 64), (y0, y1, x0, x1), 48).shape == (3, 3, 48, 48)


def test_hand_matching_ignores_labels_and_counts_misses():
    ref = np.stack([np.full((21, 2), 10.0), np.full((21, 2), 50.0)])
    det = [np.full((21, 2), 53.0), np.full((21, 2), 10.0) + [3.0, 4.0]]   # order swapped
    errs = match_errors(det, ref, np.array([True, True]))
    assert errs == pytest.approx([5.0, np.hypot(3, 3)])
    s = summarise(match_errors(det[:1], ref, np.array([True, True])))
    assert s["detection_rate"] == 0.5 and s["mpjpe_px"] == pytest.approx(np.hypot(3, 3))   # hand 0 missed
    assert match_errors(det, ref, np.array([False, True])) == pytest.approx([np.hypot(3, 3)])


def test_ablation_configs_differ_from_the_full_model_in_one_option():
    from pathlib import Path

    from trainer.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    full = load_config(file=root / "full.yaml").to_dict()
    expect = {"no_objaverse": {"use_objaverse": False}, "no_mlo": {"mlo_mode": "depth_only"},
              "mlo_noise_only": {"mlo_mode": "noise_only"}}
    for name, change in expect.items():
        cfg = load_config(file=root / f"{name}.yaml").to_dict()
        diff = {k: v for k, v in cfg.items() if full[k] != v and k != "run_dir"}
        assert diff == change, name


def test_unusable_weight_files_are_one_line_errors(tmp_path):
    """A weights file that exists but is not the network's (not a torch file, wrong keys): a one-line
    UserError naming the option, not a torch / ValueError traceback."""
    from pipeline.errors import UserError
    from trainer.metrics.networks import load_networks

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    wrong = tmp_path / "wrong.pth"
    torch.save({"something.else": torch.zeros(3)}, wrong)
    with pytest.raises(UserError, match="--inception"):
        load_networks(inception_weights=junk, hands=False)
    with pytest.raises(UserError, match="--lpips-trunk/--lpips-lin"):
        load_networks(lpips_trunk=wrong, lpips_lin=wrong, hands=False)
    with pytest.raises(UserError, match="--i3d"):
        load_networks(i3d_weights=junk, hands=False)
