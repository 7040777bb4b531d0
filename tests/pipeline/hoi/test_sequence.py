"""The open sequence format: export-sequence dexycb -> render-hoi sequence gives the same samples;
multi-camera / OpenGL-axes / moving-camera / video / relative-pose folders; one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.hoi.adapter import make_selection
from pipeline.hoi.demo.dexycb import SEQUENCE, SERIALS, SUBJECT, _camera_poses
from pipeline.hoi.export_sequence import export, folder_name
from pipeline.sequence_format import read_sequence
from schemas.reader import StoreReader
from tests.pipeline.hoi.conftest import FRAMES, RES

KEYS = {s: f"{SUBJECT}/{SEQUENCE}/{s}" for s in SERIALS}


@pytest.fixture(scope="module")
def exported(demo_root, tmp_path_factory):
    """export-sequence dexycb of the session's DexYCB-layout demo (12 frames, 2 cameras)."""
    out = tmp_path_factory.mktemp("seq") / "exported"
    summary = export("dexycb", demo_root, out, {}, "stand-in", None, None, echo=lambda s: None)
    assert [k for k, _, _ in summary.written] == [KEYS[s] for s in SERIALS] and not summary.failed
    return out


def _run(dataset, root, selection, tmp_path, res=64):
    """All samples of the first item, through the job's worker step (in-process, real EGL)."""
    from pipeline.hoi.job import build_job, render_hoi_item
    from schemas.config import HoiConfig

    cfg = HoiConfig(frames=FRAMES, resolution=res, hand_model="stand-in").validate()
    job = build_job(dataset, root, tmp_path / f"{dataset}.zarr", cfg, selection, None)
    return render_hoi_item(job.items[0], job.options)


