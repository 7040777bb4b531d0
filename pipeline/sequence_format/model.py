"""The in-memory form of one sequence folder (see the package docstring for the files).

All arrays are in the sequence's world frame (right-handed, metres) unless a name says
otherwise; F = ``n_frames``. Rotations are proper (det +1) and orthonormal; object and part
poses may also carry a positive uniform scale (the mesh's units -> metres, e.g. 0.01 for cm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_NAME = "manivideo-sequence"
FORMAT_VERSION = 1
SIDES = ("left", "right")                     # order of joints_3d.npy's side axis (= schemas.HANDS)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])    # cam_to_world(OpenCV) = cam_to_world(OpenGL) @ GL_TO_CV


@dataclass
class Camera:
    """One camera. ``K`` [3,3] float64 (OpenCV pixels: pixel i's centre at coordinate i),
    ``cam_to_world`` [F,4,4] float64 with **OpenCV** axes (x right, y down, z forward; an
    "opengl" cameras.json is converted on reading), ``frames``: the image folder or video file."""

    name: str
    K: np.ndarray
    width: int
    height: int
    cam_to_world: np.ndarray
    frames: Path
    background: Path | None = None

    def world_to_cam(self, t: int) -> np.ndarray:
        """[4,4] world -> this camera's OpenCV frame at frame ``t`` (exactly I for an identity pose)."""
        P = self.cam_to_world[t]
        if np.array_equal(P, np.eye(4)):
            return np.eye(4)
        out = np.eye(4)
        out[:3, :3] = P[:3, :3].T
        out[:3, 3] = -P[:3, :3].T @ P[:3, 3]
        return out


@dataclass
class HandSequence:
    """One hand: ``pose`` [F,48] float64 axis-angle as stored (see ``Sequence.flat_hand_mean``),
    ``betas`` [10], ``trans`` [F,3] metres (MANO ``transl``: the hand model's own translation, not
    a wrist position), ``valid`` [F] bool. Frames with ``valid`` False hold zeros."""

    pose: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    valid: np.ndarray


@dataclass
class PartSequence:
    """One rigid part of the object layer: ``vertices`` [V,3] m (part frame), ``faces`` [Fc,3]
    int64, ``poses`` [F,4,4] part -> world."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    poses: np.ndarray


@dataclass
class Sequence:
    """A validated sequence folder."""

    folder: Path
    name: str
    n_frames: int
    fps: float | None
    cameras: dict[str, Camera]
    hands: dict[str, HandSequence]         # side -> hand; a side absent = not in the data
    flat_hand_mean: bool                   # True: pose[3:] absolute (flat hand = 0; our convention);
    #                                        False: relative to the hand model's hands_mean (smplx default)
    fix_left_shapedirs: bool               # the left hand was fitted with MANO_LEFT shapedirs x negated
    object_mesh: Path | None               # mesh file (metres, its own frame), None = no object
    object_name: str | None                # the object's id (seeds its surface points)
    object_poses: np.ndarray               # [F,4,4] object -> world (identity where invalid / no object)
    object_valid: np.ndarray               # [F] bool
    object_parts: list[PartSequence] | None = None
    joints_3d: np.ndarray | None = None    # [F,2,21,3] (left, right) world metres, NaN = no label
    source: dict = field(default_factory=dict)

    def hand_valid(self) -> np.ndarray:
        """[F] bool: some hand is annotated in the frame."""
        v = np.zeros(self.n_frames, bool)
        for h in self.hands.values():
            v |= h.valid
        return v


def absolute_pose(pose: np.ndarray, flat_hand_mean: bool, hands_mean: np.ndarray) -> np.ndarray:
    """Pose [...,48] in the project's absolute convention (``hands_mean`` included; flat hand = 0)."""
    pose = np.array(pose, np.float64)
    if not flat_hand_mean:
        pose[..., 3:] += np.asarray(hands_mean, np.float64)
    return pose
