"""The person-following square crop, fixed per clip, and keypoints mapped into it.

The box is ``pipeline.clips.crop.crop_box`` around every confident keypoint of the clip's frames
(and every mask pixel when the dataset has masks), so the whole motion stays inside one fixed
crop; ``pipeline.clips.crop.crop_intrinsics`` adjusts K when the camera is known.
"""

from __future__ import annotations

import numpy as np

from pipeline.clips.crop import crop_box
from pipeline.human.keypoints import N_BODY
from pipeline.human.skeleton import BODY_THRESHOLD

MIN_BODY_JOINTS = 4  # a frame "has a person" with at least this many body joints found


def has_person(kp: np.ndarray) -> bool:
    """kp [67, 3]: enough body joints above OpenPose's render threshold."""
    return int((np.asarray(kp)[:N_BODY, 2] > BODY_THRESHOLD).sum()) >= MIN_BODY_JOINTS


def person_points(keypoints: np.ndarray, masks: list[np.ndarray] | None = None) -> np.ndarray:
    """Source pixels [N, 2] (OpenCV convention) the crop must hold: confident keypoints of all
    frames (keypoints [T, 67, 3]) and the corners of each mask's bounding box."""
    kp = np.asarray(keypoints, np.float64).reshape(-1, 3)
    pts = [kp[kp[:, 2] > BODY_THRESHOLD, :2]]
    for m in masks or []:
        ys, xs = np.nonzero(m)
        if len(xs):
            pts.append(np.array([[xs.min(), ys.min()], [xs.max(), ys.max()]], np.float64))
    return np.concatenate(pts, axis=0)


def person_box(keypoints: np.ndarray, width: int, height: int, margin: float, min_side: int,
               masks: list[np.ndarray] | None = None) -> tuple[int, int, int]:
    """(x0, y0, side) in source pixels: the square around the clip's person (see module doc)."""
    return crop_box(person_points(keypoints, masks), width, height, margin, min_side)


def keypoints_to_crop(keypoints: np.ndarray, box: tuple[int, int, int], resolution: int) -> np.ndarray:
    """float32 [..., 67, 3]: source keypoints (OpenCV pixels) -> the stored R x R image (pixel
    centres at +0.5): ``x' = (x + 0.5 - x0) * R / side``; missing joints -> (-1, -1, 0)."""
    x0, y0, side = box
    kp = np.asarray(keypoints, np.float64)
    s = resolution / side
    out = np.empty(kp.shape, np.float32)
    out[..., 0] = (kp[..., 0] + 0.5 - x0) * s
    out[..., 1] = (kp[..., 1] + 0.5 - y0) * s
    out[..., 2] = kp[..., 2]
    out[kp[..., 2] <= 0] = (-1.0, -1.0, 0.0)
    return out
