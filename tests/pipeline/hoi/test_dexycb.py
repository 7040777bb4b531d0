"""DexYCB specifics: official splits, window validity, background, joint-label agreement,
principal point -- on the synthetic demo in DexYCB's layout and on layouts the tests write."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from pipeline.clips.windows import frame_windows
from pipeline.errors import StepFailed, UserError
from pipeline.hoi.adapter import make_selection
from pipeline.hoi.datasets import dexycb_splits
from pipeline.hoi.datasets.dexycb import DexYCBAdapter
from pipeline.hoi.demo.dexycb import SEQUENCE, SERIALS, SUBJECT
from schemas.reader import StoreReader
from tests.pipeline.hoi.conftest import FRAMES, RES

KEY = f"{SUBJECT}/{SEQUENCE}"


def _sel(**kw):
    return make_selection(**{"frames": 4, "min_valid_frames": 0.0} | kw)


# -- official splits ------------------------------------------------------------------------

def test_split_table_is_the_toolkits():
    """Numbers from NVlabs/dex-ycb-toolkit @ 64551b0, dex_ycb_toolkit/dex_ycb.py:
    _SUBJECTS (l.11-22), _SERIALS (l.24-33) and DexYCBDataset.__init__ (l.126-186)."""
    S = dexycb_splits
    assert S.SUBJECTS[0] == "20200709-subject-01" and S.SUBJECTS[6] == "20200928-subject-07"
    assert S.SUBJECTS[9] == "20201022-subject-10" and len(S.SUBJECTS) == 10
    assert S.SERIALS == ("836212060125", "839512060362", "840412060917", "841412060263",
                         "932122060857", "932122060861", "932122061900", "932122062010")
    sp = {n: S.split(n) for n in S.SPLIT_NAMES}
    # s0: every sequence with i % 5 == 4 held out; val = subjects 1-2, test = subjects 3-10
    assert sp["s0-train"].subjects == tuple(range(10)) and len(sp["s0-train"].sequences) == 80
    assert 4 not in sp["s0-train"].sequences and 3 in sp["s0-train"].sequences
    assert sp["s0-val"].subjects == (0, 1) and sp["s0-test"].subjects == (2, 3, 4, 5, 6, 7, 8, 9)
    assert sp["s0-val"].sequences == sp["s0-test"].sequences == tuple(range(4, 100, 5))
    # s1: unseen subjects
    assert sp["s1-train"].subjects == (0, 1, 2, 3, 4, 5, 9) and sp["s1-val"].subjects == (6,)
    assert sp["s1-test"].subjects == (7, 8)
    assert sp["s1-test"].serial_names == S.SERIALS and not sp["s1-test"].indexes_sequences
    # s2: unseen cameras
    assert sp["s2-train"].serials == (0, 1, 2, 3, 4, 5)
    assert sp["s2-val"].serial_names == ("932122061900",) and sp["s2-test"].serial_names == ("932122062010",)
    # s3: unseen grasped objects (5 sequences per object: group = index // 5)
    assert sp["s3-val"].sequences == (15, 16, 17, 18, 19, 95, 96, 97, 98, 99)
    assert {i // 5 for i in sp["s3-test"].sequences} == {7, 11, 15} and len(sp["s3-test"].sequences) == 15
    assert len(sp["s3-train"].sequences) == 75 and not {3, 7, 11, 15, 19} & {i // 5 for i in sp["s3-train"].sequences}
    # every setup partitions what its train/val/test cover: no (subject, serial, sequence) twice
    for setup in S.SETUPS:
        seen = set()
        for part in S.PARTS:
            s = sp[f"{setup}-{part}"]
            cells = {(a, b, c) for a in s.subjects for b in s.serials for c in s.sequences}
            assert not cells & seen
            seen |= cells
    with pytest.raises(ValueError, match="s0-train"):
        S.split("s4-train")


@pytest.fixture(scope="module")
def full_layout(tmp_path_factory):
    """A DexYCB-layout root with the folders and meta.yml files of 5 of the 10 subjects x 100
    sequences (no images: list_items reads only these), all 8 cameras."""
    root = tmp_path_factory.mktemp("dexycb_full")
    (root / "calibration").mkdir()
    (root / "models").mkdir()
    meta = yaml.safe_dump({"serials": list(dexycb_splits.SERIALS), "num_frames": 8, "ycb_ids": [1, 2],
                           "ycb_grasp_ind": 0, "mano_sides": ["right"], "mano_calib": ["x"]})
    for s in (0, 1, 2, 6, 7):
        name = dexycb_splits.SUBJECTS[s]
        for i in range(100):
            d = root / name / f"{name[:8]}_{100000 + 37 * i}"  # sorted by name = recording order
            d.mkdir(parents=True)
            (d / "meta.yml").write_text(meta)
    return root


def _cells(items):
    """{(subject index, sequence index, serial index)} of listed items."""
    out = set()
    for it in items:
        subject, seq, serial = it.key.split("/")
        out.add((dexycb_splits.SUBJECTS.index(subject), (int(seq.split("_")[1]) - 100000) // 37,
                 dexycb_splits.SERIALS.index(serial)))
    return out


@pytest.mark.parametrize("name", ["s0-train", "s0-val", "s0-test", "s1-val", "s1-test", "s2-test", "s3-val"])
def test_split_selects_the_toolkits_subjects_sequences_and_cameras(full_layout, name):
    sp = dexycb_splits.split(name)
    present = {0, 1, 2, 6, 7}
    want = {(a, c, b) for a in set(sp.subjects) & present for b in sp.serials for c in sp.sequences}
    items = DexYCBAdapter().list_items(full_layout, _sel(split=name))
    assert _cells(items) == want and len(items) == len(want)


def test_split_narrowed_by_cameras_and_errors(full_layout, demo_root):
    items = DexYCBAdapter().list_items(full_layout, _sel(split="s1-test", cameras=["062010"]))
    assert _cells(items) == {(7, i, 7) for i in range(100)}
    with pytest.raises(UserError, match="unknown DexYCB split 's9-x'.*s0-train"):
        DexYCBAdapter().list_items(full_layout, _sel(split="s9-x"))
    # s0/s3 index a subject's 100 sequences: a partial subject folder is refused, not misread
    with pytest.raises(UserError, match="s0-train picks sequences by their index.*has 1"):
        DexYCBAdapter().list_items(demo_root, _sel(split="s0-train"))
    # s1/s2 do not: the demo (subject 01, both cameras in s2-train) works; s1-val has no subject here
    assert len(DexYCBAdapter().list_items(demo_root, _sel(split="s2-train"))) == 2
    with pytest.raises(UserError, match="s1-val uses subjects 20200928-subject-07"):
        DexYCBAdapter().list_items(demo_root, _sel(split="s1-val"))


# -- windows with too few annotated frames --------------------------------------------------

def test_frame_windows_min_valid():
    valid = np.ones(12, bool)
    valid[[1, 2]] = False         # window 0: 50 % valid
    valid[4:8] = False            # window 1: none
    assert frame_windows(12, 4, 1, valid, 0.5) == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert frame_windows(12, 4, 1, valid, 0.75) == [[8, 9, 10, 11]]
    assert frame_windows(12, 4, 1, valid, 0.0) == frame_windows(12, 4, 1)
    assert frame_windows(12, 3, 2, valid, 0.6) == [[6, 8, 10]]   # 0,2,4: 1/3 valid; 6,8,10: 2/3


def _copy_demo(demo_root, dst, images=True):
    ignore = None if images else shutil.ignore_patterns("*.jpg", "*.png", "labels_*")
    shutil.copytree(demo_root, dst, ignore=ignore)
    return dst


def _drop_hands(root, frames):
    """Mark ``frames`` as having no annotated hand in the sequence's pose.npz (pose_m all 0)."""
    path = root / KEY / "pose.npz"
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data["pose_m"][list(frames)] = 0
    np.savez_compressed(path, **data)


