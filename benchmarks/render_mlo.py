"""MLO rendering speed: LayerRenderer's atlas vs the plain pyrender way, same content, one run.

Scene: one bimanual frame, 512 x 512, 13 layers (an object of 5120 faces; left and right
stand-in hands, six part layers each), camera-space normals + depth per layer.

  * atlas  : ``pipeline.hoi.mlo.render_mlo`` - hand vertex normals, upload, all 13 layers as
             tiles of one atlas, one pass, one read-back per target (exact, no MSAA). Also
             T=8 frames per call (how render-hoi calls it), reported per frame.
  * pyrender: the plain way - per layer one pyrender.Scene holding that layer's mesh with
             vertex colours = its camera-space normals ((n+1)/2, recomputed per frame since
             hands deform and the object moves), RenderFlags.FLAT (colour = vertex colour,
             no lighting), one ``OffscreenRenderer.render`` (colour + depth read-back) per
             layer, default 4x MSAA. "render only" excludes building the meshes/scenes.

Agreement per layer: silhouette IoU and, where both cover a pixel, the normal angle
(degrees) and the depth difference (mm). Methods are timed round-robin, median of 9.
Run: ``LP_NUM_THREADS=1 python benchmarks/render_mlo.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LP_NUM_THREADS", "1")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from pipeline.hands.model import standin_hand  # noqa: E402
from pipeline.render.cameras import intrinsics  # noqa: E402
from pipeline.render.context import shared_context  # noqa: E402
from pipeline.render.layers import LayerRenderer  # noqa: E402
from pipeline.render.mlo import HandTrack, ObjectTrack, render_mlo, vertex_normals  # noqa: E402
from schemas import HAND_PARTS, LAYER_NAMES  # noqa: E402

R, REPEATS = 512, 9
K = intrinsics(R, 40.0)


def scene(t: int = 0):
    """Object (icosphere, 5120 faces) with two hands around it; frame t moves things a little."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.045)
    mv = np.eye(4)
    mv[:3, 3] = [0.0, 0.0, -0.45 - 0.002 * t]
    obj = ObjectTrack(sphere.vertices, sphere.vertex_normals, sphere.faces, mv[None], np.array([True]))
    hands = {}
    for side, x in (("left", -0.05), ("right", 0.05)):
        h = standin_hand(side)
        pose = np.zeros((1, 48))
        pose[0, 3:] = h.hands_mean * (1 + 3 * (side == "right")) + 0.01 * t
        pose[0, :3] = [0, 0, np.pi / 2 if side == "right" else -np.pi / 2]
        v, _ = h.forward(pose, np.zeros(10), [[x, -0.12, -0.47]])
        hands[side] = HandTrack(h, v, np.array([True]))
    return obj, hands


def layer_meshes(obj: ObjectTrack, hands: dict) -> list[trimesh.Trimesh | None]:
    """Per layer: its mesh in the camera frame with camera-space normal colours."""
    out = []
    mv = obj.modelviews[0]
    v = obj.vertices @ mv[:3, :3].T + mv[:3, 3]
    n = obj.normals @ np.linalg.inv(mv[:3, :3])
    out.append((v, n, obj.faces))
    for side in ("left", "right"):
        tr = hands[side]
        vn = vertex_normals(tr.vertices[0], tr.model.faces)
        for part in HAND_PARTS:
            first, count = tr.model.part_ranges[part]
            out.append((tr.vertices[0], vn, tr.model.faces[first:first + count]))
    meshes = []
    for v, n, f in out:
        n = n / np.linalg.norm(n, axis=1, keepdims=True)
        m = trimesh.Trimesh(v, f, process=False)
        m.visual.vertex_colors = np.c_[np.round((n + 1) / 2 * 255), np.full(len(n), 255)].astype(np.uint8)
        meshes.append(m)
    return meshes


def pyrender_scenes(meshes):
    import pyrender

    cam = pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], znear=0.05, zfar=50.0)
    scenes = []
    for m in meshes:
        s = pyrender.Scene(bg_color=[0, 0, 0, 0])
        s.add(pyrender.Mesh.from_trimesh(m, smooth=True))
        s.add(cam, pose=np.eye(4))
        scenes.append(s)
    return scenes


