"""OakInk2: the adapter on the synthetic OakInk2-layout demo, through the real runner; conventions
pinned from the toolkit's code (github.com/oakink/OakInk2 @ 63365c6 and its manotorch @ 933be97),
re-derived here from their formulas."""

from __future__ import annotations

import io
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.model import HandModel, standin_hand
from pipeline.hands.standin import standin_arrays
from pipeline.hoi.adapter import make_selection
from pipeline.hoi.datasets.oakink2 import OakInk2Adapter, read_anno
from pipeline.hoi.demo.oakink2 import (
    BOTTOM,
    CAMERAS,
    CAN,
    FIRST_FRAME,
    LID,
    MOCAP_PER_IMAGE,
    TOKEN,
    foreground_masks,
    make_demo,
)
from pipeline.hoi.torch_pickle import LazyTensor, LazyTensorUnpickler, TensorUnpickler
from schemas import LAYER_NAMES, validate_sample
from schemas.reader import StoreReader
from tests.pipeline.hoi.layer_iou import layer_iou

FRAMES, N_FRAMES, RES = 4, 5, 128
STORE_CAMERAS = ("allocentric_left", "egocentric")      # one static, the moving one
LEFT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("left_")]
RIGHT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("right_")]
IMAGE_IDS = [FIRST_FRAME + MOCAP_PER_IMAGE * k for k in range(N_FRAMES)]


@pytest.fixture(scope="module")
def oakink2_root(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("oakink2") / "OakInk2", n_frames=N_FRAMES)


@pytest.fixture(scope="module")
def oakink2_store(ray_cluster, oakink2_root, tmp_path_factory) -> Path:
    """render-hoi oakink2 --hand-model stand-in through the real runner (Ray)."""
    from pipeline.hoi.commands import render_hoi

    out = tmp_path_factory.mktemp("oakink2_store") / "hoi.zarr"
    render_hoi("oakink2", root=oakink2_root, hand_model="stand-in", out=out, frames=FRAMES, resolution=RES,
               cameras=list(STORE_CAMERAS), workers=1, progress=False)
    return out


def _item(cam: str) -> WorkItem:
    return WorkItem(key=f"{TOKEN}/{cam}", locator=f"{TOKEN}/{cam}", n_samples=1)


def _mano_like(side: str) -> HandModel:
    """The stand-in with its rest wrist moved off the origin like MANO's (j0 of MANO_RIGHT is
    about (0.096, 0.006, 0.006) m), so a wrist-centred translation matters."""
    a = standin_arrays(side)
    off = np.array([0.0957, 0.0064, 0.0062]) * (1 if side == "right" else [-1, 1, 1])
    return HandModel(side=side, name="mano-like", arrays={**a, "v_template": a["v_template"] + off})


# -- the annotation pickle -------------------------------------------------------------------
def test_annotation_tensors_decode_lazily_and_nothing_else_runs(tmp_path):
    x = torch.randn(6, 16, 4)
    data = {"raw_mano": {1200: {"rh__pose_coeffs": x[2:3], "rh__tsl": torch.randn(1, 3, dtype=torch.float64)}},
            "cam_extr": {"egocentric": {1200: np.eye(4)}}}
    lazy = LazyTensorUnpickler(io.BytesIO(pickle.dumps(data))).load()
    eager = TensorUnpickler(io.BytesIO(pickle.dumps(data))).load()
    t = lazy["raw_mano"][1200]["rh__pose_coeffs"]
    assert isinstance(t, LazyTensor)
    np.testing.assert_array_equal(np.asarray(t), x[2:3].numpy())                 # a row view of a [6,16,4] storage
    np.testing.assert_array_equal(np.asarray(lazy["raw_mano"][1200]["rh__tsl"]), eager["raw_mano"][1200]["rh__tsl"])
    np.testing.assert_array_equal(lazy["cam_extr"]["egocentric"][1200], np.eye(4))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "anno_preview").mkdir()
    (tmp_path / "anno_preview" / "x.pkl").write_bytes(pickle.dumps({"cam_def": Evil()}))
    with pytest.raises(StepFailed, match="is not allowed"):
        read_anno(tmp_path / "anno_preview" / "x.pkl")
    assert not (tmp_path / "pwned").exists()


