"""HOT3D-Clips: the adapter on the synthetic HOT3D-Clips demo, through the real runner; the
camera model, undistortion, upright turn and MANO conventions re-derived here from the official
code's formulas (facebookresearch/hot3d @ e814021 ``hot3d/clips``, facebookresearch/
hand_tracking_toolkit @ ffb20d0)."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.model import standin_hand
from pipeline.hands.standin import standin_arrays
from pipeline.hoi.adapter import make_selection
from pipeline.hoi.datasets.hot3d import Hot3DAdapter, mano_pose
from pipeline.hoi.datasets.hot3d_camera import Fisheye624, pinhole_K, undistort_upright, upright_K
from pipeline.hoi.demo.hot3d import BOX_ID, CAN_ID, CLIP_ID, COEFFS, RGB, SLAM, foreground_masks, make_demo
from schemas import validate_sample
from schemas.reader import StoreReader
from tests.pipeline.hoi.layer_iou import layer_iou

FRAMES, N_FRAMES, RES = 4, 5, 128
CLIP = f"train_aria/clip-{CLIP_ID:06d}"


@pytest.fixture(scope="module")
def hot3d_root(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("hot3d") / "hot3d", n_frames=N_FRAMES)


@pytest.fixture(scope="module")
def hot3d_store(ray_cluster, hot3d_root, tmp_path_factory) -> Path:
    """render-hoi hot3d --cameras 214-1 --cameras 1201-1 --hand-model stand-in through the real runner."""
    from pipeline.hoi.commands import render_hoi

    out = tmp_path_factory.mktemp("hot3d_store") / "hoi.zarr"
    render_hoi("hot3d", root=hot3d_root, hand_model="stand-in", out=out, frames=FRAMES, resolution=RES,
               cameras=[RGB, SLAM[0]], workers=1, progress=False)
    return out


def _item(stream: str) -> WorkItem:
    return WorkItem(key=f"{CLIP}/{stream}", locator=f"{CLIP}/{stream}", n_samples=1)


def _frame_json(root: Path, fid: int, kind: str) -> dict:
    with tarfile.open(root / f"{CLIP}.tar") as tar:
        return json.load(tar.extractfile(f"{fid:06d}.{kind}.json"))


def _rewrite_clip(root: Path, change) -> None:
    """Rewrite the clip tar with ``change(name, bytes) -> bytes | None`` (None drops the member)."""
    path = root / f"{CLIP}.tar"
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            data = change(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


# -- the camera model: camera.py / camera_distortion.py written out -------------------------------
def _toolkit_window(v: np.ndarray, f, c, k) -> np.ndarray:
    """eye_to_window of OVR624CameraModel, line by line: ArctanProjection.project (L178-183),
    OVR624Distortion.evaluate (L387-415), then q * f + c (camera.py L323-327)."""
    x, y, z = np.moveaxis(v, -1, 0)
    r = np.sqrt(x * x + y * y)
    s = np.arctan2(r, z) / np.maximum(r, 2.0 ** -128)
    p = np.stack((x * s, y * s), axis=-1)
    k1, k2, k3, k4, k5, k6, p1, p2, s1, s2, s3, s4 = k
    r2 = np.clip((p * p).sum(axis=-1, keepdims=True), -(np.pi ** 2), np.pi ** 2)
    r4, r6 = r2 * r2, r2 * r2 * r2
    r8, r10, r12 = r4 * r4, r4 * r6, r6 * r6
    uv = p * (1 + k1 * r2 + k2 * r4 + k3 * r6 + k4 * r8 + k5 * r10 + k6 * r12)
    x, y = uv[..., 0], uv[..., 1]
    x2, y2, xy = x * x, y * y, x * y
    r2 = x2 + y2
    x = x + 2 * p2 * xy + p1 * (r2 + 2 * x2)
    y = y + 2 * p1 * xy + p2 * (r2 + 2 * y2)
    r4 = r2 * r2
    x, y = x + s1 * r2 + s2 * r4, y + s3 * r2 + s4 * r4
    return np.stack((x, y), axis=-1) * f + c


def test_fisheye624_is_the_toolkits_model():
    k = (*COEFFS[:8], 1e-3, -2e-4, 5e-4, 3e-4)                       # thin prism on too
    calib = {"image_width": 352, "image_height": 300, "projection_model_type": "CameraModelType.FISHEYE624"}
    aria = Fisheye624.from_calibration({**calib, "projection_params": [150.0, 170.2, 150.9, *k]})
    quest = Fisheye624.from_calibration({**calib, "projection_params": [150.0, 149.0, 170.2, 150.9, *k]})
    assert aria.f == (150.0, 150.0) and aria.c == (170.2, 150.9)        # camera.py L445-449: Aria's one focal
    assert quest.f == (150.0, 149.0) and quest.c == (170.2, 150.9)
    v = np.random.default_rng(0).normal([0.0, 0.0, 1.0], 0.6, (500, 3))
    for cam in (aria, quest):
        np.testing.assert_allclose(cam.project(v), _toolkit_window(v, np.array(cam.f), np.array(cam.c), k), atol=1e-9)
        w = cam.project(v[v[:, 2] > 0.3])
        ray = cam.unproject(w)
        np.testing.assert_allclose(cam.project(ray), w, atol=1e-6)
    with pytest.raises(ValueError, match="only CameraModelType.FISHEYE624"):
        Fisheye624.from_calibration({**calib, "projection_model_type": "PinholePlane", "projection_params": [1, 1, 1, 1]})


def test_undistort_and_upright_put_a_point_where_the_pinhole_sees_it():
    """convert_to_pinhole_camera (same f, c) + warp_image, then np.rot90(k=3) (vis_clips.py L185):
    a dot drawn at the fisheye pixel of a 3D point lands at that point's upright pinhole pixel."""
    cam = Fisheye624((200, 160), (90.0, 90.0), (101.3, 78.6), COEFFS)
    K = pinhole_K(cam)
    for p in ([0.1, -0.05, 0.4], [-0.2, 0.15, 0.5], [0.0, 0.0, 1.0]):
        img = np.zeros((160, 200), np.uint8)
        u, v = np.rint(_toolkit_window(np.array(p), np.array(cam.f), np.array(cam.c), COEFFS)).astype(int)
        img[v - 1:v + 2, u - 1:u + 2] = 255
        up = undistort_upright(img, cam, K)
        assert up.shape == (200, 160)
        ys, xs = np.nonzero(up > 60)
        # pinhole pixel in the sensor camera, then rot90(k=3)'s index map: new[r', c'] = old[H-1-c', r']
        pu, pv = K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]
        idx = np.arange(160 * 200).reshape(160, 200)
        rot = np.rot90(idx, k=3)
        r_, c_ = np.argwhere(rot == idx[int(round(pv)), int(round(pu))])[0]
        assert abs(ys.mean() - r_) < 1.5 and abs(xs.mean() - c_) < 1.5, (p, ys.mean(), xs.mean(), r_, c_)
        Ku = upright_K(K, 160)                      # and the upright K projects the turned point there
        x, y, z = -p[1], p[0], p[2]                 # R_UPRIGHT: x' = -y, y' = x
        assert abs(Ku[0, 0] * x / z + Ku[0, 2] - xs.mean()) < 1.5 and abs(Ku[1, 1] * y / z + Ku[1, 2] - ys.mean()) < 1.5


