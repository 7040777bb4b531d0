"""ARCTIC against a layout written from ARCTIC's own code, and the layers sitting on the image.

Conventions, each re-derived from the toolkit's formulas (``arctic_toolkit_layout.py``): the
articulated part and units (``object_tensors.py``), the moving egocentric camera and its lens.

The layers sit on the image (issue 16's "done when"): ``render-hoi arctic`` on an ARCTIC layout
written from ARCTIC's own code (``arctic_toolkit_layout.py``: its object model, cameras, lens and
MANO call, ground truth drawn by the tests' own rasteriser) and on the project's own ARCTIC demo
(truth: the demo scene's own geometry). Per sample and frame, each hand's layers and the object
layer against that entity's silhouette, and the front-most layer against the visible labels, on
``valid`` pixels: IoU >= ``MIN_IOU`` in every frame, the lid opening and a hand leaving the image
included. The truth is drawn on the crop's pixel grid through the crop the sample records
(``attrs["crop_box"]``) and the dataset's own K, so a wrong ``K`` fails too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas import LAYER_NAMES
from schemas.reader import StoreReader
from tests.pipeline.hoi.arctic_toolkit_layout import (
    DIST8,
    LABELS,
    SEQ,
    SID,
    distort_pts,
    toolkit_object,
    write_arctic_toolkit_layout,
)

FRAMES, RES = 4, 128
MIN_IOU = 0.85
MIN_PX = 40          # an entity covering fewer crop pixels (a hand nearly out of view) is compared by count
SLIVER_PX = 15       # ... its layer and its truth may then differ by at most this many pixels
LEFT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("left_")]
RIGHT = [k for k, n in enumerate(LAYER_NAMES) if n.startswith("right_")]


@pytest.fixture(scope="module")
def toolkit(tmp_path_factory):
    root = tmp_path_factory.mktemp("arctic_toolkit") / "arctic_data" / "data"
    return root, write_arctic_toolkit_layout(root)


@pytest.fixture(scope="module")
def toolkit_store(ray_cluster, toolkit, tmp_path_factory) -> Path:
    from pipeline.hoi.commands import render_hoi

    out = tmp_path_factory.mktemp("arctic_toolkit_store") / "hoi.zarr"
    render_hoi("arctic", root=toolkit[0], hand_model="stand-in", out=out, frames=FRAMES, resolution=RES,
               max_padding=0.7, workers=1, progress=False)
    return out


def crop_K(K_src: np.ndarray, box, R: int) -> np.ndarray:
    """The crop's K in OpenCV's pixel convention (crop pixel j's centre at j) from the dataset's K
    (OpenCV) and the crop box: source pixel u -> crop (u + 0.5 - x0) * R / side - 0.5."""
    x0, y0, side = box
    s = R / side
    return np.array([[K_src[0, 0] * s, 0, (K_src[0, 2] + 0.5 - x0) * s - 0.5],
                     [0, K_src[1, 1] * s, (K_src[1, 2] + 0.5 - y0) * s - 0.5], [0, 0, 1]])


def iou_report(sample: dict, attrs: dict, draw, K_src: np.ndarray) -> list[dict]:
    """Per frame: IoU of each entity's layers vs its silhouette and of the front-most layer vs the
    visible labels, on valid pixels. ``draw(t, K, R)`` -> (labels, silhouettes) of the truth."""
    R = sample["rgb"].shape[1]
    K = crop_K(K_src, attrs["crop_box"], R)
    # the stored K is the same crop in the contract's convention (pixel centres at +0.5)
    np.testing.assert_allclose(sample["K"], K + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]), rtol=1e-4, atol=1e-3)
    depth = sample["mlo_depth"].astype(np.float32)
    out = []
    for t in range(len(depth)):
        labels, sil = draw(t, K, R)
        valid = sample["valid"][t]
        layers = {"object": depth[t, 0] > 0, "left": (depth[t, LEFT] > 0).any(0), "right": (depth[t, RIGHT] > 0).any(0)}
        rec = {"frame": t}
        for name, layer in layers.items():
            a, b = layer & valid, sil[name] & valid
            rec[name] = (a & b).sum() / max((a | b).sum(), 1) if max(a.sum(), b.sum()) >= MIN_PX else None
            rec[f"{name}_px"] = (int(a.sum()), int(b.sum()))
        z = np.where(depth[t] > 0, depth[t], np.inf)
        groups = [[0], LEFT, RIGHT]
        front_z = np.stack([z[g].min(0) for g in groups])
        front = np.where(np.isfinite(front_z.min(0)), np.argmin(front_z, 0) + 1, 0)    # 0 bg, 1 obj, 2 left, 3 right
        for name, k in (("object", 1), ("left", 2), ("right", 3)):
            a, b = (front == k) & valid, (labels == LABELS[name]) & valid
            rec[f"visible_{name}"] = (a & b).sum() / max((a | b).sum(), 1) if max(a.sum(), b.sum()) >= MIN_PX else None
        out.append(rec)
    return out


def check(report: list[dict], where: str) -> None:
    for rec in report:
        for name in ("object", "left", "right"):
            for key in (name, f"visible_{name}"):
                if rec[key] is not None:
                    assert rec[key] >= MIN_IOU, f"{where} frame {rec['frame']} {key}: IoU {rec[key]:.3f} ({rec})"
            if rec[name] is None:
                a, b = rec[f"{name}_px"]
                assert abs(a - b) <= SLIVER_PX, f"{where} frame {rec['frame']} {name}: {a} vs {b} px"


def test_toolkit_layout_layers_sit_on_the_image(toolkit_store, toolkit):
    root, truth = toolkit
    r = StoreReader(toolkit_store)
    assert not r.failures()
    assert sorted(r.key(i) for i in range(len(r))) == sorted(f"{SID}/{SEQ}/{v}" for v in truth.views for _ in range(2))
    seen = {"lid_open": 0, "hand_leaving": 0, "padded": 0, "ious": []}
    for i in range(len(r)):
        s, attrs = r.read(i), r.attrs(i)
        view = int(r.key(i).split("/")[-1])
        fr = attrs["source_frames"]
        report = iou_report(s, attrs, lambda t, K, R, fr=fr, view=view: truth.draw(view, fr[t], K, R, R),
                            truth.K[view])
        check(report, f"{r.key(i)} frames {fr}")
        seen["ious"] += [x[k] for x in report for k in ("object", "left", "right") if x[k] is not None]
        seen["lid_open"] += sum(truth.articulation[f] > 1.0 for f in fr)
        seen["hand_leaving"] += sum(0 < truth.hand_out[(view, f)]["right"] < 1 for f in fr)
        seen["padded"] += int((~s["valid"]).any())
        # the joint check ran on every view, the moving egocentric one included (processed_seqs labels)
        assert attrs["joint_err_frames"] == 2 * FRAMES and attrs["joint_err_max_mm"] < 0.05, attrs
        # hand_inside: the stored fraction of the right hand inside the image is the truth's
        np.testing.assert_allclose(s["hand_inside"][:, 1], [1 - truth.hand_out[(view, f)]["right"] for f in fr],
                                   atol=0.02)
    assert seen["lid_open"] >= 3 and seen["hand_leaving"] >= 2 and seen["padded"] >= 1, seen
    print(f"toolkit layout: {len(seen['ious'])} entity-frames, IoU min {min(seen['ious']):.3f} "
          f"median {np.median(seen['ious']):.3f}")


# -- the project's own ARCTIC demo (make-demo-hoi --layout arctic) ----------------------------------
DEMO_FRAMES, DEMO_VIEWS = 8, (0, 2, 5)


class DemoTruth:
    """The demo scene's own geometry (``pipeline.hoi.demo.scene``: the lid turned by the scene's
    articulation, the stand-in hands), seen by the demo's cameras: ``draw`` as ``Truth.draw``."""

    def __init__(self, n_frames: int):
        from pipeline.hands.standin import standin_arrays
        from pipeline.hoi.demo.arctic import N_VIEWS, H, W, ego_poses
        from pipeline.hoi.demo.scene import handover_scene, intrinsics

        scene = handover_scene(n_frames, 0)
        cams = scene.camera_poses(N_VIEWS)
        self.poses = {0: ego_poses(n_frames), **{v: np.broadcast_to(cams[v - 1], (n_frames, 4, 4)) for v in range(1, 9)}}
        self.K, self.size = intrinsics(W, H), (W, H)
        self.articulation = scene.articulation
        self.obj = [scene.object_vertices(f) for f in range(n_frames)]
        self.obj_faces = np.asarray(scene.object_mesh.faces)
        self.hands = {s: scene.hand_vertices(s) for s in ("left", "right")}
        self.hand_faces = {s: np.asarray(standin_arrays(s)["f"], np.int64) for s in ("left", "right")}

    def draw(self, view: int, f: int, K: np.ndarray, W: int, H: int):
        from tests.pipeline.hoi.arctic_toolkit_layout import _draw

        ents = {"object": (self.obj[f], self.obj_faces, np.ones(3)),
                **{s: (self.hands[s][f], self.hand_faces[s], np.ones(3)) for s in ("left", "right")}}
        _, labels, sil = _draw(ents, np.linalg.inv(self.poses[view][f]), K, W, H, np.zeros((H, W, 3)))
        return labels, sil