# -- conventions, re-derived from the toolkit's formulas -----------------------------------------
def _manotorch_joints(a: dict, side: str, quat: np.ndarray, betas: np.ndarray, tsl: np.ndarray) -> np.ndarray:
    """[N,21,3]: manotorch's ``ManoLayer(rot_mode="quat", center_idx=0, use_pca=False,
    flat_hand_mean=True)`` step by step (manolayer.py L119-257), then ``+ tsl`` as seg_3d.py L188:
    quaternion_to_matrix with w first and two_s = 2 / |q|^2 (geometry.py L225-253), no hands_mean,
    shape + pose blend shapes, the lev1/lev2/lev3 chain, LBS, tips [745, 317, 444|445, 556, 673],
    the SNAP reorder, minus joint 0."""
    out = []
    B_S = a["shapedirs"] @ betas
    J = a["J_regressor"] @ (a["v_template"] + B_S)
    for q, t in zip(quat, tsl, strict=True):
        r, i, j, k = np.moveaxis(q, -1, 0)
        two_s = 2.0 / (q * q).sum(-1)
        R = np.stack([1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                      two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
                      two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)], -1).reshape(16, 3, 3)
        T_P = a["v_template"] + B_S + a["posedirs"] @ (R[1:] - np.eye(3)).reshape(-1)
        G = np.zeros((16, 4, 4))
        G[0] = np.block([[R[0], J[0][:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
        for lev in ((1, 4, 7, 10, 13), (2, 5, 8, 11, 14), (3, 6, 9, 12, 15)):
            for n in lev:
                parent = 0 if n in (1, 4, 7, 10, 13) else n - 1
                G[n] = G[parent] @ np.block([[R[n], (J[n] - J[parent])[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
        Gp = G.copy()
        Gp[:, :3, 3] -= np.einsum("kij,kj->ki", G[:, :3, :3], J)
        A = np.einsum("vk,kij->vij", a["weights"], Gp)
        verts = np.einsum("vij,vj->vi", A[:, :3, :3], T_P) + A[:, :3, 3]
        tips = verts[[745, 317, 444 if side == "right" else 445, 556, 673]]
        jt = np.concatenate([G[:, :3, 3], tips])[[0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]]
        out.append(jt - jt[0] + t)
    return np.stack(out)


def test_conventions_follow_the_toolkit(tmp_path, oakink2_root):
    root = tmp_path / "OakInk2"
    shutil.copytree(oakink2_root, root)
    path = root / "anno_preview" / f"{TOKEN}.pkl"
    anno = TensorUnpickler(io.BytesIO(path.read_bytes())).load()
    rng = np.random.default_rng(5)
    ids = IMAGE_IDS[:FRAMES]
    quat = rng.normal(0, 1, (FRAMES, 16, 4)) * 1.7            # not unit: the layer normalises (2 / |q|^2)
    tsl = rng.normal([0.0, 0.5, 0.3], 0.05, (FRAMES, 3))
    betas = rng.normal(0, 0.5, 10)
    for k, f in enumerate(ids):
        anno["raw_mano"][f].update({"rh__pose_coeffs": torch.tensor(quat[k][None]), "rh__tsl": torch.tensor(tsl[k][None]),
                                    "rh__betas": torch.tensor(betas[None])})
    anno = {**anno, "raw_mano": {f: {n: torch.tensor(np.asarray(v)) for n, v in d.items()}
                                 for f, d in anno["raw_mano"].items()}}
    path.write_bytes(pickle.dumps(anno))
    adapter = OakInk2Adapter()
    assert adapter.fix_left_shapedirs is False        # manotorch ready_arguments: MANO_LEFT as shipped
    models = {s: _mano_like(s) for s in ("left", "right")}
    cam = "allocentric_left"
    clip = adapter.load_clip(root, _item(cam), ids, models)

    E = np.stack([anno["cam_extr"][cam][f] for f in ids])          # world -> camera (seg_3d.py L192)
    np.testing.assert_array_equal(clip.K, anno["cam_intr"][cam][ids[0]])
    ref = _manotorch_joints(models["right"].arrays, "right", quat, betas, tsl)
    ref = np.einsum("tij,tkj->tki", E[:, :3, :3], ref) + E[:, None, :3, 3]    # transf_point_array_np
    h = clip.hands["right"]
    ours = models["right"].forward(h.pose, h.betas, h.trans)[1]
    err = np.linalg.norm(ours - ref, axis=-1) * 1000
    print(f"OakInk2 joints vs manotorch's formula: max {err.max():.2e} mm over {err.size} joints")
    assert err.max() < 1e-3 and h.valid.all()
    assert np.abs(models["right"].hands_mean).max() > 0.1          # a hands_mean offset would show

    # objects: camera pose = cam_extr @ obj_transf, vertices of the one model file, metres
    parts = {p.name: p for p in clip.object_parts}
    assert list(parts) == [BOTTOM, LID] and CAN not in parts        # the static can is left out; body first
    for name, p in parts.items():
        P = np.stack([anno["obj_transf"][name][f] for f in ids])
        np.testing.assert_allclose(p.poses, E @ P, atol=1e-12)
    import trimesh
    lid = trimesh.load(root / "object_raw" / "align_ds" / LID / "model.obj", process=False, force="mesh",
                       skip_materials=True)
    np.testing.assert_allclose(parts[LID].vertices, lid.vertices)
    np.testing.assert_allclose(clip.object_poses, parts[BOTTOM].poses)
    assert clip.object_mesh.parent.name == BOTTOM and clip.background is None   # a static camera

    # images: data/<token>/<serial>/<frame_id:06d>.png (the code); .jpg only without a .png (the README)
    folder = root / "data" / TOKEN / CAMERAS[cam]
    np.testing.assert_array_equal(clip.images[1], np.asarray(Image.open(folder / f"{ids[1]:06d}.png").convert("RGB")))
    Image.new("RGB", Image.open(folder / f"{ids[1]:06d}.png").size, (255, 0, 0)).save(folder / f"{ids[1]:06d}.jpg")
    red = lambda im: np.abs(im.astype(int) - [255, 0, 0]).max() <= 3  # noqa: E731  (a JPEG of pure red)
    assert not red(adapter.load_clip(root, _item(cam), ids, models).images[1])
    (folder / f"{ids[1]:06d}.png").unlink()
    assert red(adapter.load_clip(root, _item(cam), ids, models).images[1])


def test_egocentric_camera_is_read_frame_by_frame(oakink2_root):
    adapter = OakInk2Adapter()
    models = {s: standin_hand(s) for s in ("left", "right")}
    anno = TensorUnpickler(io.BytesIO((oakink2_root / "anno_preview" / f"{TOKEN}.pkl").read_bytes())).load()
    ids = IMAGE_IDS[:FRAMES]
    clip = adapter.load_clip(oakink2_root, _item("egocentric"), ids, models)
    E = np.stack([anno["cam_extr"]["egocentric"][f] for f in ids])
    assert np.abs(E - E[0]).max() > 1e-2                                 # the head moves
    P = np.stack([anno["obj_transf"][BOTTOM][f] for f in ids])
    np.testing.assert_allclose(clip.object_poses, E @ P, atol=1e-12)   # each frame in its own camera
    # wrists: tsl moved by that frame's extrinsics
    tsl = np.stack([np.asarray(anno["raw_mano"][f]["lh__tsl"]).reshape(3) for f in ids])
    joints = models["left"].forward(clip.hands["left"].pose, clip.hands["left"].betas, clip.hands["left"].trans)[1]
    np.testing.assert_allclose(joints[:, 0], np.einsum("tij,tj->ti", E[:, :3, :3], tsl) + E[:, :3, 3], atol=1e-5)
    assert clip.background is not None and clip.background.shape == clip.images.shape[1:]


# -- the pipeline on the demo ----------------------------------------------------------------
def test_render_hoi_oakink2_layers_sit_on_the_image(oakink2_store, oakink2_root):
    r = StoreReader(oakink2_store)
    assert len(r) == len(STORE_CAMERAS) and not r.failures()
    assert sorted(r.key(i).rsplit("/", 1)[1] for i in range(len(r))) == sorted(STORE_CAMERAS)
    truth = foreground_masks(N_FRAMES)
    anno = TensorUnpickler(io.BytesIO((oakink2_root / "anno_preview" / f"{TOKEN}.pkl").read_bytes())).load()
    ious = []
    for i in range(len(r)):
        s = r.read(i)
        validate_sample(r.layout, s)
        cam = r.key(i).rsplit("/", 1)[1]
        assert "joint_err_mean_mm" not in r.attrs(i)                 # OakInk2 ships no joint labels
        assert s["hand_valid"].all() and s["layer_present"][:, 0].all()
        K = anno["cam_intr"][cam][IMAGE_IDS[0]]
        for t in range(FRAMES):
            ious.append(layer_iou(s["mlo_depth"][t], truth[cam][t], K, s["K"].astype(np.float64)))
    print(f"OakInk2 demo: layers vs drawn pixels IoU min {min(ious):.3f}, mean {np.mean(ious):.3f} over {len(ious)} frames")
    assert min(ious) >= 0.85


def test_selection_and_errors(oakink2_root, tmp_path):
    a = OakInk2Adapter()
    sel = lambda **kw: make_selection(**{"frames": FRAMES} | kw)  # noqa: E731
    assert [i.key for i in a.list_items(oakink2_root, sel(cameras=["egocentric", CAMERAS["allocentric_top"]]))] == \
        [f"{TOKEN}/allocentric_top", f"{TOKEN}/egocentric"]
    assert len(a.list_items(oakink2_root, sel(sequences=[TOKEN.replace("++", "/")]))) == len(CAMERAS)
    assert len(a.list_items(oakink2_root, sel(sequences=["2024-01-02-03-04-05"]))) == len(CAMERAS)
    for kw, msg in (({"subjects": ["s1"]}, "no subjects"), ({"split": "train"}, "no official split"),
                    ({"sequences": ["nope"]}, "matches none"), ({"frames": 9}, "gives no clips")):
        with pytest.raises(UserError, match=msg):
            a.list_items(oakink2_root, sel(**kw))
    with pytest.raises(UserError, match="not an OakInk2 root"):
        a.list_items(tmp_path, sel())
    # a missing image takes its window out
    root = tmp_path / "o"
    shutil.copytree(oakink2_root, root)
    (root / "data" / TOKEN / CAMERAS["egocentric"] / f"{IMAGE_IDS[2]:06d}.png").unlink()
    assert [i.key.rsplit("/", 1)[1] for i in a.list_items(root, sel())] == [c for c in CAMERAS if c != "egocentric"]


def test_export_sequence_writes_the_egocentric_view(oakink2_root, tmp_path):
    """export-sequence goes through the protocol: the moving camera's folder reads back, every
    frame in that frame's camera (cam_to_world identity)."""
    from pipeline.hoi.export_sequence import export
    from pipeline.sequence_format import read_sequence

    summary = export("oakink2", oakink2_root, tmp_path / "seq", {"cameras": ["egocentric"]}, "stand-in", None, None,
                     echo=lambda *_: None)
    assert [k for k, _, _ in summary.written] == [f"{TOKEN}/egocentric"] and not summary.failed
    seq = read_sequence(summary.written[0][1])
    assert seq.n_frames == N_FRAMES and seq.object_parts is not None and len(seq.object_parts) == 2
    assert seq.source["frame_ids"] == IMAGE_IDS