def test_windows_without_hands_are_skipped_and_counted(demo_root, tmp_path):
    from pipeline.engine.runner import RunSummary
    from pipeline.hoi.job import build_job
    from schemas.config import HoiConfig

    root = _copy_demo(demo_root, tmp_path / "d", images=False)
    _drop_hands(root, [1, 2, 4, 5, 6])  # window 0 has 2/4 with a hand, window 1 has 1/4
    cfg = HoiConfig(frames=4, resolution=64, hand_model="stand-in").validate()
    job = build_job("dexycb", root, tmp_path / "o.zarr", cfg, {"cameras": None}, None)
    assert [i.n_samples for i in job.items] == [2, 2]   # default --min-valid-frames 0.5 drops window 1
    assert job.notes == ["2 windows skipped: fewer than 50% of frames with a hand (--min-valid-frames)"]
    assert "note           2 windows skipped" in RunSummary("t", tmp_path, notes=job.notes).format()
    adapter = DexYCBAdapter()
    assert adapter.windows(root, job.items[0], job.options["selection"]) == [[0, 1, 2, 3], [8, 9, 10, 11]]
    job = build_job("dexycb", root, tmp_path / "o.zarr", cfg, {"min_valid_frames": 0.75}, None)
    assert [i.n_samples for i in job.items] == [1, 1] and job.notes[0].startswith("4 windows skipped: fewer than 75%")
    job = build_job("dexycb", root, tmp_path / "o.zarr", cfg, {"min_valid_frames": 0.0}, None)
    assert [i.n_samples for i in job.items] == [3, 3] and job.notes == []
    (root / KEY / "pose.npz").unlink()
    with pytest.raises(UserError, match="pose.npz is missing"):
        build_job("dexycb", root, tmp_path / "o.zarr", cfg, {}, None)


