"""An object's appearance and geometry conditions, shared by every job: the six reference
views O_I (canonical pose, on white) and 2048 surface points P with normals."""

from __future__ import annotations

import numpy as np

from pipeline.mesh_io import CanonicalObject
from pipeline.points import sample_surface_points
from pipeline.render.cameras import reference_view_poses
from pipeline.seeding import sample_rng
from schemas import N_POINTS, REF_VIEW_NAMES

WHITE = 255

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

