"""One Objaverse-style object -> store samples (one per clip). A plain function per step.

Per object (shared by its clips): six canonical reference views, 2048 surface points.
Per clip: a trajectory, a background, T RGB frames over it, and the object layer's exact
normal and depth maps for every frame (all T frames in one atlas pass).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline import backgrounds, trajectory
from pipeline.mesh_io import CanonicalObject
from pipeline.points import sample_surface_points
from pipeline.render.cameras import intrinsics, look_at, reference_view_poses
from schemas import N_POINTS, REF_VIEW_NAMES, StoreLayout
from schemas.config import RenderConfig

WHITE = 255


def sample_rng(seed: int, uid: str, clip: int, stream: str) -> np.random.Generator:
    """An independent generator per (seed, uid, clip, stream): reruns and reorderings agree."""
    digest = hashlib.sha256(f"{seed}\x00{uid}\x00{clip}\x00{stream}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def objaverse_layout(cfg: RenderConfig) -> StoreLayout:
    return StoreLayout(kind="objaverse", frames=cfg.frames, resolution=cfg.resolution, layers=("object",),
                       samples_per_shard=cfg.samples_per_shard)


@dataclass
class Renderers:
    """What a worker keeps between objects: one EGL context and the two renderers on it."""

    context: object
    layers: object
    rgb: object


@functools.lru_cache(maxsize=2)
def worker_renderers(resolution: int, yfov_deg: float) -> Renderers:
    """Created once per worker process (per resolution and field of view)."""
    from pipeline.render.context import shared_context
    from pipeline.render.layers import LayerRenderer
    from pipeline.render.rgb import RGBRenderer

    ctx = shared_context(resolution)
    return Renderers(ctx, LayerRenderer(ctx, resolution, near=0.05, far=100.0), RGBRenderer(ctx, yfov_deg))


def reference_views(obj: CanonicalObject, rgb_renderer, cam_distance: float, resolution: int) -> np.ndarray:
    """uint8 [6,R,R,3]: the object in its canonical pose seen from REF_VIEW_NAMES on white.
    Leaves ``obj`` set as the RGB renderer's object. Shared by Objaverse and HOI samples."""
    rgb_renderer.set_object(obj.scene, obj.to_canonical)
    white = np.full((resolution, resolution, 3), WHITE, np.uint8)
    return np.stack([rgb_renderer.render(np.eye(4), pose, white)
                     for pose in reference_view_poses(cam_distance, REF_VIEW_NAMES)])


def object_points(obj: CanonicalObject, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(points, normals) float32 [2048,3] each, canonical frame, seeded by (seed, uid)."""
    return sample_surface_points(obj.mesh, N_POINTS, sample_rng(seed, obj.uid, 0, "points"))


def render_object(obj: CanonicalObject, cfg: RenderConfig, renderers: Renderers) -> list[dict[str, np.ndarray]]:
    """All clips of one object as contract samples (see schemas.store), in clip order."""
    R = cfg.resolution
    K = intrinsics(R, cfg.yfov_deg)
    cam_pose = look_at((0.0, 0.0, cfg.cam_distance))
    view = np.linalg.inv(cam_pose)

    ref_views = reference_views(obj, renderers.rgb, cfg.cam_distance, R)
    points, point_normals = object_points(obj, cfg.seed)
    renderers.layers.upload("object", obj.mesh.vertices, obj.mesh.vertex_normals, obj.mesh.faces)

    from pipeline.render.layers import Draw

    samples = []
    for clip in range(cfg.clips_per_object):
        rng = sample_rng(cfg.seed, obj.uid, clip, "trajectory")
        quats, trans = trajectory.simulate(rng, cfg.frames, cfg.yfov_deg, cfg.cam_distance, cfg.max_rotation_deg)
        poses = trajectory.object_poses(quats, trans)
        background = backgrounds.gradient_background(sample_rng(cfg.seed, obj.uid, clip, "background"), R)
        rgb = np.stack([renderers.rgb.render(p, cam_pose, background) for p in poses])
        normal, depth = renderers.layers.render([[Draw("object", view @ p)] for p in poses], K)
        samples.append({
            "rgb": rgb,
            "mlo_normal": normal[:, None],
            "mlo_depth": depth[:, None].astype(np.float16),
            "layer_present": (depth > 0).any(axis=(1, 2))[:, None],
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
