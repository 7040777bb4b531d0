"""Surface point clouds (the geometry condition P): area-uniform samples with face normals."""

from __future__ import annotations

import numpy as np
import trimesh


def sample_surface_points(mesh: trimesh.Trimesh, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points uniformly by area on ``mesh`` and the unit normals of their faces.

    Returns points [count,3] and normals [count,3], float32, in the mesh's frame.
    Deterministic for a given ``rng`` state.
    """
    area = mesh.area_faces
    cdf = np.cumsum(area / area.sum())
    face = np.minimum(np.searchsorted(cdf, rng.random(count), side="right"), len(area) - 1)
    tri = mesh.vertices[mesh.faces[face]]  # [count,3,3]
    r1, r2 = rng.random((2, count, 1))
    s = np.sqrt(r1)
    pts = (1 - s) * tri[:, 0] + s * (1 - r2) * tri[:, 1] + s * r2 * tri[:, 2]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)
    return pts.astype(np.float32), normals.astype(np.float32)