# -- background reference -------------------------------------------------------------------

def test_background_keeps_static_objects_and_drops_hands_and_the_grasped_object(demo_root):
    """The demo's box (YCB id 2) never moves and is never grasped: it stays in the reference,
    with its own colours; pixels the hands or the can (id 1) cover in one frame show the room."""
    from PIL import Image

    adapter = DexYCBAdapter()
    items = adapter.list_items(demo_root, _sel(cameras=[SERIALS[1]]))  # the camera that sees the box
    bg = adapter.background(demo_root, items[0]).astype(np.float64)
    folder = demo_root / KEY / SERIALS[1]
    segs = np.stack([np.load(folder / f"labels_{f:06d}.npz")["seg"] for f in range(12)])
    imgs = np.stack([np.asarray(Image.open(folder / f"color_{f:06d}.jpg"), np.float64) for f in range(12)])
    box = (segs == 2).all(axis=0)
    assert box.sum() > 3000
    # box pixels: the box itself (its colour in every frame), not room filled in from the sides
    assert np.abs(bg[box] - np.median(imgs[:, box], axis=0)).mean() < 4.0
    # pixels covered by a hand or the can in frame 0 but uncovered (seg 0) in most frames
    moved = np.isin(segs[0], [1, 255]) & ((segs == 0).sum(axis=0) >= 8)
    assert moved.sum() > 200
    free = np.where((segs == 0)[..., None], imgs, np.nan)
    room = np.nanmedian(free[:, moved], axis=0)
    assert np.abs(bg[moved] - room).mean() < 4.0
    assert np.abs(imgs[0][moved] - room).mean() > 20.0   # (frame 0 really shows something else there)


# -- joint labels ---------------------------------------------------------------------------