@pytest.fixture(scope="module")
def demo_store(ray_cluster, tmp_path_factory) -> Path:
    from pipeline.hoi.commands import render_hoi
    from pipeline.hoi.demo.arctic import make_demo

    root = make_demo(tmp_path_factory.mktemp("arctic_demo") / "data", n_frames=DEMO_FRAMES, views=DEMO_VIEWS)
    out = tmp_path_factory.mktemp("arctic_demo_store") / "hoi.zarr"
    # every window, the egocentric ones too (its hands spread wider than the frame: a third padding)
    render_hoi("arctic", root=root, hand_model="stand-in", out=out, frames=FRAMES, resolution=RES, workers=1,
               max_padding=1.0, progress=False)
    return out


def test_demo_layers_sit_on_the_image(demo_store):
    truth = DemoTruth(DEMO_FRAMES)
    r = StoreReader(demo_store)
    assert not r.failures() and len(r) == 2 * len(DEMO_VIEWS)
    ious, lid_open = [], 0
    for i in range(len(r)):
        s, attrs = r.read(i), r.attrs(i)
        view, fr = int(r.key(i).split("/")[-1]), attrs["source_frames"]
        report = iou_report(s, attrs, lambda t, K, R, fr=fr, view=view: truth.draw(view, fr[t], K, R, R), truth.K)
        check(report, f"demo {r.key(i)} frames {fr}")
        ious += [x[k] for x in report for k in ("object", "left", "right") if x[k] is not None]
        lid_open += sum(truth.articulation[f] > 0.5 for f in fr)
    assert lid_open >= 6
    print(f"demo: {len(ious)} entity-frames, IoU min {min(ious):.3f} median {np.median(ious):.3f}")


