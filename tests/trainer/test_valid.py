"""The validity mask ``valid`` (schema v4) through the trainer: read from the store (all ones where a
store has none), carried by the compact loader, flipped with the image, shrunk conservatively to
the latent grid, and masking the diffusion loss and evaluate's metrics."""

from __future__ import annotations

import numpy as np
import torch

from schemas.store import LAYER_NAMES
from tests.trainer.test_conditions import R, raw_item
from trainer.compact import compact_item, unpack_bits
from trainer.conditions import collate, collate_compact, latent_valid, masked_mse, prepare_batch, shrink_valid


def _with_valid(item: dict, cols: int) -> dict:
    """``item`` whose ``valid`` is False in its first ``cols`` columns (padding on the left)."""
    v = np.ones(item["rgb"].shape[:3], bool)
    v[..., :cols] = False
    return dict(item, valid=v)


def test_prepare_batch_gives_valid_flips_it_and_defaults_to_ones():
    item = _with_valid(raw_item(LAYER_NAMES), 3)
    c = prepare_batch(collate([item, dict(item, flip=np.bool_(True))]))
    assert c["valid"].shape == (2, 2, 1, R, R)
    np.testing.assert_array_equal(c["valid"][0, :, 0].numpy(), item["valid"])
    np.testing.assert_array_equal(c["valid"][1, :, 0].numpy(), item["valid"][..., ::-1])   # mirrored with the image
    none = prepare_batch(collate([raw_item(("object",), "objaverse")]))
    assert none["valid"].shape == (1, 2, 1, R, R) and bool((none["valid"] == 1).all())


def test_compact_loader_carries_valid_as_bits_exactly():
    items = [_with_valid(raw_item(LAYER_NAMES, seed=k), 5 + k) for k in range(2)]
    assert compact_item(items[0])["valid_bits"].shape == (2, R, R // 8)
    dense, compact = prepare_batch(collate(items)), prepare_batch(collate_compact(items))
    assert torch.equal(dense["valid"], compact["valid"])
    x = np.random.default_rng(0).random((3, 5, 21)) < 0.5
    assert np.array_equal(unpack_bits(torch.from_numpy(np.packbits(x, axis=-1)), 21).numpy(), x)


def test_valid_shrinks_conservatively():
    v = torch.ones(1, 1, 1, 16, 16)
    v[..., 5, 9] = 0                                                 # one padded pixel
    small = shrink_valid(v, 8)
    assert small[..., 2, 4] == 0 and small.sum() == 63               # its 2x2 block only
    lat = latent_valid(v, 2)                                         # 8 x 8 footprints, and their neighbours
    assert lat.shape == (1, 1, 1, 2, 2) and lat.sum() == 0
    lat = latent_valid(torch.ones(1, 1, 1, 64, 64).index_fill_(4, torch.tensor([0]), 0), 8)
    assert lat[..., :, :2].sum() == 0 and bool((lat[..., :, 2:] == 1).all())   # column 0 padded: 2 latent columns masked


def test_masked_mse_is_the_mean_over_valid_elements():
    err = torch.rand(2, 3, 4, 5, 5)
    ones = torch.ones(2, 3, 1, 5, 5)
    torch.testing.assert_close(masked_mse(err, ones), err.mean(dim=(1, 2, 3, 4)))
    w = ones.clone()
    w[1, :, :, :, :2] = 0
    big = err.clone()
    big[1, :, :, :, :2] = 1e6                                        # what the padding would contribute
    torch.testing.assert_close(masked_mse(big, w)[1], err[1, :, :, :, 2:].mean())
    assert masked_mse(err, torch.zeros_like(ones)).eq(0).all()        # nothing valid: no loss


def test_evaluate_scores_only_valid_pixels():
    from types import SimpleNamespace

    from trainer.evaluate import clip_metrics, fill_invalid, joints_on_valid_pixels

    truth = torch.rand(2, 3, 16, 16)
    video = truth.clone()
    video[..., :4] = 1 - video[..., :4]                             # wrong only on the padding
    valid = torch.ones(2, 1, 16, 16)
    valid[..., :4] = 0
    mask = torch.ones(2, 1, 16, 16)
    nets = SimpleNamespace(lpips=None)
    m = clip_metrics(video, truth, mask, nets, 16, valid)
    assert m["psnr_full"] == float("inf") and m["psnr_region"] == float("inf") and m["ssim_full"] > 0.99
    assert clip_metrics(video, truth, mask, nets, 16)["psnr_full"] < 20           # unmasked: the padding counts
    assert torch.equal(fill_invalid(video, truth, valid), truth)
    joints = np.full((2, 2, 21, 2), 8.0)
    joints[0, 1, 3] = (1.5, 8.0)                                     # a joint on the padding
    ok = joints_on_valid_pixels(joints, valid[:, 0].numpy())
    assert ok.tolist() == [[True, False], [True, True]]
