"""TACO: the adapter on the synthetic TACO-layout demo, conventions pinned from the toolkit
(github.com/leolyliu/TACO-Instructions, dataset_utils/hand_pose_loader.py + its manopth)."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.model import HandModel
from pipeline.hands.standin import standin_arrays
from pipeline.hoi.adapter import make_selection
from pipeline.hoi.datasets.taco import TacoAdapter, read_hand_file
from pipeline.hoi.demo.taco import SEQUENCE, SERIALS, TARGET_ID, TOOL_ID, TRIPLET, make_demo, target_poses
from pipeline.hoi.torch_pickle import TensorUnpickler
from schemas import LAYER_NAMES, validate_sample
from schemas.reader import StoreReader

FRAMES, RES = 4, 64
LEFT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("left_")]
RIGHT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("right_")]
SEQ = f"{TRIPLET}/{SEQUENCE}"


@pytest.fixture(scope="module")
def taco_root(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("taco") / "TACO", n_frames=FRAMES)


@pytest.fixture(scope="module")
def taco_store(ray_cluster, taco_root, tmp_path_factory) -> Path:
    """render-hoi taco --hand-model stand-in through the real runner (Ray)."""
    from pipeline.hoi.commands import render_hoi

    out = tmp_path_factory.mktemp("taco_store") / "hoi.zarr"
    render_hoi("taco", root=taco_root, hand_model="stand-in", out=out, frames=FRAMES, resolution=RES,
               workers=1, progress=False)
    return out


def _selection(**kw):
    return make_selection(**{"frames": FRAMES} | kw)


# -- the hand files: pickled torch tensors, read without plain pickle.load ---------------------
def test_hand_files_decode_torch_tensors_and_refuse_other_globals(tmp_path):
    pose = torch.randn(3, 48)
    leaf = torch.randn(3, dtype=torch.float64, requires_grad=True)  # a fitted parameter
    data = {"00001": {"hand_pose": pose[0], "hand_trans": leaf}, "00002": {"hand_pose": pose[2].t(), "x": [1, 2]}}
    out = TensorUnpickler(io.BytesIO(pickle.dumps(data))).load()
    assert isinstance(out["00001"]["hand_pose"], np.ndarray)
    np.testing.assert_array_equal(out["00001"]["hand_pose"], pose[0].numpy())   # a row view of a [3,48] storage
    np.testing.assert_array_equal(out["00002"]["hand_pose"], pose[2].numpy())
    np.testing.assert_array_equal(out["00001"]["hand_trans"], leaf.detach().numpy())
    assert out["00002"]["x"] == [1, 2]

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"00001": {"hand_pose": Evil()}}))
    read_hand_file.cache_clear()
    with pytest.raises(StepFailed, match="is not allowed"):
        read_hand_file(str(tmp_path / "bad.pkl"))
    assert not (tmp_path / "pwned").exists()


def test_frames_are_the_sorted_keys(tmp_path):
    """hand_pose_loader: ``keys = list(hand_pose_data.keys()); keys.sort()`` -> frame i."""
    rows = {f"{i:05d}": {"hand_pose": torch.full((48,), float(i)), "hand_trans": torch.zeros(3)} for i in (3, 1, 2)}
    (tmp_path / "h.pkl").write_bytes(pickle.dumps(rows))
    pose, _ = read_hand_file(str(tmp_path / "h.pkl"))
    assert pose[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_video_frames_are_exact_in_any_order(taco_root):
    """Frame i of the video is the i-th decoded frame (``mp42imgs``), whatever order windows ask."""
    import imageio_ffmpeg

    from pipeline.hoi.datasets.taco import read_video_frames

    path = taco_root / "Allocentric_RGB_Videos" / SEQ / f"{SERIALS[0]}.mp4"
    gen = imageio_ffmpeg.read_frames(str(path))
    w, h = next(gen)["size"]
    ref = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    assert len(ref) == FRAMES
    for ids in ([0, 3], [1, 2], [3], [0, 1]):
        got = read_video_frames(path, ids)
        assert all(np.array_equal(got[i], ref[i]) for i in ids)
    with pytest.raises(StepFailed, match="fewer frames than the annotation"):
        read_video_frames(path, [FRAMES])


# -- conventions, from the toolkit's numbers ------------------------------------------------
def _mano_like(side: str) -> HandModel:
    """The stand-in with its rest wrist moved off the origin, like MANO's (j0 of MANO_RIGHT is
    about (0.096, 0.006, 0.006) m): wrist-centred translation then matters."""
    a = standin_arrays(side)
    off = np.array([0.0957, 0.0064, 0.0062]) * (1 if side == "right" else [-1, 1, 1])
    return HandModel(side=side, name="mano-like", arrays={**a, "v_template": a["v_template"] + off})


def test_conventions_follow_the_toolkit(tmp_path, taco_root):
    root = tmp_path / "TACO"
    shutil.copytree(taco_root, root)
    rng = np.random.default_rng(3)
    hand_pose = rng.normal(0, 0.3, (FRAMES, 48))
    wrist = rng.normal([0.0, 0.0, 0.7], 0.05, (FRAMES, 3))
    rows = {f"{i + 1:05d}": {"hand_pose": torch.tensor(hand_pose[i]), "hand_trans": torch.tensor(wrist[i])}
            for i in range(FRAMES)}
    (root / "Hand_Poses" / SEQ / "right_hand.pkl").write_bytes(pickle.dumps(rows))
    read_hand_file.cache_clear()
    adapter = TacoAdapter()
    assert adapter.fix_left_shapedirs is False          # manopth loads MANO_LEFT.pkl as shipped
    models = {s: _mano_like(s) for s in ("left", "right")}
    item = WorkItem(key=f"{SEQ}/{SERIALS[0]}", locator=f"{SEQ}/{SERIALS[0]}", n_samples=1)
    clip = adapter.load_clip(root, item, list(range(FRAMES)), models)

    cal = json.loads((root / "Allocentric_Camera_Parameters" / SEQ / "calibration.json").read_text())[SERIALS[0]]
    R, T, K = np.array(cal["R"]), np.array(cal["T"]), np.array(cal["K"])
    np.testing.assert_array_equal(clip.K, K)
    h = clip.hands["right"]
    # flat_hand_mean=True (manopth's default, not overridden by the loader): the 45 numbers are
    # the absolute articulation; a hands_mean offset (0.12 rad here) would show
    np.testing.assert_allclose(h.pose[:, 3:], hand_pose[:, 3:], atol=1e-12)
    assert np.abs(models["right"].hands_mean).max() > 0.1
    # center_idx=0 + "hand_joints += hand_trans": the wrist is at hand_trans (world), in the
    # camera at R x + T (visualize_world_coordinate_system.py)
    verts, joints = models["right"].forward(h.pose, h.betas, h.trans)
    np.testing.assert_allclose(joints[:, 0], wrist @ R.T + T, atol=1e-6)
    # ... and the rest of the hand is the toolkit's: verts - wrist = R (MANO(pose) - MANO(pose)_wrist)
    v0, j0 = models["right"].forward(hand_pose, h.betas, np.zeros(3))
    np.testing.assert_allclose(verts - joints[:, :1], (v0 - j0[:, :1]) @ R.T, atol=1e-6)

    # objects: <id>_cm.obj in centimetres (visualization.py: vertices *= 0.01), poses in metres
    tool, target = clip.object_parts
    assert (tool.name, target.name) == (f"tool_{TOOL_ID}", f"target_{TARGET_ID}")
    cm = np.array([[float(x) for x in ln.split()[1:4]] for ln in
                   (root / "Object_Models" / f"{TARGET_ID}_cm.obj").read_text().splitlines() if ln.startswith("v ")])
    np.testing.assert_allclose(target.vertices, cm * 0.01)
    E = np.eye(4)
    E[:3, :3], E[:3, 3] = R, T
    np.testing.assert_allclose(target.poses, E @ target_poses(FRAMES), atol=1e-6)
    # object_mesh / object_poses = the tool, the cm unit carried as a uniform scale
    assert clip.object_mesh.name == f"{TOOL_ID}_cm.obj"
    np.testing.assert_allclose(np.cbrt(np.linalg.det(clip.object_poses[:, :3, :3])), 0.01)
    assert clip.object_valid.all() and clip.joints_label is None   # TACO ships no 3D joints
    # the marker-removed videos are preferred when the root has them
    marked = root / "Marker_Removed_Allocentric_RGB_Videos" / SEQ
    marked.mkdir(parents=True)
    shutil.copy(root / "Allocentric_RGB_Videos" / SEQ / f"{SERIALS[0]}.mp4", marked)
    assert adapter._video(root, SEQ, SERIALS[0]) == marked / f"{SERIALS[0]}.mp4"
    assert adapter._video(root, SEQ, SERIALS[1]).parent.parent.parent.name == "Allocentric_RGB_Videos"


def _toolkit_hand_joints(a: dict, side: str, hand_pose: np.ndarray, hand_trans: np.ndarray,
                         betas: np.ndarray) -> np.ndarray:
    """[N,21,3] metres, world: TACO's ``mano_params_to_hand_info`` (dataset_utils/hand_pose_loader.py
    L33 ``ManoLayer(use_pca=False, ncomps=45, side, center_idx=0)``, manopth's default
    flat_hand_mean=True; L61 called without th_trans, so joints are centred on joint 0; L62-65
    /1000, + hand_trans) on the tests' port of manopth (``manopth_port.py``)."""
    from tests.pipeline.hoi.manopth_port import manopth_forward

    _, j = manopth_forward(a, side, hand_pose, betas, None, use_pca=False, ncomps=45, flat_hand_mean=True,
                           center_idx=0)
    return j / 1000.0 + np.asarray(hand_trans)[:, None]


