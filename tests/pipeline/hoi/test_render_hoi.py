"""render-hoi dexycb on the synthetic DexYCB-layout demo: layout, joints, layers, storage."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.hoi.demo.dexycb import SEQUENCE, SERIALS, SUBJECT
from schemas import LAYER_NAMES, validate_sample
from schemas.occlusion import occlusion_confidence
from schemas.reader import StoreReader
from tests.pipeline.hoi.conftest import FRAMES, RES

LEFT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("left_")]
RIGHT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("right_")]


def _labels(demo_root, key, frame):
    folder = demo_root / key
    with np.load(folder / f"labels_{frame:06d}.npz") as z:
        return {k: z[k] for k in z.files}


def _stored_chunks(store, name: str, reader: StoreReader, i: int) -> np.ndarray:
    """bool [T]: which frame chunks (all layers of a frame: schema v3) of sample i are written in its
    shard file (zarr sharding index at the end of the shard: (offset, nbytes) u64 pairs, all-ones = empty)."""
    S = reader.layout.samples_per_shard
    row = reader.row(i)
    ndim = len(reader.layout.sample_shape(name))
    shard = store.joinpath(name, "c", str(row // S), *["0"] * ndim)
    raw = shard.read_bytes()
    n = S * FRAMES
    idx = np.frombuffer(raw[-(n * 16 + 4):-4], dtype="<u8").reshape(S, FRAMES, 2)
    return idx[row % S, ..., 0] != np.iinfo(np.uint64).max


def test_store_has_every_window_of_every_camera(hoi_store):
    r = StoreReader(hoi_store)
    assert r.layout.kind == "hoi" and r.layout.layers == LAYER_NAMES and r.layout.frames == FRAMES
    keys = sorted(r.key(i) for i in range(len(r)))
    assert len(r) == 6 and not r.failures()  # 12 frames / T=4 -> 3 windows x 2 cameras
    assert sorted(set(keys)) == [f"{SUBJECT}/{SEQUENCE}/{s}" for s in SERIALS]
    for i in range(len(r)):
        validate_sample(r.layout, r.read(i))


def test_joints_match_the_dataset_labels_through_crop_and_frames(hoi_store, demo_root):
    r = StoreReader(hoi_store)
    for i in range(len(r)):
        s = r.read(i)
        first = [r.key(j) for j in range(len(r))][: i + 1].count(r.key(i)) - 1  # window index of this camera
        K = s["K"].astype(np.float64)
        for t in range(FRAMES):
            lab = _labels(demo_root, r.key(i), first * FRAMES + t)
            for h in range(2):  # demo mano_sides = [left, right] = store order
                if np.abs(lab["pose_m"][h]).sum() == 0:
                    assert not s["hand_valid"][t, h] and np.all(s["joints_2d"][t, h] == -1)
                    assert np.all(s["joints_3d"][t, h] == 0) and np.all(s["mano_pose"][t, h] == 0)
                    continue
                assert s["hand_valid"][t, h]
                np.testing.assert_allclose(s["joints_3d"][t, h], lab["joint_3d"][h] * [1, -1, -1], atol=1e-5)
                # labels are OpenCV pixels of the 640x480 image; map them into the crop with K
                scale = K[0, 0] / 615.0
                x0 = (319.5 + 0.5) - K[0, 2] / scale
                y0 = (239.5 + 0.5) - K[1, 2] / scale
                uv = (lab["joint_2d"][h] + 0.5 - [x0, y0]) * scale
                np.testing.assert_allclose(s["joints_2d"][t, h], uv, atol=1e-2)


def test_stored_mano_parameters_reproduce_the_stored_joints(hoi_store):
    from pipeline.hands.model import standin_hand

    s = StoreReader(hoi_store).read(0)
    for h, side in enumerate(("left", "right")):
        v = s["hand_valid"][:, h]
        _, j = standin_hand(side).forward(s["mano_pose"][v, h], s["mano_betas"][h], s["mano_trans"][v, h])
        np.testing.assert_allclose(j, s["joints_3d"][v, h], atol=1e-5)


def test_invalid_frames_have_no_hand_layers_and_write_no_chunks(hoi_store):
    r = StoreReader(hoi_store)
    last = [i for i in range(len(r)) if not r.read(i, ["hand_valid"])["hand_valid"].all()]
    assert len(last) == 2  # the last window of each camera: left hand unannotated in frames 10, 11
    for i in range(len(r)):
        s = r.read(i, ["mlo_depth", "mlo_normal", "layer_present", "hand_valid"])
        present = s["layer_present"]
        np.testing.assert_array_equal(present, (s["mlo_depth"] > 0).any(axis=(2, 3)))
        np.testing.assert_array_equal(present[:, LEFT], np.repeat(s["hand_valid"][:, :1], 6, axis=1))
        assert present[:, RIGHT].all() and present[:, 0].all()
        # a frame chunk is on disk iff some layer is present in the frame (all-zero frames are not)
        np.testing.assert_array_equal(_stored_chunks(hoi_store, "mlo_depth", r, i), present.any(1))
        np.testing.assert_array_equal(_stored_chunks(hoi_store, "mlo_normal", r, i), present.any(1))
    assert not r.read(last[0], ["mlo_depth"])["mlo_depth"][2:, LEFT].any()


def test_layers_agree_with_the_dataset_segmentation_and_show_occlusion(hoi_store, demo_root):
    r = StoreReader(hoi_store)
    s = r.read(0)
    K = s["K"].astype(np.float64)
    scale = K[0, 0] / 615.0
    x0, y0 = 320.0 - K[0, 2] / scale, 240.0 - K[1, 2] / scale
    seg = _labels(demo_root, r.key(0), 0)["seg"]
    # crop the full-res seg (hands + grasped can) into the sample's pixel grid (nearest)
    c = (np.arange(RES) + 0.5) / scale
    rows, cols = np.floor(y0 + c).astype(int), np.floor(x0 + c).astype(int)
    inside = (rows[:, None] >= 0) & (rows[:, None] < 480) & (cols[None] >= 0) & (cols[None] < 640)
    crop = seg[np.clip(rows, 0, 479)][:, np.clip(cols, 0, 639)]
    mask = np.isin(crop, [1, 255]) & inside
    union = (s["mlo_depth"][0] > 0).any(axis=0)
    iou = (mask & union).sum() / (mask | union).sum()
    assert iou > 0.8, iou
    # the right fingers wrap behind the can: some hand pixels are occluded (D < 0.5) by the object
    D = occlusion_confidence(s["mlo_depth"][0].astype(np.float32))
    hidden = (D[RIGHT] > 0) & (D[RIGHT] < 0.5) & (s["mlo_depth"][0, 0] > 0)
    assert hidden.sum() > 5
    # RGB crop is the camera image: where a hand layer is in front, the pixels are skin-coloured
    front_hand = (D[1:] == 1).any(axis=0) & (D[0] < 1)
    rgb = s["rgb"][0].astype(int)
    assert front_hand.sum() > 100
    assert np.median(rgb[front_hand][:, 0] - rgb[front_hand][:, 2]) > 25  # skin: red >> blue
    front_can = D[0] == 1
    assert np.median(rgb[front_can][:, 0] - rgb[front_can][:, 2]) < 0     # the can: mostly blue


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, demo_root):
    cmd = [sys.executable, "cli.py", "render-hoi", "dexycb", "--root", str(tmp_path / "nope"), "--hand-model",
           "stand-in", "--out", str(tmp_path / "o.zarr")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(__import__("tests.conftest").conftest.ROOT))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "is not a folder" in p.stderr
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("bad", [{"hand_model": "mano"}, {"frames": 100}])
def test_bad_options_raise_user_errors(tmp_path, demo_root, bad):
    from pipeline.errors import UserError
    from pipeline.hoi.commands import render_hoi

    args = {"root": demo_root, "hand_model": "stand-in", "out": tmp_path / "o.zarr", "progress": False} | bad
    with pytest.raises(UserError, match="mano.is.tue.mpg.de|gives no clips"):
        render_hoi("dexycb", **args)
    assert not (tmp_path / "o.zarr").exists()


def test_mano_files_give_the_same_samples_as_the_hand_they_encode(tmp_path, demo_root):
    """--hand-model mano with (fake) MANO files made from the stand-in: DexYCB PCA pose_m ->
    smplx gives the same layers and joints; as-shipped left shapedirs change the left hand."""
    from pipeline.hoi.job import build_job, render_hoi_item
    from schemas.config import HoiConfig
    from tests.pipeline.hands.fake_mano import write_fake_mano

    mano = write_fake_mano(tmp_path / "mano")
    sel = {"subjects": None, "sequences": None, "cameras": [SERIALS[0]]}
    runs = {}
    for name, model, fix in (("standin", "stand-in", False), ("mano_fixed", "mano", True), ("mano", "mano", False)):
        cfg = HoiConfig(frames=FRAMES, resolution=64, hand_model=model, fix_left_shapedirs=fix).validate()
        job = build_job("dexycb", demo_root, tmp_path / "x.zarr", cfg, sel, str(mano) if model == "mano" else None)
        assert len(job.items) == 1 and job.items[0].n_samples == 3
        runs[name] = render_hoi_item(job.items[0], job.options)[0]
    a, b, c = runs["standin"], runs["mano_fixed"], runs["mano"]
    np.testing.assert_allclose(a["joints_3d"], b["joints_3d"], atol=1e-5)
    np.testing.assert_array_equal(a["layer_present"], b["layer_present"])
    assert np.mean(np.abs(a["mlo_depth"].astype(np.float32) - b["mlo_depth"].astype(np.float32)) > 1e-3) < 1e-3
    assert np.abs(c["joints_3d"][:, 0] - a["joints_3d"][:, 0]).max() > 1e-3   # left differs (betas != 0)
    np.testing.assert_allclose(c["joints_3d"][:, 1], a["joints_3d"][:, 1], atol=1e-5)  # right does not


def test_preview_hoi_writes_layers_and_overlay(hoi_store, tmp_path):
    from PIL import Image

    from pipeline.hoi.preview_hoi import THUMB, overlay, preview_hoi

    r = StoreReader(hoi_store)
    png, gif = preview_hoi(r, tmp_path / "p.png", 2, tmp_path / "p.gif")
    img = np.asarray(Image.open(png))
    assert img.shape[1] == 13 * THUMB and img.shape[0] > 2 * 3 * THUMB
    with Image.open(gif) as g:
        assert g.n_frames == FRAMES
    s = r.read(0)
    ov = overlay(s["rgb"][0], s["mlo_depth"][0])
    covered = (s["mlo_depth"][0] > 0).any(axis=0)
    assert np.array_equal(ov[~covered], s["rgb"][0][~covered]) and not np.array_equal(ov[covered], s["rgb"][0][covered])


def test_object_pose_and_scale_put_the_canonical_points_on_the_object_layer(hoi_store):
    from scipy.spatial.transform import Rotation

    from pipeline.render.cameras import project
    from schemas.reader import StoreReader

    reader = StoreReader(hoi_store)
    s = reader.read(0)
    t = int(np.flatnonzero(s["layer_present"][:, 0])[0])
    scale = float(s["obj_scale"][0])
    assert 0.01 < scale < 1.0  # a YCB-sized object, in metres per canonical unit
    pts = Rotation.from_quat(s["obj_rot"][t]).apply(scale * s["points"]) + s["obj_trans"][t]
    uv = project(pts, s["K"].astype(np.float64))
    inside = (uv >= 0).all(axis=1) & (uv < RES).all(axis=1)
    px = np.floor(uv[inside]).astype(int)
    depth = s["mlo_depth"][t, 0].astype(np.float32)
    on_layer = depth[px[:, 1], px[:, 0]] > 0
    assert inside.mean() > 0.9 and on_layer.mean() > 0.97
    # points that face the camera lie on the rendered surface (depth agrees within 1 cm)
    n_cam = Rotation.from_quat(s["obj_rot"][t]).apply(s["point_normals"])
    facing = (n_cam[inside] * -pts[inside]).sum(axis=1) > 0.3 * np.linalg.norm(pts[inside], axis=1)
    z = -pts[inside][:, 2]
    d = depth[px[:, 1], px[:, 0]]
    close = np.abs(z - d)[facing & on_layer]
    assert np.median(close) < 0.01
