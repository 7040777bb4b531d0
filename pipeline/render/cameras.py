"""Camera maths: pinhole intrinsics, OpenGL projection, look-at poses, projection of points.

Conventions: camera frame is OpenGL (x right, y up, looking down -z); image pixel (u, v)
has u to the right, v down, pixel i's centre at i + 0.5; ``K = [[fx,0,cx],[0,fy,cy],[0,0,1]]``.
Poses are 4x4 float64 camera-to-world unless named otherwise.
"""

from __future__ import annotations

import numpy as np


def intrinsics(resolution: int, yfov_deg: float) -> np.ndarray:
    """Square-image K [3,3] float64 with the principal point at the centre."""
    f = 0.5 * resolution / np.tan(np.radians(yfov_deg) / 2)
    c = resolution / 2.0
    return np.array([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=np.float64)


def projection_from_K(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """OpenGL clip-from-camera matrix [4,4] matching K (image v down, GL rows bottom-up)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    return np.array([
        [2 * fx / width, 0, 1 - 2 * cx / width, 0],
        [0, 2 * fy / height, 2 * cy / height - 1, 0],
        [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, -1, 0],
    ], dtype=np.float64)


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera-to-world pose [4,4] of a camera at ``eye`` looking at ``target`` (OpenGL axes)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-8:
        raise ValueError("look_at: up is parallel to the viewing direction")
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, back, eye
    return pose


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates [...,2] of camera-frame points [...,3] (OpenGL camera, z < 0 in front)."""
    p = np.asarray(points_cam, dtype=np.float64)
    z = -p[..., 2]
    u = K[0, 0] * p[..., 0] / z + K[0, 2]
    v = -K[1, 1] * p[..., 1] / z + K[1, 2]
    return np.stack([u, v], axis=-1)


# The six canonical reference views: camera position direction and up vector, in the
# object's canonical frame (glTF convention: +y up, the object's front faces +z).
REF_VIEW_DIRECTIONS = {
    "front": ((0, 0, 1), (0, 1, 0)),
    "back": ((0, 0, -1), (0, 1, 0)),
    "left": ((-1, 0, 0), (0, 1, 0)),
    "right": ((1, 0, 0), (0, 1, 0)),
    "top": ((0, 1, 0), (0, 0, -1)),
    "bottom": ((0, -1, 0), (0, 0, 1)),
}


def reference_view_poses(distance: float, names) -> np.ndarray:
    """Camera-to-object poses [len(names),4,4] on a sphere of radius ``distance``."""
    return np.stack([look_at(np.array(REF_VIEW_DIRECTIONS[n][0]) * distance, up=REF_VIEW_DIRECTIONS[n][1])
                     for n in names])