def test_joints_match_the_toolkits_mano_layer(taco_root):
    """Our joints (smplx, converted parameters, camera frame) against the joints TACO's own
    loader computes from the same files: the agreement figure for the demo."""
    models = {s: _mano_like(s) for s in ("left", "right")}
    adapter, errs = TacoAdapter(), []
    world = adapter.world_poses(taco_root, SEQ)
    for serial in SERIALS:
        item = WorkItem(key=f"{SEQ}/{serial}", locator=f"{SEQ}/{serial}", n_samples=1)
        clip = adapter.load_clip(taco_root, item, list(range(FRAMES)), models)
        _, E, _ = adapter.camera(taco_root, SEQ, serial)
        for side, h in clip.hands.items():
            pose, trans, betas = world["hands"][side]
            ref = _toolkit_hand_joints(models[side].arrays, side, pose, trans, betas) @ E[:3, :3].T + E[:3, 3]
            errs.append(np.linalg.norm(models[side].forward(h.pose, h.betas, h.trans)[1] - ref, axis=-1) * 1000)
    e = np.concatenate(errs)
    print(f"TACO demo joints vs toolkit: mean {e.mean():.2e} mm, max {e.max():.2e} mm over {e.size} joints")
    assert e.max() < 1e-3


# -- the pipeline on the demo ----------------------------------------------------------------
def test_render_hoi_taco_gives_both_hands_and_both_objects(taco_store, taco_root):
    r = StoreReader(taco_store)
    assert len(r) == len(SERIALS) and not r.failures()
    assert sorted(r.key(i) for i in range(len(r))) == [f"{SEQ}/{s}" for s in SERIALS]
    cal = json.loads((taco_root / "Allocentric_Camera_Parameters" / SEQ / "calibration.json").read_text())
    tool = np.load(taco_root / "Object_Poses" / SEQ / f"tool_{TOOL_ID}.npy")
    target = np.load(taco_root / "Object_Poses" / SEQ / f"target_{TARGET_ID}.npy")
    for i in range(len(r)):
        s = r.read(i)
        validate_sample(r.layout, s)
        assert "joint_err_mean_mm" not in r.attrs(i)           # no labels to compare with
        both = s["layer_present"][:, LEFT].any(axis=1) & s["layer_present"][:, RIGHT].any(axis=1)
        assert both.all() and s["hand_valid"].all()
        # the object layer holds both objects: each one's centre lands on object pixels
        c = cal[r.key(i).rsplit("/", 1)[1]]
        Rw, Tw, K = np.array(c["R"]), np.array(c["T"]), s["K"].astype(np.float64)
        for t in range(FRAMES):
            for P, centre in ((tool[t], [0.07, -0.0275, 0.0]), (target[t], [0.0, 0.0, 0.0])):
                x = Rw @ (P[:3, :3] @ centre + P[:3, 3]) + Tw                 # OpenCV camera
                u = K[0, 0] * x[0] / x[2] + K[0, 2]                           # crop pixels (stored K is
                v = K[1, 1] * x[1] / x[2] + K[1, 2]                           # for OpenCV coordinates)
                assert s["mlo_depth"][t, 0, int(round(v)), int(round(u))] > 0, (i, t)
        # references and obj_scale describe the tool in metres: the canonical radius 0.5 is the
        # half-diagonal of the 14 x 8.5 x 9 cm box (not 100x that: the cm unit is taken out)
        assert abs(0.5 * float(s["obj_scale"][0]) - 0.5 * np.linalg.norm([0.14, 0.085, 0.09])) < 1e-3