# -- conventions re-derived from the toolkit's code ----------------------------------------------
def _item(view: int, sid: str = SID, seq: str = SEQ):
    from pipeline.engine.items import WorkItem

    key = f"{sid}/{seq}/{view}"
    return WorkItem(key=key, locator=key, n_samples=1)


def posed_parts_vs_toolkit(root: Path, view: int, frames: list[int], sid: str = SID, seq: str = SEQ) -> tuple[float, float]:
    """(max error m of the adapter's posed object parts against ``ObjectTensors`` re-derived from
    the files, max error had parts.json been read as its docs say -- "1 for top")."""
    import json

    import trimesh

    from pipeline.hands.model import hand_models
    from pipeline.hoi.datasets.arctic import ArcticAdapter
    from pipeline.hoi.datasets.arctic_views import view_camera

    folder = root / "meta" / "object_vtemplates" / seq.split("_")[0]
    v_mm = np.asarray(trimesh.load(folder / "mesh.obj", process=False, force="mesh").vertices)
    parts = json.loads((folder / "parts.json").read_text())
    all_rows = np.load(root / "raw_seqs" / sid / f"{seq}.object.npy")
    rows = all_rows[frames]
    clip = ArcticAdapter().load_clip(root, _item(view, sid, seq), frames, hand_models("stand-in"))
    w2c = view_camera(root, sid, seq, view, len(all_rows)).world2cam
    index = {tuple(np.round(p, 6)): i for i, p in enumerate(v_mm / 1000.0)}
    errs = {}
    for name, reading in (("code", parts), ("docs", [1 - int(x) for x in parts])):
        world = toolkit_object(v_mm, reading, rows)                                  # [T,V,3]
        cam = np.einsum("tij,tvj->tvi", w2c[frames][:, :3, :3], world) + w2c[frames][:, None, :3, 3]
        worst = 0.0
        for part in clip.object_parts:
            ids = np.array([index[tuple(np.round(p, 6))] for p in part.vertices])
            own = (np.asarray(parts)[ids] == 0) == (part.name == "top")    # vertices labelled for this part
            posed = np.einsum("tij,vj->tvi", part.poses[:, :3, :3], part.vertices) + part.poses[:, None, :3, 3]
            worst = max(worst, float(np.abs(posed[:, own] - cam[:, ids[own]]).max()))
        errs[name] = worst
    return errs["code"], errs["docs"]


