"""An object's appearance and geometry conditions, shared by every job: the six reference
views O_I (canonical pose, on white) and 2048 surface points P with normals.

Reference framing: one camera distance for all six views, chosen per object so that the
body's widest projection (over the six views, perspective included) spans ``REF_FILL`` of
the image; the body is the part of the canonical mesh inside the radius-0.5 sphere (all of
it, unless "bulk" normalisation left stray specks outside).
"""

from __future__ import annotations

import numpy as np

from pipeline.assets.mesh_io import CanonicalObject
from pipeline.objects.points import sample_surface_points
from pipeline.render.cameras import REF_VIEW_DIRECTIONS, look_at, reference_view_poses
from pipeline.seeding import sample_rng
from schemas import N_POINTS, REF_VIEW_NAMES

WHITE = 255
REF_FILL = 0.9  # the body's widest projection spans this fraction of the reference image
MIN_REF_DISTANCE = 0.3  # never closer than this (near plane 0.05, canonical units)


def ref_distance(vertices: np.ndarray, yfov_deg: float, fill: float = REF_FILL, names=REF_VIEW_NAMES) -> float:
    """Camera distance (canonical units) at which ``vertices`` float [N,3] (canonical frame)
    fill ``fill`` of a square view in every one of the six reference directions: for a
    camera at distance d looking at the origin, a point at depth z toward the camera and
    lateral offset (x, y) projects inside when max(|x|, |y|) / (d - z) <= fill * tan(yfov/2)."""
    v = np.asarray(vertices, np.float64)
    body = v[np.linalg.norm(v, axis=1) <= 0.5 + 1e-9]
    body = body if len(body) else v
    t = fill * np.tan(np.radians(yfov_deg) / 2)
    need = MIN_REF_DISTANCE
    for name in names:
        pose = look_at(np.asarray(REF_VIEW_DIRECTIONS[name][0], np.float64), up=REF_VIEW_DIRECTIONS[name][1])
        local = body @ pose[:3, :3]  # camera axes: x right, y up, z toward the camera
        need = max(need, float((local[:, 2] + np.abs(local[:, :2]).max(axis=1) / t).max()))
    return need


def reference_views_with_coverage(obj: CanonicalObject, rgb_renderer, resolution: int,
                                  fill: float = REF_FILL) -> tuple[np.ndarray, np.ndarray]:
    """(views uint8 [6,R,R,3] on white, coverage float32 [6]: object pixel fraction per view,
    i.e. the mean MSAA alpha). Leaves ``obj`` set as the RGB renderer's object."""
    rgb_renderer.set_object(obj.scene, obj.to_canonical)
    distance = ref_distance(obj.mesh.vertices, rgb_renderer.yfov_deg, fill)
    white = np.full((resolution, resolution, 3), WHITE, np.uint8)
    poses = reference_view_poses(distance, REF_VIEW_NAMES)
    views = rgb_renderer.render_many(np.broadcast_to(np.eye(4), poses.shape), poses, white)  # one pass (atlas)
    coverage = rgb_renderer.last_alpha.astype(np.float32).mean(axis=(1, 2)) / 255.0
    return views, coverage.astype(np.float32)


def reference_views(obj: CanonicalObject, rgb_renderer, resolution: int) -> np.ndarray:
    """uint8 [6,R,R,3]: the object in its canonical pose seen from REF_VIEW_NAMES on white,
    framed as in the module doc (one camera distance per object, the same for all six views).
    Leaves ``obj`` set as the RGB renderer's object. Shared by Objaverse and HOI."""
    return reference_views_with_coverage(obj, rgb_renderer, resolution)[0]


def object_points(obj: CanonicalObject, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(points, normals) float32 [2048,3] each, canonical frame, seeded by (seed, uid)."""
    return sample_surface_points(obj.mesh, N_POINTS, sample_rng(seed, obj.uid, 0, "points"))