def test_selection_split_and_bad_root(tmp_path, taco_root):
    a = TacoAdapter()
    assert len(a.list_items(taco_root, _selection(split="train"))) == len(SERIALS)
    assert [i.key for i in a.list_items(taco_root, _selection(cameras=[SERIALS[1]], sequences=["bowl)", SEQUENCE]))] \
        == [f"{SEQ}/{SERIALS[1]}"]
    for sel, msg in (({"split": "test_1"}, "matches none"), ({"split": "s0-train"}, "not a TACO split"),
                     ({"subjects": ["x"]}, "TACO has no subjects"), ({"frames": 99}, "gives no clips")):
        with pytest.raises(UserError, match=msg):
            a.list_items(taco_root, _selection(**sel))
    shutil.copytree(taco_root / "Hand_Poses", tmp_path / "half" / "Hand_Poses")
    from pipeline.hoi.commands import render_hoi

    with pytest.raises(UserError) as e:       # the CLI prints it as one line, exit 2 (pipeline.errors)
        render_hoi("taco", root=tmp_path / "half", hand_model="stand-in", out=tmp_path / "o.zarr", progress=False)
    assert str(e.value) == f"--root {tmp_path / 'half'} is not a TACO root: Object_Poses/ is missing"
    assert not (tmp_path / "o.zarr").exists()