def test_articulated_part_is_the_one_object_tensors_turns(toolkit):
    """object_tensors.py: parts.json read as bool (L172), parts_ids = parts + 1 (L249), the vertices
    with parts_ids == 1 (value 0) take the articulated positions (L102-104), turned about -z (L73,
    L292), mm templates and translations (L278, processing.py L215). The adapter's posed parts are
    the toolkit's vertices to float precision, in a frame with the lid wide open; reading parts.json
    as the docs say (1 = top) would put the lid 10 cm off."""
    root, truth = toolkit
    frames = [4, 5, 6, 7]
    assert truth.articulation[frames].max() > 1.0
    for view in (1, 0):
        code, docs = posed_parts_vs_toolkit(root, view, frames)
        assert code < 1e-5 and docs > 0.05, (view, code, docs)


def test_demo_writes_parts_json_as_the_toolkit_reads_it(tmp_path):
    """The project's own ARCTIC demo: its lid (the scene's articulated part) is the part the
    toolkit's code turns (parts.json 0), and the adapter poses it as the toolkit does."""
    import json

    from pipeline.hoi.demo.arctic import OBJ as DEMO_OBJ
    from pipeline.hoi.demo.arctic import SEQ as DEMO_SEQ
    from pipeline.hoi.demo.arctic import make_demo
    from pipeline.hoi.demo.scene import handover_scene

    root = make_demo(tmp_path / "data", n_frames=6, views=(2,))
    parts = json.loads((root / "meta" / "object_vtemplates" / DEMO_OBJ / "parts.json").read_text())
    np.testing.assert_array_equal(np.asarray(parts, bool) == 0, handover_scene(6).top_mask)
    code, docs = posed_parts_vs_toolkit(root, 2, [2, 3, 4, 5], "s01", DEMO_SEQ)
    assert code < 1e-5 and docs > 0.02, (code, docs)


def test_egocentric_frames_are_undistorted_to_the_toolkits_pinhole_view(toolkit):
    """View 0: the recorded frames pass through the lens of distort_pts3d_all (transforms.py
    L82-111, dist8); the adapter undistorts them to the pinhole camera K_ego (the toolkit's
    "undistorted space" view 0): they match the truth's pinhole picture on the valid pixels, the
    recorded files do not; corners the lens did not record (pincushion: k1 > 0) are not valid."""
    from PIL import Image

    from pipeline.clips.lens import distort_normalised
    from pipeline.hands.model import hand_models
    from pipeline.hoi.datasets.arctic import ArcticAdapter
    from tests.pipeline.hoi.arctic_toolkit_layout import IOI_OFFSET

    root, truth = toolkit
    # the lens model is the toolkit's formula
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(-0.6, 0.6, (500, 2)), np.ones((500, 1))], axis=1)
    np.testing.assert_allclose(np.stack(distort_normalised(p[:, 0], p[:, 1], DIST8), 1), distort_pts(p, DIST8)[:, :2],
                               atol=1e-12)
    frames = [0, 3, 6]
    clip = ArcticAdapter().load_clip(root, _item(0), frames, hand_models("stand-in"))
    assert clip.image_valid is not None
    for t, f in enumerate(frames):
        ok = clip.image_valid[t]
        assert ok[240, 320] and not ok[0, 0] and not ok[-1, -1] and 0.85 < ok.mean() < 0.999
        pin = truth.pinhole[f].astype(float)
        ours = np.abs(clip.images[t].astype(float) - pin).mean(-1)[ok]
        raw = np.asarray(Image.open(root / "images" / SID / SEQ / "0" / f"{f + IOI_OFFSET:05d}.jpg"), float)
        recorded = np.abs(raw - pin).mean(-1)[ok]
        assert np.median(ours) < 3.0 and ours.mean() < 6.0 and recorded.mean() > 2 * ours.mean(), \
            (ours.mean(), recorded.mean())


def test_windows_over_max_padding_are_skipped_before_rendering(toolkit, tmp_path):
    """View 3 is a 640 x 200 strip: its crop must be ~55 % padding. At the default --max-padding
    (0.25) both its windows come back as ``Skipped`` with the one reason the summary counts."""
    from pipeline.engine.shard_task import Skipped
    from pipeline.hoi.job import build_job, render_hoi_item
    from schemas.config import MAX_PADDING, HoiConfig

    cfg = HoiConfig(frames=FRAMES, resolution=64, hand_model="stand-in").validate()
    assert cfg.max_padding == MAX_PADDING == 0.25
    job = build_job("arctic", toolkit[0], tmp_path / "x.zarr", cfg, {"cameras": ["3"]}, None)
    out = render_hoi_item(job.items[0], job.options)
    assert len(out) == 2 and all(isinstance(s, Skipped) for s in out)
    assert out[0].reason == "more than 25% of the crop is padding outside the camera image (--max-padding)"