# -- MANO: hand_models/mano_hand_model.py -------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _smplx_pca_mano(side: str):
    """``smplx.create(..., "mano", use_pca=True, num_pca_comps=15)`` (mano_hand_model.py L101-115)
    with smplx's default ``flat_hand_mean=False``, on the stand-in's arrays."""
    import smplx
    import torch
    from smplx.utils import Struct

    a = dict(standin_arrays(side))
    a["f"] = np.asarray(a["f"], np.int64)
    with contextlib.redirect_stdout(io.StringIO()):
        return smplx.MANO(model_path="", data_struct=Struct(**a), is_rhand=side == "right", use_pca=True,
                          num_pca_comps=15, batch_size=3, dtype=torch.float64)


def test_mano_pca_follows_the_toolkit():
    import torch

    rng = np.random.default_rng(2)
    thetas, wrist, betas = rng.normal(0, 1, (3, 15)), rng.normal(0, 0.3, (3, 6)), rng.normal(0, 0.5, 10)
    for side in ("left", "right"):
        model = standin_hand(side)
        layer = _smplx_pca_mano(side)
        t = lambda x: torch.tensor(np.asarray(x, np.float64))  # noqa: E731
        with torch.no_grad():
            ref = layer(betas=t(np.tile(betas, (3, 1))), global_orient=t(wrist[:, :3]), hand_pose=t(thetas),
                        transl=t(wrist[:, 3:])).vertices.numpy()
        pose, trans = mano_pose(thetas, wrist, model)
        np.testing.assert_allclose(model.forward(pose, betas, trans)[0], ref, atol=1e-9)
    assert np.abs(standin_hand("right").hands_mean).max() > 0.1     # flat_hand_mean=True would show


