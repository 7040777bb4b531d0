"""One Objaverse-style object -> store samples (one per clip). A plain function per step.

Per object (shared by its clips): six canonical reference views, 2048 surface points.
Per clip: a trajectory, a background, T RGB frames over it, and the object layer's exact
normal and depth maps for every frame (all T frames in one atlas pass).

Quality gate and figures: each sample's attrs (``schemas.store.SAMPLE_ATTRS``) hold
``coverage_frames`` (object pixel fraction per frame, from the exact depth layer),
``coverage_refs`` (per reference view, REF_VIEW_NAMES order, from the RGB coverage alpha),
``faces``, ``textured`` and ``outside_area`` (surface fraction outside the unit sphere after
"bulk" normalisation). An object whose largest reference-view coverage is below
``cfg.min_coverage`` fails at stage "quality" ("degenerate framing") before any clip is drawn.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from pipeline.assets.mesh_io import CanonicalObject
from pipeline.errors import StepFailed
from pipeline.objaverse import backgrounds, trajectory
from pipeline.objects.object_refs import object_points, reference_views_with_coverage
from pipeline.render.cameras import intrinsics, look_at
from pipeline.render.workers import Renderers
from pipeline.seeding import sample_rng
from schemas import StoreLayout
from schemas.config import RenderConfig
from schemas.store import SAMPLE_ATTRS


def objaverse_layout(cfg: RenderConfig) -> StoreLayout:
    return StoreLayout(kind="objaverse", frames=cfg.frames, resolution=cfg.resolution, layers=("object",),
                       samples_per_shard=cfg.samples_per_shard)


def check_framing(ref_coverage: np.ndarray, min_coverage: float) -> None:
    """StepFailed("quality", "degenerate framing") if every reference view's object pixel
    fraction (float [6]) is below ``min_coverage``."""
    best = float(np.max(ref_coverage))
    if best < min_coverage:
        raise StepFailed("quality", "degenerate framing",
                         f"largest reference-view coverage {best:.3%} < --min-coverage {min_coverage:.3%}")


@contextmanager
def timed(timings: dict | None, stage: str):
    """Add the seconds the block takes to ``timings[stage]`` (no-op when timings is None)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def render_object(obj: CanonicalObject, cfg: RenderConfig, renderers: Renderers,
                  timings: dict | None = None) -> list[dict[str, np.ndarray]]:
    """All clips of one object as contract samples (see schemas.store), in clip order.
    ``timings`` (optional): receives seconds per stage (references, points, trajectory,
    render_layers, render_rgb), summed over clips."""
    R = cfg.resolution
    K = intrinsics(R, cfg.yfov_deg)
    cam_pose = look_at((0.0, 0.0, cfg.cam_distance))
    view = np.linalg.inv(cam_pose)

    with timed(timings, "references"):
        ref_views, ref_coverage = reference_views_with_coverage(obj, renderers.rgb, R)
    check_framing(ref_coverage, cfg.min_coverage)
    with timed(timings, "points"):
        points, point_normals = object_points(obj, cfg.seed)
    with timed(timings, "render_layers"):
        renderers.layers.upload("object", obj.mesh.vertices, obj.mesh.vertex_normals, obj.mesh.faces)

    from pipeline.render.layers import Draw

    samples = []
    for clip in range(cfg.clips_per_object):
        with timed(timings, "trajectory"):
            rng = sample_rng(cfg.seed, obj.uid, clip, "trajectory")
            quats, trans = trajectory.simulate(rng, cfg.frames, cfg.yfov_deg, cfg.cam_distance,
                                               cfg.max_rotation_deg)
            poses = trajectory.object_poses(quats, trans)
            background = backgrounds.gradient_background(sample_rng(cfg.seed, obj.uid, clip, "background"), R)
        with timed(timings, "render_rgb"):
            rgb = renderers.rgb.render_many(poses, cam_pose, background)  # one atlas pass (or pyrender)
        with timed(timings, "render_layers"):
            normal, depth = renderers.layers.render([[Draw("object", view @ p)] for p in poses], K,
                                                    depth_dtype=np.float16)
            present = depth.view(np.uint16) != 0  # depth is +0 or positive: the same as depth > 0
        attrs = {"coverage_frames": [round(float(c), 5) for c in present.mean(axis=(1, 2))],
                 "coverage_refs": [round(float(c), 5) for c in ref_coverage], "faces": obj.faces,
                 "textured": obj.textured, "outside_area": round(obj.outside, 5)}
        samples.append({
            SAMPLE_ATTRS: attrs,
            "rgb": rgb,
            "mlo_normal": normal[:, None],
            "mlo_depth": depth[:, None],
            "layer_present": present.any(axis=(1, 2))[:, None],
            "ref_views": ref_views,
            "background": background,
            "points": points,
            "point_normals": point_normals,
            "obj_rot": quats.astype(np.float32),
            "obj_trans": trans.astype(np.float32),
            "obj_scale": np.ones(1, np.float32),  # the canonical frame is the scene frame
            "K": K.astype(np.float32),
            "cam_pose": cam_pose.astype(np.float32),
        })
    renderers.layers.delete("object")
    return samples