def test_joint_labels_are_read_and_agree_on_the_demo(demo_root, hoi_store):
    """load_clip fills joints_label from joint_3d (all -1 -> NaN); every stored sample carries
    the agreement figures, < 0.1 mm with the stand-in hand that wrote the labels."""
    from pipeline.hands.model import hand_models

    adapter = DexYCBAdapter()
    item = adapter.list_items(demo_root, _sel(cameras=[SERIALS[1]]))[0]
    clip = adapter.load_clip(demo_root, item, [8, 9, 10, 11], hand_models("stand-in"))
    lab = clip.joints_label
    assert set(lab) == {"left", "right"} and lab["left"].shape == (4, 21, 3)
    assert np.isnan(lab["left"][2:]).all() and np.isfinite(lab["left"][:2]).all()   # left absent in the last 2
    with np.load(demo_root / KEY / SERIALS[1] / "labels_000009.npz") as z:
        np.testing.assert_array_equal(lab["right"][1], z["joint_3d"][1])
    r = StoreReader(hoi_store)
    for i in range(len(r)):
        a = r.attrs(i)
        assert a["joint_err_max_mm"] < 0.1 and a["joint_err_max_mm_left"] < 0.1 and a["joint_err_max_mm_right"] < 0.1
        assert a["joint_err_frames"] >= FRAMES


def test_wrong_left_shapedirs_setting_is_a_labels_failure_with_the_figure(demo_root, tmp_path):
    """Fake MANO files ship MANO_LEFT with the right hand's shapedirs; the demo's labels were made
    with mirrored ones, so only --fix-left-shapedirs agrees. DexYCB's default (False) fails."""
    from pipeline.hoi.job import build_job, render_hoi_item
    from schemas.config import HoiConfig
    from tests.pipeline.hands.fake_mano import write_fake_mano

    mano = str(write_fake_mano(tmp_path / "mano"))
    sel = {"cameras": [SERIALS[0]]}
    cfg = HoiConfig(frames=FRAMES, resolution=64, hand_model="mano", max_joint_error_mm=1.0).validate()
    job = build_job("dexycb", demo_root, tmp_path / "x.zarr", cfg, sel, mano)
    assert job.options["hoi"]["fix_left_shapedirs"] is False   # the adapter's setting
    with pytest.raises(StepFailed) as e:
        render_hoi_item(job.items[0], job.options)
    assert e.value.stage == "labels"
    assert "left joint" in e.value.reason and "> 1 mm" in e.value.reason and "as shipped" in e.value.reason
    worst = float(e.value.reason.split(" by ")[1].split(" mm")[0])
    assert 1.0 < worst < 20.0
    fixed = HoiConfig(frames=FRAMES, resolution=64, hand_model="mano", max_joint_error_mm=1.0,
                      fix_left_shapedirs=True).validate()
    job = build_job("dexycb", demo_root, tmp_path / "x.zarr", fixed, sel, mano)
    samples = render_hoi_item(job.items[0], job.options)
    assert max(s["attrs"]["joint_err_max_mm"] for s in samples) < 0.1


def test_wrong_labels_fail_that_clip_and_the_run_goes_on(ray_cluster, demo_root, tmp_path, capsys):
    from pipeline.hoi.commands import render_hoi

    root = _copy_demo(demo_root, tmp_path / "d")
    bad = root / KEY / SERIALS[1]
    for f in range(12):
        path = bad / f"labels_{f:06d}.npz"
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        data["joint_3d"][1, 12] += np.float32([0.02, 0, 0])   # right middle tip 20 mm off
        np.savez_compressed(path, **data)
    _drop_hands(root, range(8, 12))                           # last window: no hand -> skipped
    out = tmp_path / "o.zarr"
    render_hoi("dexycb", root=root, hand_model="stand-in", out=out, frames=4, resolution=RES,
               samples_per_shard=2, workers=1, progress=False)
    text = capsys.readouterr().out
    assert "2 windows skipped: fewer than 50% of frames with a hand" in text
    r = StoreReader(out)
    assert len(r) == 2 and {r.key(i) for i in range(2)} == {f"{KEY}/{SERIALS[0]}"}
    (f,) = r.failures()
    assert f["key"] == f"{KEY}/{SERIALS[1]}" and f["stage"] == "labels"
    assert "by 20.0 mm" in f["reason"] and "right joint 12" in f["reason"] and "> 5 mm" in f["reason"]
    assert "stand-in hand is not MANO" in f["reason"]
    assert "1 x labels: MANO joints disagree" in text