def pyrender_render(ctx, scenes):
    import pyrender

    outs = [ctx.pyrender.render(s, flags=pyrender.RenderFlags.FLAT) for s in scenes]
    return np.stack([c for c, _ in outs]), np.stack([d for _, d in outs])


def timed_interleaved(fns: dict, repeats: int = REPEATS) -> dict:
    """Median ms per call of each function, timed round-robin (machine load hits all alike)."""
    for fn in fns.values():
        fn()  # warm-up
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: 1000 * float(np.median(v)) for k, v in ts.items()}


def main() -> None:
    ctx = shared_context(R)
    lr = LayerRenderer(ctx, R, near=0.05, far=50.0)
    obj, hands = scene()
    T = 8
    clip = [scene(t) for t in range(T)]
    clip_hands = {s: HandTrack(clip[0][1][s].model, np.concatenate([c[1][s].vertices for c in clip]), np.ones(T, bool))
                  for s in ("left", "right")}
    clip_obj = ObjectTrack(obj.vertices, obj.normals, obj.faces, np.concatenate([c[0].modelviews for c in clip]),
                           np.ones(T, bool))

    prebuilt = pyrender_scenes(layer_meshes(obj, hands))
    ms = timed_interleaved({
        "atlas": lambda: render_mlo(lr, K, 1, obj, hands),
        "atlas_t": lambda: render_mlo(lr, K, T, clip_obj, clip_hands),
        "plain": lambda: pyrender_render(ctx, pyrender_scenes(layer_meshes(obj, hands))),
        "plain_render": lambda: pyrender_render(ctx, prebuilt),
    })
    ms_atlas, ms_atlas_t, ms_plain, ms_plain_render = ms["atlas"], ms["atlas_t"] / T, ms["plain"], ms["plain_render"]
    normal, depth = render_mlo(lr, K, 1, obj, hands)
    pc, pd = pyrender_render(ctx, prebuilt)
    info = ctx.info()
    print(f"MLO render benchmark: {R}x{R}, 13 layers (object 5120 faces + 2 stand-in hands), "
          f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}, GL: {info['renderer']}")
    print(f"{'method':<44}{'ms/frame':>10}{'vs atlas':>10}")
    rows = [("atlas, 1 frame/call (13 tiles, 1 read-back)", ms_atlas),
            (f"atlas, {T} frames/call ({13 * T} tiles)", ms_atlas_t),
            ("pyrender, 13 scenes x (render + read-back)", ms_plain),
            ("pyrender, render + read-back only", ms_plain_render)]
    for name, ms in rows:
        print(f"{name:<44}{ms:>10.1f}{ms / ms_atlas:>9.2f}x")
    print(f"speed-up (pyrender / atlas 1 frame): {ms_plain / ms_atlas:.1f}x; per frame in clips of {T}: "
          f"{ms_plain / ms_atlas_t:.1f}x")
    print(f"\n{'layer':<14}{'px atlas':>9}{'px pyr':>8}{'IoU':>7}{'normal deg med/p95':>20}{'depth mm med/max':>18}")
    for k, name in enumerate(LAYER_NAMES):
        a, b = depth[0, k] > 0, pd[k] > 0
        both = a & b
        iou = (a & b).sum() / max((a | b).sum(), 1)
        na = normal[0, k][both].astype(np.float64) / 255 * 2 - 1
        nb = pc[k][both].astype(np.float64) / 255 * 2 - 1
        na /= np.linalg.norm(na, axis=1, keepdims=True)
        nb /= np.maximum(np.linalg.norm(nb, axis=1, keepdims=True), 1e-9)
        ang = np.degrees(np.arccos(np.clip((na * nb).sum(axis=1), -1, 1))) if both.any() else np.zeros(1)
        dd = np.abs(depth[0, k][both] - pd[k][both]) * 1000 if both.any() else np.zeros(1)
        print(f"{name:<14}{a.sum():>9}{b.sum():>8}{iou:>7.3f}{np.median(ang):>10.2f}/{np.percentile(ang, 95):<9.2f}"
              f"{np.median(dd):>8.3f}/{dd.max():<8.3f}")


if __name__ == "__main__":
    main()
