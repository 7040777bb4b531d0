"""`generate`: the demo HOI sequence, exported in the open sequence format, through a tiny stage-2
model into one video longer than the trained window (blended overlapping windows)."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from trainer.inference import blend_weights, plan_windows

FRAMES = 10  # > the tiny model's 4-frame window


def test_windows_cover_the_clip_and_blend_only_shared_frames():
    wins = plan_windows(120, 24, 6)
    assert wins[0] == (0, 24) and wins[-1][1] == 120 and all(b[0] - a[0] == 18 for a, b in zip(wins[:-2], wins[1:-1], strict=True))
    w = blend_weights(wins, 120, 6)
    total = torch.zeros(120)
    for (s, e), x in zip(wins, w, strict=True):
        total[s:e] += x
    assert (total > 0).all() and w[0][0] == 1 and w[-1][-1] == 1 and w[1][0] < 1
    assert plan_windows(3, 4, 1) == [(0, 3)]


@pytest.fixture(scope="module")
def demo_sequence(tmp_path_factory):
    from pipeline.hoi.demo.dexycb import make_demo
    from pipeline.hoi.export_sequence import export

    root = tmp_path_factory.mktemp("dexycb")
    make_demo(root, FRAMES, 0)
    out = tmp_path_factory.mktemp("seq")
    summary = export("dexycb", root, out, {"cameras": None}, "stand-in", None, None, echo=lambda *a: None)
    return summary.written[0][1]


def test_generate_a_video_longer_than_the_window(demo_sequence, tiny_cfg, tmp_path):
    import dataclasses

    from pipeline.hoi.sequence_conditions import render_conditions
    from trainer.checkpoint import architecture, save_checkpoint
    from trainer.generate import generate
    from trainer.model import build_model

    cfg = dataclasses.replace(tiny_cfg, sample_steps=2)
    model = build_model(cfg, "stage2")
    ckpt = save_checkpoint(tmp_path / "stage2.pt", stage="stage2", step=0, config=cfg.to_dict(),
                           model=model.state_dict(), arch=architecture(model, cfg))
    info = generate(str(ckpt), str(demo_sequence), str(tmp_path / "gen"), hand_model="stand-in", steps=2,
                    log=lambda *a: None, render_conditions=render_conditions)
    video = np.stack([f for f in imageio.get_reader(tmp_path / "gen" / "video.mp4")])  # list() would ask len = inf
    assert video.shape == (FRAMES, 64, 64, 3) and video.std() > 0
    side = imageio.get_reader(tmp_path / "gen" / "side.mp4").get_data(0)
    assert side.shape == (64, 256, 3)
    assert info["windows"] == [[0, 4], [3, 7], [6, 10]] and info["frames"] == FRAMES
    assert json.loads((tmp_path / "gen" / "inputs.json").read_text())["references"] == "rendered from the object mesh"
    assert imageio.imread(tmp_path / "gen" / "inputs.png").shape == (64, 7 * 64, 3)


def test_a_mano_motion_file_becomes_the_same_sequence(demo_sequence, tmp_path):
    from pipeline.sequence_format import read_sequence
    from trainer.motion_input import sequence_from_motion

    seq = read_sequence(demo_sequence)
    cam = next(iter(seq.cameras.values()))
    fields = {f"{s}_{k}": getattr(h, k) for s, h in seq.hands.items() for k in ("pose", "betas", "trans", "valid")}
    np.savez(tmp_path / "motion.npz", **fields, flat_hand_mean=seq.flat_hand_mean, object_poses=seq.object_poses,
             K=cam.K, width=cam.width, height=cam.height, cam_to_world=cam.cam_to_world)
    folder = sequence_from_motion(tmp_path / "motion.npz", seq.object_mesh, tmp_path / "seq")
    again = read_sequence(folder)
    assert again.n_frames == seq.n_frames and again.hands.keys() == seq.hands.keys()
    for side, h in seq.hands.items():
        assert np.array_equal(again.hands[side].pose, h.pose) and np.array_equal(again.hands[side].trans, h.trans)
    assert np.allclose(again.object_poses, seq.object_poses)
    assert np.allclose(again.cameras["cam0"].cam_to_world, cam.cam_to_world)


def test_user_reference_images_replace_the_rendered_views(tmp_path):
    from pipeline.errors import UserError
    from schemas.store import REF_VIEW_NAMES
    from trainer.generate import user_references

    for k, name in enumerate(REF_VIEW_NAMES):
        imageio.imwrite(tmp_path / f"{name}.png", np.full((40, 30, 3), 10 * k, np.uint8))
    refs = user_references(tmp_path, 64)
    assert refs.shape == (6, 64, 64, 3) and [int(r[0, 0, 0]) for r in refs] == [0, 10, 20, 30, 40, 50]
    (tmp_path / "top.png").unlink()
    with pytest.raises(UserError, match="no top.png"):
        user_references(tmp_path, 64)


def test_a_motion_file_missing_a_hand_field_is_a_one_line_error(tmp_path):
    """A hand with a pose but no betas / trans, or a .npy instead of an .npz: UserError naming
    what is wrong, not a KeyError / AttributeError traceback."""
    from trainer.motion_input import sequence_from_motion

    mesh = tmp_path / "box.obj"
    mesh.write_text("v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nf 1 2 3\n")
    n = 2
    base = dict(right_pose=np.zeros((n, 48)), object_poses=np.tile(np.eye(4), (n, 1, 1)), K=np.eye(3),
                width=8, height=8)
    for missing in ("right_betas", "right_trans"):
        fields = dict(base, right_betas=np.zeros(10), right_trans=np.zeros((n, 3)))
        del fields[missing]
        np.savez(tmp_path / "motion.npz", **fields)
        with pytest.raises(UserError, match=missing):
            sequence_from_motion(tmp_path / "motion.npz", mesh, tmp_path / f"seq_{missing}")
    np.save(tmp_path / "motion.npy", np.zeros((n, 48)))  # one array, not named fields
    with pytest.raises(UserError, match="not an .npz"):
        sequence_from_motion(tmp_path / "motion.npy", mesh, tmp_path / "seq_npy")