# -- principal point ------------------------------------------------------------------------

def test_principal_point_is_the_realsense_pixel_centre_convention(demo_root):
    """RealSense ``ppx``/``ppy`` are pixel coordinates in which pixel i's centre is at i:
    * librealsense doc/projection.md, "Pixel Coordinates": "[0,0] referring to the center of the
      top left pixel in the image, and [w-1,h-1] referring to the center of the bottom right pixel";
      ``rs2_project_point_to_pixel`` (include/librealsense2/rsutil.h) is pixel = f * x/z + pp;
      src/proc/align.cpp maps "the top-left corner of the depth pixel" as (x - 0.5, y - 0.5);
    * dex-ycb-toolkit: sequence_loader.py l.70-73 builds K = [[fx,0,ppx],[0,fy,ppy],[0,0,1]] from
      the intrinsics file as is, and grasp_eval.py l.96/285 deprojects integer pixel indices
      (``(xmap - ppx) * depth / fx`` with xmap = arange(w)), i.e. pixel i at coordinate i.
    So K is used unchanged as an OpenCV K (ClipData's convention) and DexYCB's joint_2d is K
    applied to joint_3d with no half-pixel term; the store adds +0.5 (its pixel-centre-at-i+0.5
    convention, checked in test_render_hoi)."""
    adapter = DexYCBAdapter()
    for serial in SERIALS:
        with open(demo_root / "calibration" / "intrinsics" / f"{serial}_640x480.yml") as fh:
            c = yaml.safe_load(fh)["color"]
        K = adapter.intrinsics(demo_root, serial)
        np.testing.assert_array_equal(K, [[c["fx"], 0, c["ppx"]], [0, c["fy"], c["ppy"]], [0, 0, 1]])
        for f in (0, 11):
            with np.load(demo_root / KEY / serial / f"labels_{f:06d}.npz") as z:
                j3, j2 = z["joint_3d"], z["joint_2d"]
            for h in range(len(j3)):
                if np.all(j3[h] == -1):
                    assert np.all(j2[h] == -1)
                    continue
                uvw = j3[h].astype(np.float64) @ K.T
                np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], j2[h], atol=1e-3)


@pytest.mark.parametrize("bad, msg", [({"min_valid_frames": 1.5}, "--min-valid-frames must be in 0..1"),
                                      ({"max_joint_error_mm": 0.0}, "--max-joint-error-mm must be > 0"),
                                      ({"split": "s0-dev"}, "unknown DexYCB split 's0-dev'")])
def test_bad_dexycb_options_are_user_errors(demo_root, tmp_path, bad, msg):
    from pipeline.hoi.commands import render_hoi

    with pytest.raises(UserError, match=msg):
        render_hoi("dexycb", root=demo_root, hand_model="stand-in", out=tmp_path / "o.zarr", progress=False, **bad)
    assert not (tmp_path / "o.zarr").exists()