def _assert_same_samples(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for sa, sb in zip(a, b, strict=True):
        assert sa.keys() == sb.keys()
        for k in sa:
            if isinstance(sa[k], dict):
                assert sa[k] == sb[k], k
            else:
                assert sa[k].dtype == sb[k].dtype, k
                np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_export_writes_the_documented_folder(exported):
    folder = exported / folder_name(KEYS[SERIALS[0]])
    seq = read_sequence(folder)
    assert seq.n_frames == 12 and list(seq.cameras) == [SERIALS[0]] and set(seq.hands) == {"left", "right"}
    assert seq.flat_hand_mean and not seq.fix_left_shapedirs  # absolute poses; DexYCB: shapedirs as shipped
    assert seq.object_name == "002_master_chef_can" and seq.object_mesh.name == "textured_simple.obj"
    assert (seq.object_mesh.parent / "texture_map.png").is_file()  # the OBJ's material and texture came along
    np.testing.assert_array_equal(seq.cameras[SERIALS[0]].cam_to_world, np.tile(np.eye(4), (12, 1, 1)))
    assert seq.hands["left"].valid.tolist() == [True] * 10 + [False] * 2
    assert np.isnan(seq.joints_3d[10:, 0]).all() and np.isfinite(seq.joints_3d[:, 1]).all()
    assert len(list((folder / "frames" / SERIALS[0]).glob("*.png"))) == 12
    assert json.loads((folder / "sequence.json").read_text())["source"]["frame_ids"] == list(range(12))


def test_round_trip_through_the_runner_gives_the_same_store_samples(exported, hoi_store, tmp_path):
    """render-hoi sequence on the export == render-hoi dexycb on the source: every array, bit for bit."""
    from pipeline.hoi.commands import render_hoi

    out = tmp_path / "seq.zarr"
    render_hoi("sequence", root=exported, hand_model="stand-in", out=out, frames=FRAMES, resolution=RES,
               samples_per_shard=4, workers=2, progress=False)
    a, b = StoreReader(hoi_store), StoreReader(out)
    assert len(b) == len(a) == 6 and not b.failures()
    by_key = {}
    for i in range(len(a)):
        by_key.setdefault(a.key(i), []).append(i)
    seen = {}
    for j in range(len(b)):
        folder, cam = b.key(j).split("/")
        src = KEYS[cam]
        assert folder == folder_name(src)
        i = by_key[src][seen.setdefault(src, 0)]
        seen[src] += 1
        sa, sb = a.read(i), b.read(j)
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
        assert a.attrs(i) == b.attrs(j)


def _two_camera_folder(exported, tmp_path, moving=True):
    """One folder with both cameras: world = camera 0 (the demo's master), camera 1 at its extrinsics,
    written with OpenGL axes and (``moving``) as a per-frame [F,4,4] pose."""
    a = exported / folder_name(KEYS[SERIALS[0]])
    b = exported / folder_name(KEYS[SERIALS[1]])
    both = tmp_path / "both"
    shutil.copytree(a, both)
    shutil.copytree(b / "frames" / SERIALS[1], both / "frames" / SERIALS[1])
    shutil.copy(b / "background" / f"{SERIALS[1]}.png", both / "background" / f"{SERIALS[1]}.png")
    cams = json.loads((a / "cameras.json").read_text())
    cam1 = json.loads((b / "cameras.json").read_text())["cameras"][SERIALS[1]]
    gl = _camera_poses()[1] @ np.diag([1.0, -1.0, -1.0, 1.0])
    cam1["cam_to_world"] = np.tile(gl, (12, 1, 1)).tolist() if moving else gl.tolist()
    cam0 = cams["cameras"][SERIALS[0]]
    cam0["cam_to_world"] = (np.array(cam0["cam_to_world"]) @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist()
    cams = {"axes": "opengl", "cameras": {SERIALS[0]: cam0, SERIALS[1]: cam1}}
    (both / "cameras.json").write_text(json.dumps(cams))
    return both


def test_a_second_camera_placed_by_its_extrinsics_sees_what_the_dataset_labels(exported, demo_root, tmp_path):
    """Camera 1 of a two-camera folder (world = camera 0's frame): hands, object and joints are moved
    into camera 1 and give the dataset's own camera-1 sample (to float precision: the labels are float32)."""
    both = _two_camera_folder(exported, tmp_path)
    seq = read_sequence(both)
    np.testing.assert_allclose(seq.cameras[SERIALS[1]].cam_to_world[5], _camera_poses()[1], atol=1e-12)
    got = _run("sequence", both, {"cameras": [SERIALS[1]]}, tmp_path)
    want = _run("dexycb", demo_root, {"cameras": [SERIALS[1]]}, tmp_path)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g["rgb"].shape, w["rgb"].shape)
        np.testing.assert_allclose(g["K"], w["K"], rtol=1e-4)
        np.testing.assert_array_equal(g["hand_valid"], w["hand_valid"])
        np.testing.assert_allclose(g["joints_3d"], w["joints_3d"], atol=1e-5)
        np.testing.assert_allclose(g["mano_trans"], w["mano_trans"], atol=1e-5)
        np.testing.assert_allclose(g["obj_trans"], w["obj_trans"], atol=1e-5)
        np.testing.assert_allclose(np.abs((g["obj_rot"] * w["obj_rot"]).sum(-1)), 1.0, atol=1e-5)
        np.testing.assert_array_equal(g["layer_present"], w["layer_present"])
        differ = np.abs(g["mlo_depth"].astype(np.float32) - w["mlo_depth"].astype(np.float32)) > 1e-3
        assert differ.mean() < 1e-3
        assert abs(g["attrs"]["joint_err_max_mm"]) < 0.01  # the labels moved with the hands


def test_video_frames_and_relative_poses_read_the_same(exported, tmp_path):
    """Frames as one lossless video, and hand poses relative to hands_mean (flat_hand_mean false):
    the same clip as the PNG / absolute folder."""
    import imageio_ffmpeg

    from pipeline.hands.model import hand_models
    from pipeline.hoi.datasets.sequence import SequenceAdapter
    from pipeline.sequence_format.read import read_frames

    src = exported / folder_name(KEYS[SERIALS[0]])
    alt = tmp_path / "alt"
    shutil.copytree(src, alt)
    frames = read_frames(read_sequence(src).cameras[SERIALS[0]], list(range(12)))
    shutil.rmtree(alt / "frames" / SERIALS[0])
    w = imageio_ffmpeg.write_frames(str(alt / "frames" / f"{SERIALS[0]}.mkv"), (640, 480), codec="libx264rgb",
                                    pix_fmt_in="rgb24", pix_fmt_out="rgb24", output_params=["-qp", "0"],
                                    macro_block_size=1, quality=None)
    w.send(None)
    for f in frames:
        w.send(np.ascontiguousarray(f))
    w.close()
    models = hand_models("stand-in")
    with np.load(alt / "hands.npz") as z:
        hands = dict(z)
    hands["flat_hand_mean"] = np.array(False)
    for side in ("left", "right"):
        hands[f"{side}_pose"][:, 3:] -= models[side].hands_mean
    np.savez(alt / "hands.npz", **hands)

    ad = SequenceAdapter()
    sel = make_selection(frames=FRAMES)
    (ia,), (ib,) = ad.list_items(src, sel), ad.list_items(alt, sel)
    a = ad.load_clip(src, ia, [4, 5, 6, 7], models)
    b = ad.load_clip(alt, ib, [4, 5, 6, 7], models)
    np.testing.assert_array_equal(a.images, b.images)  # lossless H.264 RGB decodes to the same pixels
    for side in ("left", "right"):
        np.testing.assert_allclose(a.hands[side].pose, b.hands[side].pose, atol=1e-12)
        np.testing.assert_array_equal(a.hands[side].trans, b.hands[side].trans)


def _edit_npz(path, **changes):
    with np.load(path) as z:
        data = dict(z)
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    np.savez(path, **data)


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _nan_trans(f):
    with np.load(f / "hands.npz") as z:
        t = z["right_trans"].copy()
    t[2, 1] = np.nan
    _edit_npz(f / "hands.npz", right_trans=t)


def _scaled_object(f):
    P = np.load(f / "object_poses.npy")
    P[3, :3, 0] *= 2  # a uniform scale (mesh units -> m) is allowed, a non-uniform one is not
    np.save(f / "object_poses.npy", P)


def _mirror_camera(data):
    data["cameras"][SERIALS[0]]["cam_to_world"] = np.diag([-1.0, 1, 1, 1]).tolist()


BROKEN = {
    "missing hands": (lambda f: (f / "hands.npz").unlink(), r"hands\.npz: missing"),
    "pose shape": (lambda f: _edit_npz(f / "hands.npz", right_pose=np.zeros((12, 47))),
                   r"hands\.npz: right_pose: shape \(12, 47\), expected \(12, 48\)"),
    "valid dtype": (lambda f: _edit_npz(f / "hands.npz", right_valid=np.ones(12, np.int64)),
                    r"hands\.npz: right_valid: dtype int64, expected bool"),
    "NaN": (_nan_trans, r"hands\.npz: right_trans: NaN at index 2 \(a valid frame\)"),
    "no convention": (lambda f: _edit_npz(f / "hands.npz", flat_hand_mean=None), r"hands\.npz: flat_hand_mean: missing"),
    "typo key": (lambda f: _edit_npz(f / "hands.npz", right_poses=np.zeros((12, 48))), r"right_poses: unknown key"),
    "non-unit rotation": (_scaled_object, r"object_poses\.npy: rotation is not a rotation times a uniform scale .* at index 3"),
    "mirror camera": (lambda f: _edit_json(f / "cameras.json", _mirror_camera),
                      r"cameras\.json: cameras\.\d+\.cam_to_world: rotation has det -1"),
    "distortion": (lambda f: _edit_json(f / "cameras.json",
                                        lambda d: d["cameras"][SERIALS[0]].update(distortion=[0.1, 0, 0, 0, 0])),
                   r"cameras\.json: cameras\.\d+\.distortion: non-zero lens distortion is not supported"),
    "version": (lambda f: _edit_json(f / "sequence.json", lambda d: d.update(format_version=7)),
                r"sequence\.json: format_version: 7 is newer"),
    "missing mesh": (lambda f: (f / "object" / "textured_simple.obj").unlink(), r"textured_simple\.obj: missing"),
    "frame count": (lambda f: (f / "frames" / SERIALS[0] / "000011.png").unlink(),
                    r"frames/\d+: 11 frames, sequence\.json n_frames is 12"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_folder_is_one_line_naming_file_and_field(exported, tmp_path, case):
    from pipeline.hoi.datasets.sequence import SequenceAdapter

    folder = tmp_path / "s"
    shutil.copytree(exported / folder_name(KEYS[SERIALS[0]]), folder)
    breaker, pattern = BROKEN[case]
    breaker(folder)
    with pytest.raises(UserError, match=pattern) as e:
        SequenceAdapter().list_items(folder, {"frames": FRAMES, "stride": 1})
    assert "\n" not in str(e.value)


def test_cli_bad_folder_exits_2_with_one_line_and_writes_nothing(exported, tmp_path):
    from tests.conftest import ROOT

    folder = tmp_path / "s"
    shutil.copytree(exported / folder_name(KEYS[SERIALS[0]]), folder)
    _edit_npz(folder / "hands.npz", left_betas=np.zeros(9))
    cmd = [sys.executable, "cli.py", "render-hoi", "sequence", "--root", str(folder), "--hand-model", "stand-in",
           "--out", str(tmp_path / "o.zarr")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "hands.npz: left_betas: shape (9,), expected (10,)" in p.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_export_resumes_and_refuses_a_foreign_target_before_writing(exported, demo_root, tmp_path):
    again = export("dexycb", demo_root, exported, {}, "stand-in", None, None, echo=lambda s: None)
    assert again.written == [] and again.already == len(KEYS) and "already exported" in again.format()
    other = tmp_path / "other"
    shutil.copytree(exported, other)
    meta = other / folder_name(KEYS[SERIALS[0]]) / "sequence.json"
    m = json.loads(meta.read_text())
    m["source"]["key"] = "someone/else"
    meta.write_text(json.dumps(m))
    with pytest.raises(UserError, match="exists and holds another export"):
        export("dexycb", demo_root, other, {}, "stand-in", None, None, echo=lambda s: None)
    with pytest.raises(UserError, match="--split does not apply"):
        export("sequence", exported, tmp_path / "again", {"split": "s0-train"}, "stand-in", None, None)
    assert not (tmp_path / "again").exists()


def test_a_mano_run_with_the_other_left_shapedirs_fails_the_item(exported, tmp_path):
    """hands.npz says how the left hand was fitted; a MANO run with the other setting is refused
    (StepFailed naming the flag), the matching one loads."""
    from pipeline.errors import StepFailed
    from pipeline.hands.model import hand_models
    from pipeline.hoi.datasets.sequence import SequenceAdapter
    from tests.pipeline.hands.fake_mano import write_fake_mano

    mano = str(write_fake_mano(tmp_path / "mano"))
    src = exported / folder_name(KEYS[SERIALS[0]])
    ad = SequenceAdapter()
    (item,) = ad.list_items(src, {"frames": FRAMES, "stride": 1})
    with pytest.raises(StepFailed, match="fix_left_shapedirs=False.*--no-fix-left-shapedirs"):
        ad.load_clip(src, item, [0, 1, 2, 3], hand_models("mano", mano, True))
    clip = ad.load_clip(src, item, [0, 1, 2, 3], hand_models("mano", mano, False))
    assert set(clip.hands) == {"left", "right"}


def test_library_written_sequence_with_parts_and_a_moving_camera(tmp_path):
    """write_sequence -> read_sequence -> load_clip: a moving camera, a two-part object with a mesh in
    cm (uniform scale in its poses) and joint labels; everything lands in the camera frame consistently."""
    import trimesh
    from scipy.spatial.transform import Rotation

    from pipeline.hands.model import hand_models
    from pipeline.hoi.datasets.sequence import SequenceAdapter
    from pipeline.sequence_format import (
        Camera,
        HandSequence,
        PartSequence,
        Sequence,
        write_frames,
        write_sequence,
    )

    F, rng = 5, np.random.default_rng(0)
    models = hand_models("stand-in")
    folder = tmp_path / "mine"
    (folder / "object").mkdir(parents=True)
    trimesh.creation.box((4.0, 3.0, 2.0)).export(folder / "object" / "box_cm.ply")  # centimetres
    c2w = np.tile(np.eye(4), (F, 1, 1))
    c2w[:, :3, :3] = Rotation.from_rotvec(np.outer(np.linspace(0, 0.3, F), [0, 1, 0])).as_matrix()
    c2w[:, :3, 3] = np.outer(np.linspace(0, 0.1, F), [1, 0, 0])
    obj = np.tile(np.eye(4), (F, 1, 1))
    obj[:, :3, :3] *= 0.01
    obj[:, :3, 3] = [0, 0, 0.5]
    pose = np.zeros((F, 48))
    pose[:, :3] = [0.2, -0.1, 0.3]
    pose[:, 3:] = models["right"].hands_mean
    trans = np.tile([0.0, 0.0, 0.45], (F, 1))
    betas = np.linspace(-0.5, 0.5, 10)
    _, world_joints = models["right"].forward(pose, betas, trans)
    labels = np.full((F, 2, 21, 3), np.nan)
    labels[:, 1] = world_joints
    verts = np.array([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0]], float)
    parts = [PartSequence(name=n, vertices=verts, faces=np.array([[0, 1, 2]]), poses=obj.copy()) for n in ("a", "b")]
    cam = Camera(name="cam0", K=np.array([[30.0, 0, 15.5], [0, 30, 11.5], [0, 0, 1]]), width=32, height=24,
                 cam_to_world=c2w, frames=folder / "frames" / "cam0")
    seq = Sequence(folder=folder, name="mine", n_frames=F, fps=30.0, cameras={"cam0": cam},
                   hands={"right": HandSequence(pose=pose, betas=betas, trans=trans, valid=np.ones(F, bool))},
                   flat_hand_mean=True, fix_left_shapedirs=False, object_mesh=folder / "object" / "box_cm.ply",
                   object_name="box", object_poses=obj, object_valid=np.ones(F, bool), object_parts=parts,
                   joints_3d=labels)
    write_sequence(folder, seq)
    write_frames(folder, "cam0", 0, rng.integers(0, 255, (F, 24, 32, 3), dtype=np.uint8))
    back = read_sequence(folder)
    assert back.fps == 30.0 and back.object_name == "box" and [p.name for p in back.object_parts] == ["a", "b"]
    np.testing.assert_array_equal(back.cameras["cam0"].cam_to_world, c2w)

    ad = SequenceAdapter()
    (item,) = ad.list_items(tmp_path, {"frames": 2, "stride": 2})  # root = a folder of sequence folders
    assert item.key == "mine/cam0" and ad.windows(tmp_path, item, {"frames": 2, "stride": 2}) == [[0, 2]]
    clip = ad.load_clip(tmp_path, item, [1, 4], models)
    w2c = np.linalg.inv(c2w[[1, 4]])
    np.testing.assert_allclose(clip.object_parts[1].poses, w2c @ obj[[1, 4]], atol=1e-12)
    np.testing.assert_allclose(clip.object_poses, w2c @ obj[[1, 4]], atol=1e-12)
    want = np.einsum("tij,tkj->tki", w2c[:, :3, :3], world_joints[[1, 4]]) + w2c[:, None, :3, 3]
    h = clip.hands["right"]
    _, cam_joints = models["right"].forward(h.pose, h.betas, h.trans)
    np.testing.assert_allclose(cam_joints, want, atol=1e-9)          # the hand moved rigidly with the camera
    np.testing.assert_allclose(clip.joints_label["right"], want, atol=1e-9)
    assert set(clip.joints_label) == {"right"}
    assert ad.background(tmp_path, item).shape == (24, 32, 3)        # no background/: median of the frames
