"""The skeleton map S: OpenPose-style coloured limbs and hand bones on black (pure numpy / PIL).

One drawing for every keypoint source (OpenPose files, MediaPipe): ``draw_skeleton`` takes the
store's 67 keypoints (``schemas.store.HUMAN_KEYPOINT_NAMES``). Limb pairs and colours are
OpenPose's renderer's (include/openpose/pose/poseParametersRender.hpp,
POSE_BODY_25_PAIRS_RENDER_GPU / POSE_BODY_25_COLORS_RENDER_GPU; hand/handParameters.hpp,
HAND_PAIRS_RENDER_GPU / HAND_COLORS_RENDER_GPU): a limb takes the colour of its second
keypoint, as OpenPose's CPU renderer does, and each keypoint is a filled disc of its own
colour. Joints below OpenPose's default render thresholds (body 0.05, hands 0.2) are not drawn.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from pipeline.human.keypoints import LEFT_HAND, N_BODY, RIGHT_HAND

BODY_PAIRS = ((1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11), (8, 12),
              (12, 13), (13, 14), (1, 0), (0, 15), (15, 17), (0, 16), (16, 18), (14, 19), (19, 20), (14, 21),
              (11, 22), (22, 23), (11, 24))
BODY_COLORS = np.array([
    (255, 0, 85), (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (255, 0, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (255, 0, 170), (170, 0, 255), (255, 0, 255), (85, 0, 255), (0, 0, 255), (0, 0, 255),
    (0, 0, 255), (0, 255, 255), (0, 255, 255), (0, 255, 255)], np.uint8)
HAND_PAIRS = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
HAND_COLORS = np.array([
    (100, 100, 100), (100, 0, 0), (150, 0, 0), (200, 0, 0), (255, 0, 0), (100, 100, 0), (150, 150, 0),
    (200, 200, 0), (255, 255, 0), (0, 100, 50), (0, 150, 75), (0, 200, 100), (0, 255, 125), (0, 50, 100),
    (0, 75, 150), (0, 100, 200), (0, 125, 255), (100, 0, 100), (150, 0, 150), (200, 0, 200), (255, 0, 255)],
    np.uint8)
BODY_THRESHOLD = 0.05  # OpenPose --render_threshold default
HAND_THRESHOLD = 0.2   # OpenPose --hand_render_threshold default


def line_width(resolution: int) -> int:
    """Limb thickness in pixels: 4 at 512 px (the width ControlNet-style pose maps use), >= 1."""
    return max(1, round(resolution / 128))


def _draw_part(draw: ImageDraw.ImageDraw, kp: np.ndarray, pairs, colors, threshold: float,
               width: int) -> None:
    ok = kp[:, 2] > threshold
    xy = kp[:, :2] - 0.5  # store pixels (centres at +0.5) -> PIL (centres at integers)
    for a, b in pairs:
        if ok[a] and ok[b]:
            draw.line([tuple(xy[a]), tuple(xy[b])], fill=tuple(int(c) for c in colors[b]), width=width)
    r = max(0.5, width / 2)
    for j in np.flatnonzero(ok):
        x, y = xy[j]
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in colors[j]))


def draw_skeleton(keypoints: np.ndarray, resolution: int, width: int | None = None) -> np.ndarray:
    """uint8 [R, R, 3] skeleton map from keypoints [67, 3] (x, y in the R x R image with pixel
    centres at +0.5, confidence). Body first, then hands (thinner: half the limb width) on top."""
    kp = np.asarray(keypoints, np.float64)
    w = line_width(resolution) if width is None else width
    img = Image.new("RGB", (resolution, resolution), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    _draw_part(draw, kp[:N_BODY], BODY_PAIRS, BODY_COLORS, BODY_THRESHOLD, w)
    for hand in (LEFT_HAND, RIGHT_HAND):
        _draw_part(draw, kp[hand], HAND_PAIRS, HAND_COLORS, HAND_THRESHOLD, max(1, w // 2))
    return np.asarray(img)


def draw_clip(keypoints: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [T, R, R, 3] for keypoints [T, 67, 3]."""
    return np.stack([draw_skeleton(k, resolution) for k in keypoints])