def test_left_shapedirs_are_fixed_as_the_toolkit_fixes_them(tmp_path):
    """mano_hand_model.py L117-127: negate MANO_LEFT's shapedirs x when they equal the right's."""
    from pipeline.hands.mano_loading import load_mano_arrays
    from tests.pipeline.hands.fake_mano import write_fake_mano

    assert Hot3DAdapter.fix_left_shapedirs is True
    mano = write_fake_mano(tmp_path / "mano")                     # MANO_LEFT ships the right hand's shapedirs
    left, _ = load_mano_arrays(mano, "left", False)
    right, _ = load_mano_arrays(mano, "right", False)
    toolkit = left["shapedirs"].copy()
    if np.abs(toolkit[:, 0, :] - right["shapedirs"][:, 0, :]).sum() < 1:
        toolkit[:, 0, :] *= -1
    np.testing.assert_array_equal(load_mano_arrays(mano, "left", True)[0]["shapedirs"], toolkit)
    assert not np.array_equal(toolkit, left["shapedirs"])


# -- a clip through the adapter ------------------------------------------------------------------
def _se3(d: dict) -> np.ndarray:
    """se3_from_dict, with the w-first quaternion written out as a matrix."""
    w, x, y, z = d["quaternion_wxyz"]
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    M = np.eye(4)
    M[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    M[:3, 3] = d["translation_xyz"]
    return M


def test_a_clip_is_read_frame_by_frame_in_the_upright_pinhole_camera(hot3d_root):
    import torch

    adapter = Hot3DAdapter()
    models = {s: standin_hand(s) for s in ("left", "right")}
    ids = list(range(FRAMES))
    clip = adapter.load_clip(hot3d_root, _item(RGB), ids, models)
    cal = _frame_json(hot3d_root, 0, "cameras")[RGB]["calibration"]
    f, cx, cy = cal["projection_params"][:3]
    h = cal["image_height"]
    np.testing.assert_allclose(clip.K, [[f, 0, h - 1 - cy], [0, f, cx], [0, 0, 1]])
    assert clip.images.shape == (FRAMES, cal["image_width"], h, 3)
    with tarfile.open(hot3d_root / f"{CLIP}.tar") as tar:
        shapes = json.load(tar.extractfile("__hand_shapes.json__"))
    betas = np.asarray(shapes["mano"], np.float64)
    for t in ids:
        T_wc = _se3(_frame_json(hot3d_root, t, "cameras")[RGB]["T_world_from_camera"])
        E = np.linalg.inv(T_wc)
        E = np.array([[0.0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ E    # rot90(k=3): x' = -y, y' = x
        objs = _frame_json(hot3d_root, t, "objects")
        np.testing.assert_allclose(clip.object_poses[t], E @ _se3(objs[str(BOX_ID)][0]["T_world_from_object"]), atol=1e-9)
        hands = _frame_json(hot3d_root, t, "hands")
        for side in ("left", "right"):
            mp = hands[side]["mano_pose"]
            layer = _smplx_pca_mano(side)
            tt = lambda x: torch.tensor(np.asarray(x, np.float64))  # noqa: E731
            with torch.no_grad():
                wv = layer(betas=tt(np.tile(betas, (3, 1))), global_orient=tt(np.tile(mp["wrist_xform"][:3], (3, 1))),
                           hand_pose=tt(np.tile(mp["thetas"], (3, 1))),
                           transl=tt(np.tile(mp["wrist_xform"][3:], (3, 1)))).vertices.numpy()[0]
            hc = clip.hands[side]
            ours = models[side].forward(hc.pose[t:t + 1], hc.betas, hc.trans[t:t + 1])[0][0]
            np.testing.assert_allclose(ours, wv @ E[:3, :3].T + E[:3, 3], atol=1e-6)
    assert [p.name for p in clip.object_parts] == [f"obj_{BOX_ID:06d}"]          # the still can is left out
    assert clip.object_mesh.name == f"obj_{BOX_ID:06d}.glb" and clip.object_uid == f"obj_{BOX_ID:06d}"
    assert clip.background is not None and clip.background.shape == clip.images.shape[1:]


def test_mano_is_read_only_with_umetrack_and_a_hand_shape(hot3d_root, tmp_path):
    """decode_hand_pose (dataset.py L142-149): mano_pose only where umetrack_pose is; no
    __hand_shapes.json__, no hand (vis_clips.py L87)."""
    root = tmp_path / "h"
    shutil.copytree(hot3d_root, root)

    def drop_left_umetrack(name, data):
        if name == "000001.hands.json":
            j = json.loads(data)
            del j["left"]["umetrack_pose"]
            return json.dumps(j).encode()
        return data

    _rewrite_clip(root, drop_left_umetrack)
    adapter, models = Hot3DAdapter(), {s: standin_hand(s) for s in ("left", "right")}
    clip = adapter.load_clip(root, _item(RGB), list(range(FRAMES)), models)
    assert clip.hands["left"].valid.tolist() == [True, False, True, True] and clip.hands["right"].valid.all()
    assert not clip.hands["left"].pose[1].any()
    _rewrite_clip(root, lambda name, data: None if name == "__hand_shapes.json__" else data)
    with pytest.raises(UserError, match="gives no clips"):
        adapter.list_items(root, make_selection(frames=FRAMES))


# -- the pipeline on the demo ----------------------------------------------------------------
def test_render_hoi_hot3d_layers_sit_on_the_image(hot3d_store, hot3d_root):
    r = StoreReader(hot3d_store)
    assert sorted(r.key(i) for i in range(len(r))) == sorted([f"{CLIP}/{SLAM[0]}", f"{CLIP}/{RGB}"]) and not r.failures()
    truth = foreground_masks(N_FRAMES)
    ious = []
    for i in range(len(r)):
        s = r.read(i)
        validate_sample(r.layout, s)
        stream = r.key(i).rsplit("/", 1)[1]
        assert "joint_err_mean_mm" not in r.attrs(i) and s["hand_valid"].all()
        cam = Fisheye624.from_calibration(_frame_json(hot3d_root, 0, "cameras")[stream]["calibration"])
        K = upright_K(pinhole_K(cam), cam.size[1])
        for t in range(FRAMES):
            ious.append(layer_iou(s["mlo_depth"][t], truth[stream][t], K, s["K"].astype(np.float64)))
    print(f"HOT3D demo: layers vs drawn pixels IoU min {min(ious):.3f}, mean {np.mean(ious):.3f} over {len(ious)} frames")
    assert min(ious) >= 0.85


def test_selection_and_errors(hot3d_root, tmp_path):
    a = Hot3DAdapter()
    sel = lambda **kw: make_selection(**{"frames": FRAMES} | kw)  # noqa: E731
    assert [i.key for i in a.list_items(hot3d_root, sel())] == [f"{CLIP}/{RGB}"]     # the RGB stream by default
    assert [i.key for i in a.list_items(hot3d_root, sel(cameras=list(SLAM), split="train"))] == \
        [f"{CLIP}/{s}" for s in SLAM]
    for name in ("1849", f"clip-{CLIP_ID:06d}", CLIP):
        assert len(a.list_items(hot3d_root, sel(sequences=[name]))) == 1
    for kw, msg in (({"split": "test_ht_pose"}, "ship no hands.json"), ({"split": "val"}, "not a HOT3D-Clips split"),
                    ({"subjects": ["P0003"]}, "no subject ids"), ({"sequences": ["clip-000007"]}, "matches the selection"),
                    ({"frames": 9}, "gives no clips")):
        with pytest.raises(UserError, match=msg):
            a.list_items(hot3d_root, sel(**kw))
    only_test = tmp_path / "t"
    shutil.copytree(hot3d_root / "train_aria", only_test / "test_aria")
    with pytest.raises(UserError, match="not a HOT3D-Clips root"):
        a.list_items(only_test, sel())
    root = tmp_path / "m"
    shutil.copytree(hot3d_root, root)
    (root / "object_models" / f"obj_{CAN_ID:06d}.glb").unlink()
    with pytest.raises(StepFailed, match=f"obj_{CAN_ID:06d}.glb is in none of"):
        a.load_clip(root, _item(RGB), list(range(FRAMES)), {s: standin_hand(s) for s in ("left", "right")})


def test_export_sequence_writes_the_undistorted_upright_view(hot3d_root, tmp_path):
    """export-sequence through the protocol: one folder per (clip, stream), frames already
    undistorted and upright, every frame in its own camera, one pinhole K for the whole clip."""
    from pipeline.hoi.export_sequence import export
    from pipeline.sequence_format import read_sequence

    summary = export("hot3d", hot3d_root, tmp_path / "seq", {"sequences": ["1849"]}, "stand-in", None, None,
                     echo=lambda *_: None)
    assert [k for k, _, _ in summary.written] == [f"{CLIP}/{RGB}"] and not summary.failed
    seq = read_sequence(summary.written[0][1])
    cam = next(iter(seq.cameras.values()))
    assert seq.n_frames == N_FRAMES and seq.fix_left_shapedirs is True and (cam.width, cam.height) == (352, 352)
    cal = _frame_json(hot3d_root, 0, "cameras")[RGB]["calibration"]
    np.testing.assert_allclose(cam.K, upright_K(pinhole_K(Fisheye624.from_calibration(cal)), cal["image_height"]))
