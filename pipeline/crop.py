"""Square crops fixed per clip (around the hand-object region, or a person) and the matching intrinsics.

A crop box is integer source pixels ``(x0, y0, side)``: columns [x0, x0+side), rows
[y0, y0+side); it may reach outside the image (padded with black). Resizing maps the box
onto R x R pixels, so with the contract's pixel convention (pixel i's centre at i + 0.5)
``fx' = fx * s``, ``cx' = (cx_cv + 0.5 - x0) * s`` with ``s = R / side`` (``cx_cv`` is
OpenCV's, centre at i).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def crop_box(points_2d: np.ndarray, width: int, height: int, margin: float, min_side: int) -> tuple[int, int, int]:
    """Square box around pixel points [N,2] (x right, y down; any N >= 0): centred on their
    bounding box, side = margin x its larger side (>= ``min_side``). With no points, the
    centred square of side min(width, height)."""
    p = np.asarray(points_2d, np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    # a vertex just in front of the camera projects absurdly far: keep the box bounded
    p = np.clip(p, [-width, -height], [2 * width, 2 * height])
    if len(p) == 0:
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side
    lo, hi = p.min(axis=0), p.max(axis=0)
    side = int(np.ceil(min(max(min_side, margin * (hi - lo).max()), 2 * max(width, height))))
    cx, cy = (lo + hi) / 2
    return int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2)), side


def crop_intrinsics(K_cv: np.ndarray, box: tuple[int, int, int], resolution: int) -> np.ndarray:
    """K [3,3] of the R x R crop, contract convention (pixel centres at +0.5), from OpenCV K."""
    x0, y0, side = box
    s = resolution / side
    K = np.array(K_cv, np.float64)
    return np.array([[K[0, 0] * s, 0, (K[0, 2] + 0.5 - x0) * s],
                     [0, K[1, 1] * s, (K[1, 2] + 0.5 - y0) * s],
                     [0, 0, 1]], np.float64)


def crop_image(image: np.ndarray, box: tuple[int, int, int], resolution: int) -> np.ndarray:
    """uint8 [R,R,3]: the box of ``image`` [H,W,3] (black outside the image), resized (Lanczos)."""
    x0, y0, side = box
    H, W = image.shape[:2]
    out = np.zeros((side, side, 3), np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, W), min(y0 + side, H)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if side == resolution:
        return out
    return np.asarray(Image.fromarray(out).resize((resolution, resolution), Image.Resampling.LANCZOS))
