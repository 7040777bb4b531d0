"""ARCTIC: the adapter on the synthetic ARCTIC-layout demo, through the real runner; conventions
pinned from the toolkit (github.com/zc-alexfan/arctic: common/object_tensors.py,
src/arctic/processing.py, common/body_models.py, src/mesh_loaders/arctic.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.engine.items import WorkItem
from pipeline.errors import UserError
from pipeline.hands.model import hand_models
from pipeline.hoi.adapter import make_selection
from pipeline.hoi.datasets.arctic import ArcticAdapter, image_path
from pipeline.hoi.datasets.arctic_object import MM, object_pose, split_parts, top_rotation
from pipeline.hoi.demo.arctic import IOI_OFFSET, SEQ, SID, make_demo
from pipeline.hoi.demo.scene import MAX_OPEN
from schemas import LAYER_NAMES, validate_sample
from schemas.reader import StoreReader

FRAMES, RES, N_FRAMES, VIEWS = 4, 64, 5, (1, 2)
LEFT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("left_")]
RIGHT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("right_")]


@pytest.fixture(scope="module")
def arctic_root(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("arctic") / "arctic_data" / "data", n_frames=N_FRAMES, views=VIEWS)


@pytest.fixture(scope="module")
def arctic_store(ray_cluster, arctic_root, tmp_path_factory) -> Path:
    """render-hoi arctic --hand-model stand-in through the real runner (Ray)."""
    from pipeline.hoi.commands import render_hoi

    out = tmp_path_factory.mktemp("arctic_store") / "hoi.zarr"
    render_hoi("arctic", root=arctic_root, hand_model="stand-in", out=out, frames=FRAMES, resolution=RES,
               workers=1, progress=False)
    return out


def _selection(**kw):
    return make_selection(**{"frames": FRAMES} | kw)


def _item(view: int) -> WorkItem:
    key = f"{SID}/{SEQ}/{view}"
    return WorkItem(key=key, locator=key, n_samples=1)


# -- conventions, from the toolkit's own numbers ----------------------------------------------
def test_object_model_follows_object_tensors():
    """forward_7d_batch: top vertices turned by axis_angle([0, 0, -1] * arti), then the global
    rotation, then + translation (the .object.npy translation is in mm: processing.py / 1000);
    mesh.obj vertices are in mm (construct_obj_tensors / 1000)."""
    v_mm = np.array([[100.0, 0.0, 0.0]])
    row = np.array([np.pi / 2, 0.0, 0.0, np.pi / 2, 0.0, 0.0, 1000.0])  # arti, axis-angle, trans (mm)
    P, arti = object_pose(row[None])
    top = (P[0] @ top_rotation(arti[0]))[:3]
    # articulation: (0.1, 0, 0) -> (0, -0.1, 0) (about -z); global +90deg about z -> (0.1, 0, 0); + (0, 0, 1) m
    np.testing.assert_allclose(top[:, :3] @ (v_mm[0] / 1000) + top[:, 3], [0.1, 0.0, 1.0], atol=1e-12)
    bottom = P[0][:3]  # not articulated: (0.1, 0, 0) -> (0, 0.1, 0) + (0, 0, 1)
    np.testing.assert_allclose(bottom[:, :3] @ (v_mm[0] / 1000) + bottom[:, 3], [0.0, 0.1, 1.0], atol=1e-12)


def test_parts_split_by_majority_of_vertices():
    v = np.eye(4)
    f = np.array([[0, 1, 2], [1, 2, 3]])
    parts = split_parts(v, f, np.array([False, False, True, True]))
    assert len(parts["bottom"][1]) == 1 and len(parts["top"][1]) == 1
    np.testing.assert_array_equal(parts["top"][0], v[[1, 2, 3]])


def test_images_are_numbered_mocap_frame_plus_ioi_offset(arctic_root):
    """mesh_loaders/arctic.py: image_idx = vidx + ioi_offset, images/<sid>/<seq>/<view>/<idx:05d>.jpg."""
    assert image_path(Path("R"), "s01", "box_use_01", 3, 0, 2) == Path("R/images/s01/box_use_01/3/00002.jpg")
    assert image_path(Path("R"), "s05", "laptop_grab_01", 8, 17, 1) == Path("R/images/s05/laptop_grab_01/8/00018.jpg")
    # the demo's images 0..IOI_OFFSET-1 are black (no mocap frame); mocap frame 0 is image IOI_OFFSET
    from PIL import Image

    black = image_path(arctic_root, SID, SEQ, 1, -1, IOI_OFFSET)
    assert black.name == f"{IOI_OFFSET - 1:05d}.jpg" and np.asarray(Image.open(black)).mean() < 2
    clip = ArcticAdapter().load_clip(arctic_root, _item(1), [0, 1, 2, 3], hand_models("stand-in"))
    assert clip.images.mean(axis=(1, 2, 3)).min() > 50
    assert clip.extras["articulation"][0] == pytest.approx(0.0) and clip.extras["articulation"][-1] > 0.3


def test_cropped_images_are_put_back_where_crop_images_cut_them(arctic_root, tmp_path):
    """Without images/, cropped_images/ + processed_seqs bbox (crop_images.py: (cx, cy, scale x 1.5
    x 200) square, resized to 1000) give the full frame back: same pixels inside the box, K unchanged."""
    from pipeline.hoi.datasets.arctic import crop_box

    crop_root = tmp_path / "data"
    crop_root.mkdir()
    for d in ("raw_seqs", "meta", "processed_seqs", "splits_json", "cropped_images"):
        (crop_root / d).symlink_to(arctic_root / d)
    a, models = ArcticAdapter(), hand_models("stand-in")
    assert [i.key for i in a.list_items(crop_root, _selection(cameras=["1"]))] == [f"{SID}/{SEQ}/1"]
    full = a.load_clip(arctic_root, _item(1), [0, 1, 2, 3], models)
    crop = a.load_clip(crop_root, _item(1), [0, 1, 2, 3], models)
    np.testing.assert_array_equal(full.K, crop.K)
    bbox = np.load(arctic_root / "processed_seqs" / SID / f"{SEQ}.npy", allow_pickle=True).item()["bbox"]
    for t in range(4):
        x0, y0, x1, y1 = crop_box(bbox[t, 1])
        assert (x1 - x0) == (y1 - y0) and 30 < x1 - x0 < 700        # a real crop of the 700 x 500 frame
        inner = (slice(max(y0, 0) + 2, min(y1, 500) - 2), slice(max(x0, 0) + 2, min(x1, 700) - 2))
        diff = np.abs(crop.images[t][inner].astype(float) - full.images[t][inner]).mean()
        assert diff < 4.0, diff
        outside = np.ones((500, 700), bool)
        outside[max(y0, 0):y1, max(x0, 0):x1] = False
        assert crop.images[t][outside].max(initial=0) == 0
    bg = a.background(crop_root, _item(1))
    assert bg.shape == (500, 700, 3) and bg.mean() > 50   # pixels no crop covers copy their nearest
    (crop_root / "processed_seqs").unlink()  # the symlink only
    with pytest.raises(UserError, match="only cropped_images"):
        a.list_items(crop_root, _selection())


def test_hands_take_arctic_flat_hand_mean_false(arctic_root):
    """build_mano_aa(flat_hand=False): the stored ``pose`` is relative to hands_mean; our absolute
    pose adds it back. Checked against the joints the toolkit's own smplx.MANO call gives
    (processed_seqs, demo): 16 skeleton joints agree; leaving hands_mean out does not."""
    from pipeline.hoi.clip_sample import joint_agreement

    models = hand_models("stand-in")
    clip = ArcticAdapter().load_clip(arctic_root, _item(2), [0, 1, 2, 3], models)
    raw = np.load(arctic_root / "raw_seqs" / SID / f"{SEQ}.mano.npy", allow_pickle=True).item()
    joints, wrong = {}, {}
    for side, h in clip.hands.items():
        np.testing.assert_allclose(h.pose[:, 3:] - models[side].hands_mean, raw[side]["pose"][:4], atol=1e-6)
        joints[side] = models[side].forward(h.pose, h.betas, h.trans)[1]
        flat = h.pose.copy()
        flat[:, 3:] -= models[side].hands_mean
        wrong[side] = models[side].forward(flat, h.betas, h.trans)[1]
    valid = {s: np.ones(4, bool) for s in joints}
    ok = joint_agreement(joints, valid, clip.joints_label)
    assert ok["joint_err_frames"] == 8 and ok["joint_err_max_mm"] < 0.01
    assert np.isnan(clip.joints_label["left"][:, [4, 8, 12, 16, 20]]).all()  # smplx's tips are other vertices
    assert joint_agreement(wrong, valid, clip.joints_label)["joint_err_max_mm"] > 5.0


def test_left_shapedirs_default_is_as_shipped():
    """build_mano_aa: smplx.MANO(is_rhand=False) loads MANO_LEFT.pkl and smplx leaves its shapedirs
    as they are (no issue-#48 fix): the adapter's default, which the job resolves when no flag is given."""
    from pipeline.hoi.job import resolve_config
    from schemas.config import HoiConfig

    assert ArcticAdapter.fix_left_shapedirs is False
    cfg = HoiConfig(frames=FRAMES, resolution=RES, hand_model="stand-in").validate()
    assert resolve_config(cfg, ArcticAdapter()).fix_left_shapedirs is False


def test_background_is_the_room_without_hands_and_object(arctic_root):
    """Masked median (object hull, hands by their processed_seqs joints) over the sequence: where
    frame 0 shows a hand or the object, the reference shows the demo's empty room."""
    from PIL import Image

    from pipeline.hoi.demo.arctic import H, W
    from pipeline.hoi.demo.scene import room_background

    room = room_background(W, H, np.random.default_rng(0)).astype(float)
    for view in VIEWS:
        bg = ArcticAdapter().background(arctic_root, _item(view)).astype(float)
        img0 = np.asarray(Image.open(image_path(arctic_root, SID, SEQ, view, 0, IOI_OFFSET))).astype(float)
        moved = np.abs(img0 - room).mean(axis=-1) > 30
        assert moved.sum() > 5000 and np.abs(img0[moved] - room[moved]).mean() > 40
        assert np.abs(bg[moved] - room[moved]).mean() < 4.0


def test_coverage_mask_hull_and_discs():
    from pipeline.hoi.background import coverage_mask

    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    tri = np.array([[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.0, 0.1, 1.0]])
    m = coverage_mask([(tri, 0.0)], K, 100, 100)
    assert m[50, 50] and not m[45, 40] and m[41, 50]          # inside the triangle only
    disc = coverage_mask([(np.array([[0.0, 0.0, 2.0]]), 0.2)], K, 100, 100)  # r = 100 * 0.2 / 2 = 10 px
    assert disc[50, 59] and not disc[50, 62] and abs(disc.sum() - np.pi * 100) < 40


# -- the run ------------------------------------------------------------------------------------
def test_render_hoi_arctic_has_both_hands_in_every_frame(arctic_store):
    r = StoreReader(arctic_store)
    assert len(r) == len(VIEWS) and not r.failures()
    assert sorted(r.key(i) for i in range(len(r))) == [f"{SID}/{SEQ}/{v}" for v in VIEWS]
    for i in range(len(r)):
        s = r.read(i)
        validate_sample(r.layout, s)
        present = s["layer_present"]
        assert present[:, LEFT].any(axis=1).all() and present[:, RIGHT].any(axis=1).all()  # same frames
        assert present[:, 0].all() and s["hand_valid"].all()
        attrs = r.attrs(i)
        assert attrs["joint_err_frames"] == 2 * FRAMES and attrs["joint_err_max_mm"] < 0.01


def test_object_layer_is_the_articulated_object(arctic_store, arctic_root):
    """The stored object layer = both parts, the top turned by the articulation: it matches a
    render of the two parts as posed, and differs from one at articulation 0."""
    from pipeline.render.mlo import ObjectTrack, render_mlo, vertex_normals
    from pipeline.render.workers import worker_renderers

    r = StoreReader(arctic_store)
    i = next(k for k in range(len(r)) if r.key(k).endswith("/1"))
    s = r.read(i)
    clip = ArcticAdapter().load_clip(arctic_root, _item(1), list(range(FRAMES)), hand_models("stand-in"))
    gl = np.diag([1.0, -1.0, -1.0, 1.0])
    renderer = worker_renderers(RES, 40.0).layers

    metres_to_file = np.diag([MM, MM, MM, 1.0])  # object_poses map the mm template file; parts are in metres

    def layer(parts, at_rest=False):
        tracks = [ObjectTrack(p.vertices, vertex_normals(p.vertices, p.faces), p.faces,
                              gl @ (clip.object_poses @ metres_to_file if at_rest else p.poses), np.ones(FRAMES, bool))
                  for p in parts]
        return render_mlo(renderer, s["K"].astype(np.float64), FRAMES, tracks, {})[1][:, 0]

    stored = s["mlo_depth"][:, 0].astype(np.float32) > 0
    posed = layer(clip.object_parts) > 0
    assert (stored == posed).mean() > 0.995
    top = layer([p for p in clip.object_parts if p.name == "top"]) > 0
    bottom = layer([p for p in clip.object_parts if p.name == "bottom"]) > 0
    assert top[-1].sum() > 30 and bottom[-1].sum() > 30 and (top[-1] & ~bottom[-1]).sum() > 10
    rest = layer(clip.object_parts, at_rest=True) > 0
    assert (rest[0] == posed[0]).mean() > 0.995  # articulation 0 at the first frame
    assert clip.extras["articulation"][-1] > 0.2 * MAX_OPEN and (rest[-1] != posed[-1]).sum() > 20


# -- selection and errors -----------------------------------------------------------------------
def test_split_takes_the_toolkits_sequences_and_images(tmp_path):
    """split.py: train = listed train minus val/test (L47); views by protocol (L60-75); glob_fnames
    keeps image numbers 10 .. n_frames-11 ("the first and last 10 images may be entirely black", L83-87)."""
    import json

    from PIL import Image

    root, F, off = tmp_path / "data", 30, 1
    for seq in ("box_use_01", "box_use_02"):
        (root / "raw_seqs" / "s01").mkdir(parents=True, exist_ok=True)
        np.save(root / "raw_seqs" / "s01" / f"{seq}.mano.npy", {"right": {}, "left": {}}, allow_pickle=True)
        np.save(root / "raw_seqs" / "s01" / f"{seq}.object.npy", np.zeros((F, 7), np.float32))
        np.save(root / "raw_seqs" / "s01" / f"{seq}.egocam.dist.npy", {}, allow_pickle=True)
        for view in ("0", "3"):
            (root / "images" / "s01" / seq / view).mkdir(parents=True)
            for i in range(F + off):
                Image.new("RGB", (8, 8)).save(root / "images" / "s01" / seq / view / f"{i:05d}.jpg")
    (root / "meta").mkdir()
    (root / "meta" / "misc.json").write_text(json.dumps({"s01": {"ioi_offset": off}}))
    (root / "splits_json").mkdir()
    for proto in ("p1", "p2"):
        (root / "splits_json" / f"protocol_{proto}.json").write_text(json.dumps(
            {"train": ["s01/box_use_01", "s01/box_use_02"], "val": ["s01/box_use_02"], "test": []}))
    a = ArcticAdapter()
    # split.py L60-75: protocol 1 = the allocentric views, protocol 2 = the egocentric view 0
    assert [i.key for i in a.list_items(root, _selection(split="p2-train"))] == ["s01/box_use_01/0"]
    assert [i.key for i in a.list_items(root, _selection())] == [f"s01/box_use_0{k}/{v}" for k in (1, 2)
                                                                  for v in (0, 3)]
    items = a.list_items(root, _selection(split="p1-train"))
    assert [i.key for i in items] == ["s01/box_use_01/3"]
    assert a.windows(root, items[0], _selection(split="p1-train")) == [[12, 13, 14, 15]]  # images 13..16
    assert len(a.windows(root, items[0], _selection())) == 7                            # every image: 0..27
    assert [i.key for i in a.list_items(root, _selection(split="p1_val"))] == ["s01/box_use_02/3"]


def test_selection_and_errors(arctic_root, tmp_path):
    a = ArcticAdapter()
    assert [i.key for i in a.list_items(arctic_root, _selection(cameras=["2"]))] == [f"{SID}/{SEQ}/2"]
    for sel, msg in (({"split": "p1-train"}, "gives no clips"), ({"split": "p2-train"}, "gives no clips"),
                     ({"cameras": ["0"]}, "gives no clips"), ({"split": "s0-train"}, "p1-train"),
                     ({"frames": 99}, "gives no clips")):
        with pytest.raises(UserError, match=msg):
            a.list_items(arctic_root, _selection(**sel))
    cmd = [sys.executable, "cli.py", "render-hoi", "arctic", "--root", str(tmp_path), "--hand-model", "stand-in",
           "--out", str(tmp_path / "o.zarr")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(__import__("tests.conftest").conftest.ROOT))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "is not an ARCTIC root" in p.stderr and not (tmp_path / "o.zarr").exists()
