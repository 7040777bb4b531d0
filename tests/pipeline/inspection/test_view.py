"""``view STORE INDEX``: recordings written with ``--save`` and read back with Rerun's own reader.

The stores are real (render-hoi on the synthetic DexYCB layout, render-objaverse on the
built-in objects); geometry checks project what the recording holds through the logged
camera and compare with what the renderer drew (the stored layer silhouettes and joints).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.inspection.view import EXTRA_ERROR, camera_pose_rdf, pose_points, project_rdf
from schemas.occlusion import DEFAULT_TAU
from schemas.reader import StoreReader
from schemas.store import LAYER_NAMES

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def objaverse_store(ray_cluster, builtin_dir, tmp_path_factory) -> Path:
    from pipeline.engine import runner
    from tests.pipeline.helpers import small_job

    job, _ = small_job(tmp_path_factory.mktemp("view") / "obj.zarr", limit=1)
    runner.run(job, workers=1, progress=False)
    return job.out


@pytest.fixture(scope="module")
def human_store(ray_cluster, tmp_path_factory) -> Path:
    """render-human on make-demo-human's videos (4 frames at 64 px)."""
    from pipeline.engine import runner
    from pipeline.human import job as human_job
    from pipeline.human.config import HumanConfig
    from pipeline.human.demo import make_demo

    root = tmp_path_factory.mktemp("human_demo")
    make_demo(root, 4, 0)
    out = tmp_path_factory.mktemp("view") / "human.zarr"
    runner.run(human_job.build_job(root, out, HumanConfig(frames=4, resolution=64, samples_per_shard=4).validate(), 1),
               1, progress=False)
    return out


def read_rrd(path: Path) -> dict:
    """{entity: {component: {frame (None = static): pyarrow value}}} of a .rrd, via rerun.chunk.RrdReader."""
    from rerun.chunk import RrdReader

    out: dict = defaultdict(lambda: defaultdict(dict))
    for chunk in RrdReader(path).stream():
        rb = chunk.to_record_batch()
        frames = rb.column("frame").to_pylist() if "frame" in rb.schema.names else [None] * rb.num_rows
        for name in rb.schema.names:
            if ":" not in name:
                continue
            col = rb.column(name)
            for r, f in enumerate(frames):
                if col[r].is_valid:
                    out[chunk.entity_path][name][f] = col[r]
    return out


def vec3(value) -> np.ndarray:
    return np.asarray(value.values.flatten().to_numpy(zero_copy_only=False), np.float64).reshape(-1, 3)


def vec2(value) -> np.ndarray:
    return np.asarray(value.values.flatten().to_numpy(zero_copy_only=False), np.float64).reshape(-1, 2)


def image(rec: dict, entity: str, frame: int) -> np.ndarray:
    fmt = rec[entity]["Image:format"][frame].as_py()[0]
    buf = np.asarray(rec[entity]["Image:buffer"][frame].values[0].values.to_numpy(), np.uint8)
    return buf.reshape(fmt["height"], fmt["width"], -1)


# -- pure conversions ---------------------------------------------------------------------
def test_pose_points_and_camera_axes_by_hand():
    # 90 deg about z (x,y,z,w), scale 2, then +1 on z: (1,0,0) -> (0,2,1)
    q = np.array([[0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]])
    assert np.allclose(pose_points(np.array([[1.0, 0, 0]]), q, np.array([[0, 0, 1.0]]), 2.0), [[[0, 2, 1]]])
    # OpenGL camera at the origin looks down -z: a point 2 m in front, 0.1 m up, lands above the centre
    K = np.array([[100.0, 0, 48], [0, 100, 48], [0, 0, 1]])
    assert np.allclose(project_rdf(np.array([0, 0.1, -2.0]), np.eye(4), K), [48, 43])
    assert np.allclose(camera_pose_rdf(np.eye(4))[:3, :3], np.diag([1, -1, -1]))


def test_projection_through_the_logged_camera_gives_the_stored_joints(hoi_store):
    r = StoreReader(hoi_store)
    a = r.read(0, names=["joints_3d", "joints_2d", "hand_valid", "K", "cam_pose"])
    got = project_rdf(a["joints_3d"], a["cam_pose"], a["K"])[a["hand_valid"]]
    assert a["hand_valid"].any()
    assert np.abs(got - a["joints_2d"][a["hand_valid"]]).max() < 1e-2


