"""The layers sit on the image (issue 16's "done when"): ``render-hoi arctic`` on an ARCTIC layout
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
    LABELS,
    SEQ,
    SID,
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
        from pipeline.hoi.demo.arctic import H, N_VIEWS, W, ego_poses
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
