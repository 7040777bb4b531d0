"""Smooth random object trajectories that keep the object in view.

Quaternions are (x, y, z, w), unit, object-to-world. The camera sits at (0, 0, d) looking
down -z (OpenGL); the object (canonical frame, inside a sphere of radius 0.5 about its
origin) moves within the region where that whole sphere stays inside the view frustum.
Rotation integrates a smooth angular velocity (a few low-frequency sinusoids), so
orientation and angular velocity are continuous; translation is a sum of low-frequency
sinusoids per axis. Everything is drawn from the ``rng`` given (deterministic per seed).
"""

from __future__ import annotations

import numpy as np

from schemas.config import OBJECT_RADIUS, min_cam_distance  # noqa: F401  (re-exported)

VIEW_MARGIN = 0.85  # use at most this fraction of the lateral room


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (x,y,z,w) quaternions [...,4]."""
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], axis=-1)


def quat_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """(x,y,z,w) quaternion [...,4] from axis-angle vectors [...,3] (radians)."""
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    half = angle / 2
    scale = np.where(angle > 1e-12, np.sin(half) / np.maximum(angle, 1e-12), 0.5)
    return np.concatenate([rotvec * scale, np.cos(half)], axis=-1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices [...,3,3] from (x,y,z,w) quaternions [...,4]."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=-2)


def random_quaternion(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed rotation (Shoemake), (x,y,z,w)."""
    u1, u2, u3 = rng.random(3)
    a, b = np.sqrt(1 - u1), np.sqrt(u1)
    return np.array([a * np.sin(2 * np.pi * u2), a * np.cos(2 * np.pi * u2),
                     b * np.sin(2 * np.pi * u3), b * np.cos(2 * np.pi * u3)])


def _smooth_signal(rng: np.random.Generator, frames: int, dims: int, n_waves: int = 3) -> np.ndarray:
    """[frames, dims] sum of random low-frequency sinusoids, scaled into [-1, 1]."""
    t = np.linspace(0.0, 1.0, frames)[:, None, None]
    freq = rng.uniform(0.15, 1.0, size=(1, n_waves, dims))       # cycles per clip
    phase = rng.uniform(0, 2 * np.pi, size=(1, n_waves, dims))
    amp = rng.uniform(0.3, 1.0, size=(1, n_waves, dims))
    s = (amp * np.sin(2 * np.pi * freq * t + phase)).sum(axis=1)
    return s / amp.sum(axis=1)


def translation_bounds(yfov_deg: float, cam_distance: float) -> tuple[float, float]:
    """(lateral, depth) half-ranges for the object centre that keep the sphere in view."""
    half = np.radians(yfov_deg) / 2
    # never closer than the distance at which the whole sphere still fits the view
    depth = max(0.0, min(0.3, 0.15 * cam_distance, cam_distance - OBJECT_RADIUS / np.sin(half)))
    nearest = cam_distance - depth
    lateral = (nearest * np.tan(half) - OBJECT_RADIUS / np.cos(half)) * VIEW_MARGIN
    return max(0.0, float(lateral)), float(depth)


def simulate(rng: np.random.Generator, frames: int, yfov_deg: float, cam_distance: float,
             max_rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """A random smooth trajectory: quaternions [T,4] and translations [T,3], float64."""
    q0 = random_quaternion(rng)
    total = np.radians(max_rotation_deg) * rng.uniform(0.3, 1.0)
    omega = _smooth_signal(rng, frames, 3) + rng.normal(size=3) * 0.5  # drift + wobble
    steps = omega[:-1]
    norms = np.linalg.norm(steps, axis=1).sum()
    steps = steps * (total / norms if norms > 1e-9 else 0.0)
    quats = np.empty((frames, 4))
    quats[0] = q0
    for t in range(1, frames):
        q = quat_multiply(quat_from_rotvec(steps[t - 1]), quats[t - 1])
        quats[t] = q / np.linalg.norm(q)
    lateral, depth = translation_bounds(yfov_deg, cam_distance)
    trans = _smooth_signal(rng, frames, 3) * np.array([lateral, lateral, depth])
    return quats, trans


def object_poses(quats: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Object-to-world 4x4 poses [T,4,4] from quaternions [T,4] and translations [T,3]."""
    poses = np.tile(np.eye(4), (len(quats), 1, 1))
    poses[:, :3, :3] = quat_to_matrix(quats)
    poses[:, :3, 3] = trans
    return poses