# -- recordings -------------------------------------------------------------------------------
def on_silhouette(px: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(fraction of pixel positions [N,2] (centres at +0.5) on True pixels of ``mask``, largest
    distance in pixels from a position to the silhouette). Rasterised edges make the first
    a little under 1 for surface points; the second stays near 1 px unless the geometry is off."""
    from scipy.ndimage import distance_transform_edt

    ij = np.clip(np.floor(px).astype(int), 0, np.array(mask.shape[::-1]) - 1)
    off = distance_transform_edt(~mask)[ij[:, 1], ij[:, 0]]
    return float((off == 0).mean()), float(off.max())


def test_hoi_recording(hoi_store, tmp_path):
    pytest.importorskip("rerun")
    from pipeline.inspection.view import view

    out = tmp_path / "hoi.rrd"
    summary = view(hoi_store, 0, save=out, progress=False)
    assert out.exists() and not Path(f"{out}.partial").exists() and "stand-in" in summary
    # Rerun's own check that every archetype (and the layout blueprint stored beside) loads
    from rerun.chunk import RrdReader

    assert len(RrdReader(out).blueprints()) == 1
    verify = subprocess.run([str(Path(sys.executable).parent / "rerun"), "rrd", "verify", str(out)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    rec = read_rrd(out)
    r = StoreReader(hoi_store)
    a = r.read(0)
    T, R = r.layout.frames, r.layout.resolution
    assert sorted(rec["/world/camera/image/rgb"]["Image:buffer"]) == list(range(T))
    # the camera as logged (Rerun stores 3x3 matrices column-major): RDF pose + K put joints_3d on joints_2d
    flat = lambda v: np.asarray(v.values.flatten().to_numpy(zero_copy_only=False), np.float64)  # noqa: E731
    rot = flat(rec["/world/camera"]["Transform3D:mat3x3"][None]).reshape(3, 3).T
    pos = flat(rec["/world/camera"]["Transform3D:translation"][None])
    K = flat(rec["/world/camera/image"]["Pinhole:image_from_camera"][None]).reshape(3, 3).T
    assert np.allclose(K, a["K"])
    cam = (a["joints_3d"][a["hand_valid"]] - pos) @ rot  # world -> RDF camera (z forward)
    assert (cam[..., 2] > 0).all()
    uv = cam @ K.T
    assert np.abs(uv[..., :2] / uv[..., 2:] - a["joints_2d"][a["hand_valid"]]).max() < 1e-2
    assert np.array_equal(image(rec, "/world/camera/image/rgb", 1), a["rgb"][1])
    for name in LAYER_NAMES:  # all 13 stored: each as its own normal, depth and D entity
        for kind in ("normal", "depth", "occlusion"):
            assert f"/layers/{kind}/{name}" in rec
    for t in range(T):  # D: front-most layer 255, one tau behind 255/e, absent 0
        z = a["mlo_depth"][t].astype(np.float32)
        zf = np.where(z > 0, z, np.inf).min(0)
        want = np.where(z > 0, np.exp(-(z - np.where(np.isfinite(zf), zf, 0)) / DEFAULT_TAU), 0)
        k = LAYER_NAMES.index("right_palm")
        if a["layer_present"][t, k]:
            got = image(rec, "/layers/occlusion/right_palm", t)[..., 0] / 255.0
            assert np.abs(got - want[k]).max() <= 0.5 / 255 + 1e-6
    # hands: 778-vertex meshes where valid, cleared where not; they sit on their layers in the image
    for s, side in enumerate(("left", "right")):
        meshes = rec[f"/world/hands/{side}"].get("Mesh3D:vertex_positions", {})
        clears = rec[f"/world/hands/{side}"].get("Clear:is_recursive", {})
        assert set(meshes) == {t for t in range(T) if a["hand_valid"][t, s]}
        assert set(clears) == {t for t in range(T) if not a["hand_valid"][t, s]}
        layer_ids = [LAYER_NAMES.index(f"{side}_{p}") for p in ("palm", "thumb", "index", "middle", "ring", "pinky")]
        for t, v in meshes.items():
            verts = vec3(v)
            assert verts.shape == (778, 3)
            on, off = on_silhouette(project_rdf(verts, a["cam_pose"], a["K"]), (a["mlo_depth"][t, layer_ids] > 0).any(0))
            assert on > 0.8 and off <= 1.5, (side, t, on, off)
            j2 = vec2(rec[f"/world/camera/image/joints/{side}"]["Points2D:positions"][t])
            assert np.allclose(j2, a["joints_2d"][t, s], atol=1e-4)
    assert any(a["hand_valid"][:, 0]) and any(a["hand_valid"][:, 1])
    # object points: where the trajectory puts them, and on the object layer's silhouette
    from scipy.spatial.transform import Rotation

    pts = rec["/world/object/points"]["Points3D:positions"]
    assert sorted(pts) == list(range(T))
    for t in range(T):
        want = Rotation.from_quat(a["obj_rot"][t]).apply(a["obj_scale"][0] * a["points"]) + a["obj_trans"][t]
        got = vec3(pts[t])
        assert np.abs(got - want).max() < 1e-5
        if a["layer_present"][t, 0]:
            on, off = on_silhouette(project_rdf(got, a["cam_pose"], a["K"]), a["mlo_depth"][t, 0] > 0)
            assert on > 0.8 and off <= 1.5, (t, on, off)
    assert {f"/refs/{n}" for n in ("front", "back", "left", "right", "top", "bottom", "background")} <= set(rec)
    assert R == image(rec, "/refs/front", None).shape[0]


def test_objaverse_recording_has_only_the_object_layer(objaverse_store, tmp_path):
    pytest.importorskip("rerun")
    from pipeline.inspection.view import view

    out = tmp_path / "obj.rrd"
    view(objaverse_store, 0, save=out, progress=False)
    rec = read_rrd(out)
    r = StoreReader(objaverse_store)
    a = r.read(0)
    assert r.layout.layers == ("object",)
    assert {e for e in rec if e.startswith("/layers/")} == {f"/layers/{k}/object" for k in ("normal", "depth", "occlusion")}
    assert not any(e.startswith("/world/hands") or "joints" in e for e in rec)
    pts = rec["/world/object/points"]["Points3D:positions"]
    for t in range(r.layout.frames):
        on, off = on_silhouette(project_rdf(vec3(pts[t]), a["cam_pose"], a["K"]), a["mlo_depth"][t, 0] > 0)
        assert on > 0.8 and off <= 1.5, (t, on, off)


def test_mano_store_without_mano_files_shows_joints_only(hoi_store, tmp_path):
    pytest.importorskip("rerun")
    from pipeline.inspection.view import view

    store = tmp_path / "mano.zarr"
    shutil.copytree(hoi_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["options"]["hoi"]["hand_model"] = "mano"
    manifest["options"]["mano_dir"] = str(tmp_path / "gone")
    (store / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "m.rrd"
    summary = view(store, 0, save=out, progress=False)
    assert "no hand meshes without --mano-dir" in summary
    rec = read_rrd(out)
    assert not any("Mesh3D:vertex_positions" in rec[e] for e in rec)
    assert any(e.endswith("/joints") and "Points3D:positions" in rec[e] for e in rec if e.startswith("/world/hands"))
    # with MANO files (the project's fake MANO: the stand-in's arrays in the official .pkl format) meshes come back
    from pipeline.hands.model import standin_hand
    from tests.pipeline.hands.fake_mano import write_fake_mano

    summary = view(store, 0, save=out, mano_dir=str(write_fake_mano(tmp_path / "mano")), progress=False)
    assert "hands: MANO from" in summary
    rec = read_rrd(out)
    a = StoreReader(store).read(0)
    meshes = rec["/world/hands/right"]["Mesh3D:vertex_positions"]
    t = min(meshes)
    want = standin_hand("right").forward(a["mano_pose"][t, 1], a["mano_betas"][1], a["mano_trans"][t, 1])[0][0]
    assert np.abs(vec3(meshes[t]) - want).max() < 1e-5


def test_bad_index_writes_nothing(hoi_store, tmp_path):
    pytest.importorskip("rerun")
    from pipeline.inspection.view import view

    with pytest.raises(UserError, match="out of range"):
        view(hoi_store, 999, save=tmp_path / "x.rrd", progress=False)
    assert not any(tmp_path.iterdir())


def test_without_the_extra_one_line_error_exit_2(hoi_store, tmp_path):
    out = tmp_path / "x.rrd"
    code = ("import sys; sys.modules['rerun'] = None; import cli; "
            f"sys.argv = ['cli.py', 'view', {str(hoi_store)!r}, '0', '--save', {str(out)!r}]; cli.main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [f"error: {EXTRA_ERROR}"]
    assert not out.exists()


def test_human_recording_shows_frames_skeleton_mask_and_keypoints(human_store, tmp_path):
    pytest.importorskip("rerun")
    from pipeline.inspection.view import view

    out = tmp_path / "human.rrd"
    summary = view(human_store, 0, save=out, progress=False)
    rec = read_rrd(out)
    r = StoreReader(human_store)
    a = r.read(0)
    T = r.layout.frames
    assert not any(e.startswith(("/layers", "/world/hands", "/world/object")) for e in rec)
    for e in ("/world/camera/image/rgb", "/frames/skeleton", "/frames/person_mask"):
        assert sorted(rec[e]["Image:buffer"]) == list(range(T)), e
    assert np.array_equal(image(rec, "/frames/skeleton", 2), a["skeleton"][2])
    kp = rec["/world/camera/image/keypoints"]
    for t in range(T):
        seen = (a["keypoints"][t, :, 2] > 0) & (a["keypoints"][t, :, :2] >= 0).all(1)
        assert np.allclose(vec2(kp["Points2D:positions"][t]), a["keypoints"][t, seen, :2])
        assert kp["Points2D:keypoint_ids"][t].values.to_pylist() == np.nonzero(seen)[0].tolist()
    if not np.any(a["K"]):  # the demo's camera is unknown: no pinhole, and the summary says so
        assert "/world/camera/image" not in rec or "Pinhole:image_from_camera" not in rec["/world/camera/image"]
        assert "camera unknown" in summary
