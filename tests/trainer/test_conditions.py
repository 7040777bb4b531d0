"""Zero-fill to 13 layers, D, flip, jitter and per-source zeroing (trainer.conditions)."""

from __future__ import annotations

import numpy as np
import torch

from schemas.occlusion import occlusion_confidence
from schemas.store import LAYER_NAMES, N_LAYERS
from trainer.conditions import SOURCES, collate, condition_channels, expand_layers, flip_batch, prepare_batch

R = 16


def raw_item(layers: tuple[str, ...], source: str = "hoi", frames: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ls = len(layers)
    depth = np.where(rng.random((frames, ls, R, R)) < 0.5, rng.uniform(0.4, 0.6, (frames, ls, R, R)), 0)
    normal = rng.integers(1, 256, (frames, ls, R, R, 3)).astype(np.uint8) * (depth > 0)[..., None].astype(np.uint8)
    return {"rgb": rng.integers(0, 256, (frames, R, R, 3), dtype=np.uint8), "normal": normal,
            "depth": depth.astype(np.float16),
            "layer_idx": np.array([LAYER_NAMES.index(n) for n in layers], dtype=np.int64),
            "refs": rng.integers(0, 256, (7, R, R, 3), dtype=np.uint8),
            "points": rng.normal(size=(2048, 6)).astype(np.float32), "source": np.int64(SOURCES.index(source)),
            "ref_keep": np.float32(1), "jitter": np.ones(3, np.float32), "flip": np.bool_(False)}


def test_layers_not_stored_are_zero_filled_in_the_fixed_order():
    obj = raw_item(("object",), "objaverse")
    hands = raw_item(LAYER_NAMES[1:], "human", seed=1)
    batch = collate([obj, hands])
    assert batch["layer_idx"].shape == (2, 12) and (batch["layer_idx"][0, 1:] == -1).all()  # padded
    full = expand_layers(batch["depth"].float(), batch["layer_idx"])
    assert full.shape == (2, 2, N_LAYERS, R, R)
    assert torch.equal(full[0, :, 0], torch.from_numpy(obj["depth"][:, 0]).float())
    assert full[0, :, 1:].abs().sum() == 0          # Objaverse: hand layers zero
    assert full[1, :, 0].abs().sum() == 0           # human: object layer zero
    assert torch.equal(full[1, :, 1:], torch.from_numpy(hands["depth"]).float())


def test_prepare_batch_uses_the_one_definition_of_D_and_decodes_normals():
    item = raw_item(LAYER_NAMES)
    c = prepare_batch(collate([item]), tau=0.05)
    want = occlusion_confidence(item["depth"].astype(np.float32), tau=0.05, layer_axis=-3)
    np.testing.assert_allclose(c["D"][0].numpy(), want, atol=1e-6)
    assert c["H"].shape == (1, 2, 39, R, R) and c["H_o"].shape == (1, 2, 3, R, R)
    n = c["H"][0].view(2, 13, 3, R, R)
    absent = torch.from_numpy(item["depth"] == 0)
    assert (n.permute(0, 1, 3, 4, 2)[absent] == 0).all()
    assert n.abs().max() <= 1 and c["target"].min() >= -1 and c["target"].max() <= 1
    assert torch.equal(c["mask"][0, :, 0] > 0, torch.from_numpy((item["depth"] > 0).any(1)))


def test_human_data_zeroes_object_conditions_and_dropout_zeroes_references():
    human, hoi = raw_item(LAYER_NAMES[1:], "human"), raw_item(LAYER_NAMES, "hoi")
    dropped = dict(raw_item(LAYER_NAMES, "hoi", seed=2), ref_keep=np.float32(0))
    c = prepare_batch(collate([human, hoi, dropped]))
    assert c["refs"][0, :6].abs().sum() == 0 and c["refs"][0, 6].abs().sum() > 0   # views zero, background kept
    assert c["points"][0].abs().sum() == 0 and c["H_o"][0].abs().sum() == 0
    assert c["refs"][1].abs().sum() > 0 and c["points"][1].abs().sum() > 0
    assert c["refs"][2].abs().sum() == 0 and c["points"][2].abs().sum() == 0


def test_flip_swaps_hands_negates_normal_x_and_mirrors_the_object():
    item = raw_item(LAYER_NAMES)
    a = prepare_batch(collate([item]))
    b = prepare_batch(collate([dict(item, flip=np.bool_(True))]))
    na, nb = a["H"].view(1, 2, 13, 3, R, R), b["H"].view(1, 2, 13, 3, R, R)
    left, right = LAYER_NAMES.index("left_index"), LAYER_NAMES.index("right_index")
    mirrored = na[:, :, left].flip(-1)
    assert torch.equal(nb[:, :, right, 1:], mirrored[:, :, 1:])                      # y, z unchanged
    assert torch.equal(nb[:, :, right, 0], -mirrored[:, :, 0])                       # x negated
    assert torch.equal(nb[:, :, 0, 2], na[:, :, 0, 2].flip(-1))                      # object stays object
    assert torch.equal(b["D"][:, :, right], a["D"][:, :, left].flip(-1))
    assert torch.equal(b["target"], a["target"].flip(-1)) and torch.equal(b["mask"], a["mask"].flip(-1))
    assert torch.equal(b["refs"][0, 2], a["refs"][0, 3].flip(-1))                    # left view <- mirrored right
    assert torch.equal(b["refs"][0, 6], a["refs"][0, 6].flip(-1))                    # background mirrored
    assert torch.equal(b["points"][0, :, [0, 3]], -a["points"][0, :, [0, 3]])
    c = {"target": a["target"], "refs": a["refs"], "normal": na, "depth": torch.rand(1, 2, 13, R, R),
         "points": a["points"]}
    twice = flip_batch(flip_batch(c, torch.tensor([True])), torch.tensor([True]))
    for k in c:
        assert torch.equal(twice[k], c[k]), k
    mixed = prepare_batch(collate([item, dict(item, flip=np.bool_(True))]))          # per-sample flags
    assert torch.equal(mixed["H"][0], a["H"][0]) and torch.equal(mixed["H"][1], b["H"][0])


def test_colour_jitter_changes_rgb_only():
    item = raw_item(LAYER_NAMES)
    a = prepare_batch(collate([item]))
    b = prepare_batch(collate([dict(item, jitter=np.array([1.2, 0.8, 0.5], np.float32))]))
    assert not torch.allclose(a["target"], b["target"]) and not torch.allclose(a["refs"], b["refs"])
    for k in ("H", "D", "H_o", "points", "mask"):
        assert torch.equal(a[k], b[k])


def test_depth_only_ablation_gives_a_single_composite_depth():
    c = prepare_batch(collate([raw_item(LAYER_NAMES)]), mlo_mode="depth_only")
    assert c["H"].shape[2] == condition_channels("depth_only")[0] == 1
    assert c["H"].max() <= 1 and c["H"].min() >= 0 and c["D"].abs().sum() == 0
