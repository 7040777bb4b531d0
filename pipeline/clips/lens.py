"""Lens distortion: undistorting a recorded image to the pinhole camera of its intrinsics.

The model is OpenCV's rational one with 8 coefficients ``(k1, k2, p1, p2, k3, k4, k5, k6)``: a
point with normalised pinhole coordinates (x, y) = (X/Z, Y/Z) is recorded at

    r2 = x^2 + y^2,  radial = (1 + k1 r2 + k2 r2^2 + k3 r2^3) / (1 + k4 r2 + k5 r2^2 + k6 r2^3)
    x' = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    y' = y radial + 2 p2 x y + p1 (r2 + 2 y^2)

pixel (fx x' + cx, fy y' + cy), OpenCV pixel convention (pixel i's centre at i). ARCTIC's
toolkit distorts its egocentric camera's points with exactly this (``common/transforms.py``
``distort_pts3d_all``, ``dist8``). Undistorting needs only this forward model: each pixel of the
undistorted image (same K) looks up where its ray was recorded and samples the recorded image
there (bilinear); a pixel whose ray was recorded outside the image is black and not valid.
"""

from __future__ import annotations

import functools

import numpy as np


def distort_normalised(x: np.ndarray, y: np.ndarray, dist8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x', y') recorded normalised coordinates of pinhole ones (x, y) (module doc)."""
    k1, k2, p1, p2, k3, k4, k5, k6 = (float(c) for c in np.asarray(dist8, np.float64).reshape(8))
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + 2 * p2 * x * y + p1 * (r2 + 2 * y * y))


@functools.lru_cache(maxsize=4)
def _source_map(K: tuple, dist8: tuple, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index [4, H*W] of the 4 recorded pixels, weight [4, H*W], valid [H, W]) of bilinear lookups."""
    fx, cx, fy, cy = K[0], K[2], K[4], K[5]
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    xd, yd = distort_normalised((u - cx) / fx, (v - cy) / fy, np.array(dist8))
    su, sv = fx * xd + cx, fy * yd + cy
    eps = 1e-6  # float error of an identity map must not lose the border pixels
    valid = (su >= -eps) & (su <= width - 1 + eps) & (sv >= -eps) & (sv <= height - 1 + eps)
    su, sv = np.clip(su, 0, width - 1), np.clip(sv, 0, height - 1)
    u0, v0 = np.minimum(np.floor(su), width - 2).astype(np.int64), np.minimum(np.floor(sv), height - 2).astype(np.int64)
    du, dv = (su - u0).reshape(-1), (sv - v0).reshape(-1)
    base = (v0 * width + u0).reshape(-1)
    index = np.stack([base, base + 1, base + width, base + width + 1])
    weight = np.stack([(1 - du) * (1 - dv), du * (1 - dv), (1 - du) * dv, du * dv]).astype(np.float32)
    weight *= valid.reshape(1, -1)
    return index, weight, valid


def undistort(image: np.ndarray, K: np.ndarray, dist8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [H,W,C] undistorted image for the pinhole camera ``K`` [3,3], valid bool [H,W]: the
    pixels whose ray the recorded ``image`` [H,W,C] holds) -- black where not valid."""
    H, W = image.shape[:2]
    if W < 2 or H < 2:
        raise ValueError(f"image {W}x{H} is too small to undistort")
    K = np.asarray(K, np.float64)
    index, weight, valid = _source_map(tuple(K.reshape(-1)), tuple(np.asarray(dist8, np.float64).reshape(8)), W, H)
    flat = np.asarray(image).reshape(H * W, -1).astype(np.float32)
    out = sum(weight[k][:, None] * flat[index[k]] for k in range(4))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(image.shape), valid