def test_demo_images_put_pixel_centres_where_K_says(demo_root):
    """The demo's seg (rendered by the exact layer renderer) follows the same convention: the
    hands' silhouette covers pixel i iff its centre i is inside, so the first/last covered column
    and row are ceil(min u) / floor(max u) of the hand vertices projected with K as is. Shifting
    by half a pixel either way (the other convention) matches only about half the edges."""
    from pipeline.hands.model import hand_models

    adapter, models = DexYCBAdapter(), hand_models("stand-in")
    meta = yaml.safe_load((demo_root / KEY / "meta.yml").read_text())
    betas = {s: yaml.safe_load((demo_root / "calibration" / f"mano_{c}" / "mano.yml").read_text())["betas"]
             for s, c in zip(meta["mano_sides"], meta["mano_calib"], strict=True)}
    hits = {0.0: [], 0.5: [], -0.5: []}
    for serial in SERIALS:
        K = adapter.intrinsics(demo_root, serial)
        for f in range(12):
            with np.load(demo_root / KEY / serial / f"labels_{f:06d}.npz") as z:
                seg, pose_m = z["seg"], z["pose_m"].astype(np.float64)
            verts = []
            for h, side in enumerate(meta["mano_sides"]):
                if pose_m[h].any():
                    m = models[side]
                    pose = m.pca_to_pose(pose_m[h:h + 1, :3], pose_m[h:h + 1, 3:48])
                    verts.append(m.forward(pose, betas[side], pose_m[h:h + 1, 48:])[0][0])
            uvw = np.concatenate(verts) @ K.T
            uv = uvw[:, :2] / uvw[:, 2:]
            ys, xs = np.nonzero(seg == 255)
            got = [xs.min(), xs.max(), ys.min(), ys.max()]
            for off in hits:
                u = uv + off
                want = [np.ceil(u[:, 0].min()), np.floor(u[:, 0].max()), np.ceil(u[:, 1].min()), np.floor(u[:, 1].max())]
                hits[off] += [w == g for w, g in zip(want, got, strict=True)]
    rate = {off: float(np.mean(h)) for off, h in hits.items()}
    assert rate[0.0] > 0.85 and rate[0.5] < 0.7 and rate[-0.5] < 0.7, rate


# -- MANO, from the toolkit's own layer ----------------------------------------------------------

def test_pca_pose_and_translation_are_the_toolkits_mano_layer(demo_root):
    """dex-ycb-toolkit ``layers/mano_layer.py`` L27-31: ``ManoLayer(flat_hand_mean=False, ncomps=45,
    use_pca=True)``, called with ``pose_m[:48]`` (3 global axis-angle + 45 PCA) and trans
    ``pose_m[48:51]`` (``mano_group_layer.py`` L87-90), output divided by 1000 (L54-56). Re-derived
    with the tests' port of manopth: the adapter's absolute pose and trans give the same hand (our
    smplx forward) to float precision; manopth's flat_hand_mean=True would put it off by mm."""
    from pipeline.hands.model import hand_models
    from tests.pipeline.hoi.manopth_port import manopth_forward

    models = hand_models("stand-in")
    adapter = DexYCBAdapter()
    item = adapter.list_items(demo_root, _sel(cameras=[SERIALS[0]]))[0]
    frames = [0, 1, 2, 3]
    clip = adapter.load_clip(demo_root, item, frames, models)
    meta = yaml.safe_load((demo_root / KEY / "meta.yml").read_text())
    errs, flat_errs = [], []
    for h, side in enumerate(meta["mano_sides"]):
        betas = np.asarray(yaml.safe_load((demo_root / "calibration" / f"mano_{meta['mano_calib'][h]}" /
                                           "mano.yml").read_text())["betas"], np.float64)
        pose_m = []
        for f in frames:
            with np.load(demo_root / KEY / SERIALS[0] / f"labels_{f:06d}.npz") as z:
                pose_m.append(z["pose_m"][h].astype(np.float64))
        pose_m = np.stack(pose_m)
        ok = pose_m.any(axis=1)
        hc = clip.hands[side]
        ours_v, ours_j = models[side].forward(hc.pose[ok], hc.betas, hc.trans[ok])
        for flat, out in ((False, errs), (True, flat_errs)):
            v, j = manopth_forward(models[side].arrays, side, pose_m[ok, :48], betas, pose_m[ok, 48:51],
                                   use_pca=True, ncomps=45, flat_hand_mean=flat)
            out.append(np.abs(ours_v - v / 1000).max())
            out.append(np.abs(ours_j - j / 1000).max())
    assert max(errs) < 1e-6 and min(flat_errs) > 1e-3, (errs, flat_errs)
