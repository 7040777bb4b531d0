"""Square crops fixed per clip (around the hand-object region, or a person), the matching
intrinsics, and which crop pixels come from the camera image.

A crop box is integer source pixels ``(x0, y0, side)``: columns [x0, x0+side), rows
[y0, y0+side). ``crop_box`` keeps it inside the image whenever it fits (shift before pad);
only a box larger than the image along an axis reaches outside it, and then it covers the
whole image along that axis (the least padding), as near its content's centre as that allows.
Pixels outside the image are black, and ``crop_valid`` says which crop pixels are not.

Resizing maps the box onto R x R pixels, so with the contract's pixel convention (pixel i's
centre at i + 0.5) ``fx' = fx * s``, ``cx' = (cx_cv + 0.5 - x0) * s`` with ``s = R / side``
(``cx_cv`` is OpenCV's, centre at i).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def fit_box(x0: float, y0: float, side: int, width: int, height: int) -> tuple[int, int, int]:
    """The box of ``side`` nearest to top-left (x0, y0) that stays inside a width x height image
    along each axis where it fits (side <= width / height); along an axis where it does not,
    the one nearest to (x0, y0) that covers the whole image along that axis."""
    out = []
    for start, extent in ((x0, width), (y0, height)):
        lo, hi = sorted((0, extent - side))          # fits: [0, extent - side]; else [extent - side, 0]
        out.append(int(np.clip(np.floor(start), lo, hi)))
    return out[0], out[1], int(side)


def crop_box(points_2d: np.ndarray, width: int, height: int, margin: float, min_side: int) -> tuple[int, int, int]:
    """Square box around pixel points [N,2] (x right, y down; pixel i's centre at i + 0.5; any
    N >= 0) for a width x height image: the points are clipped to the image first (what lies
    outside is not in the picture, so the crop need not hold it), the box is centred on their
    bounding box with side = margin x its larger side (>= ``min_side``), then placed by
    ``fit_box``. With no points, the centred square of side min(width, height)."""
    p = np.asarray(points_2d, np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    p = np.clip(p, 0.0, [width, height])
    if len(p) == 0:
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side
    lo, hi = p.min(axis=0), p.max(axis=0)
    side = int(np.ceil(min(max(min_side, margin * (hi - lo).max()), 2 * max(width, height))))
    cx, cy = (lo + hi) / 2
    return fit_box(cx - side / 2, cy - side / 2, side, width, height)


def crop_intrinsics(K_cv: np.ndarray, box: tuple[int, int, int], resolution: int) -> np.ndarray:
    """K [3,3] of the R x R crop, contract convention (pixel centres at +0.5), from OpenCV K."""
    x0, y0, side = box
    s = resolution / side
    K = np.array(K_cv, np.float64)
    return np.array([[K[0, 0] * s, 0, (K[0, 2] + 0.5 - x0) * s],
                     [0, K[1, 1] * s, (K[1, 2] + 0.5 - y0) * s],
                     [0, 0, 1]], np.float64)


def _cut(image: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """The box of ``image`` [H,W,...] at source resolution, zero outside the image."""
    x0, y0, side = box
    H, W = image.shape[:2]
    out = np.zeros((side, side) + image.shape[2:], image.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, W), min(y0 + side, H)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def crop_image(image: np.ndarray, box: tuple[int, int, int], resolution: int) -> np.ndarray:
    """uint8 [R,R,3]: the box of ``image`` [H,W,3] (black outside the image), resized (Lanczos)."""
    out = _cut(image, box)
    if box[2] == resolution:
        return out
    return np.asarray(Image.fromarray(out).resize((resolution, resolution), Image.Resampling.LANCZOS))


def crop_valid(box: tuple[int, int, int], resolution: int, width: int, height: int,
               image_valid: np.ndarray | None = None) -> np.ndarray:
    """bool [R,R]: the crop pixels that come from the camera image. A crop pixel is valid when
    every source pixel under its footprint (``side / R`` source pixels square: the box filter)
    is inside the width x height image and, when given, True in ``image_valid`` [H,W] bool
    (pixels of the image the camera saw: e.g. a dataset's own crop put back in its frame, or
    the undistorted view of a lens). Conservative: a pixel half over padding is invalid."""
    src = np.ones((height, width), np.float32) if image_valid is None else np.asarray(image_valid, np.float32)
    if src.shape != (height, width):
        raise ValueError(f"image_valid is {src.shape}, the image {height}x{width}")
    cut = _cut(src, box)
    if box[2] != resolution:
        cut = np.asarray(Image.fromarray(cut, mode="F").resize((resolution, resolution), Image.Resampling.BOX))
    return cut >= 1.0 - 1e-4


def padding_fraction(valid: np.ndarray) -> np.ndarray:
    """float [T]: the fraction of each frame's crop pixels that are not from the camera image
    (``valid`` [T,R,R] bool)."""
    v = np.asarray(valid, bool)
    return 1.0 - v.reshape(len(v), -1).mean(axis=1)


def inside_fraction(points_2d: np.ndarray, width: int, height: int, image_valid: np.ndarray | None = None,
                    in_front: np.ndarray | None = None) -> float:
    """Fraction of the points [N,2] (pixel centres at +0.5) that fall inside the width x height
    image (and on a True pixel of ``image_valid`` [H,W] when given), counting only points with
    ``in_front`` [N] True (in front of the camera) as possibly inside; 0 for N = 0."""
    p = np.asarray(points_2d, np.float64).reshape(-1, 2)
    if len(p) == 0:
        return 0.0
    ok = np.isfinite(p).all(axis=1) & (p[:, 0] >= 0) & (p[:, 0] < width) & (p[:, 1] >= 0) & (p[:, 1] < height)
    if in_front is not None:
        ok &= np.asarray(in_front, bool)
    if image_valid is not None and ok.any():
        xi, yi = np.floor(p[ok]).astype(int).T
        ok[np.flatnonzero(ok)] = np.asarray(image_valid, bool)[yi, xi]
    return float(ok.mean())


class TooMuchPadding(Exception):
    """A window whose crop is more than the allowed fraction padding in some frame (``--max-padding``):
    the job writes no sample for it and counts it in the run summary. ``reason`` is the same for
    every window refused at one threshold; ``fraction`` is this window's worst frame."""

    def __init__(self, fraction: float, limit: float):
        self.fraction, self.limit = float(fraction), float(limit)
        self.reason = f"more than {limit:.0%} of the crop is padding outside the camera image (--max-padding)"
        super().__init__(f"{self.reason}: {self.fraction:.1%}")


def check_padding(valid: np.ndarray, max_padding: float) -> np.ndarray:
    """float [T] padding fractions of ``valid`` [T,R,R]; raises ``TooMuchPadding`` when a frame's is
    over ``max_padding``."""
    pad = padding_fraction(valid)
    if len(pad) and pad.max() > max_padding + 1e-9:
        raise TooMuchPadding(pad.max(), max_padding)
    return pad
