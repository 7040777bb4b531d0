"""HOT3D cameras: the headset's fisheye model, its pinhole version, the undistorting warp and
the upright turn -- written from the official code (facebookresearch/hand_tracking_toolkit @
ffb20d0: ``camera.py``, ``camera_distortion.py``, ``dataset.py warp_image``; facebookresearch/hot3d
@ e814021: ``hot3d/clips/clip_util.py``, ``hot3d/clips/vis_clips.py``).

Conventions (all OpenCV: x right, y down, z forward; window pixel i's centre at i, ``camera.py``
L71-91):
  * ``FISHEYE624`` (``camera.py`` L497-518, ``OVR624CameraModel``): window = f * distort(p) + c
    with p = xy / |xy| * atan2(|xy|, z) (``ArctanProjection.project``, ``camera_distortion.py``
    L173-183) and ``OVR624Distortion.evaluate`` (L369-415: 6 radial terms on |p|^2 clipped to
    pi^2, 2 tangential, 4 thin-prism). Calibration ``projection_params``: Aria's 15 numbers are
    f, cx, cy + 12 coefficients (one focal, the "Aria data hack", ``camera.py`` L445-449),
    otherwise fx, fy, cx, cy + 12 (L450-452);
  * the pinhole version of a camera keeps its size, focal and centre (``clip_util.py``
    ``convert_to_pinhole_camera`` L284-305, ``focal_scale`` 1) and its pose;
  * undistorting = for every pinhole pixel, its ray projected by the fisheye model and the
    image sampled there bilinearly, outside = black (``dataset.py warp_image`` L160-203: cv2.remap,
    INTER_LINEAR, constant border; here the same bilinear weights, neighbours outside count 0);
  * upright: the toolkit shows every stream turned by ``np.rot90(image, k=3)`` (``vis_clips.py``
    L184-185), i.e. 90 degrees clockwise. For an image of height ``H`` that is the camera turned
    about its z axis: x' = -y, y' = x (``R_UPRIGHT``), with fx' = fy, fy' = fx, cx' = H - 1 - cy,
    cy' = cx and the image W x H -> H x W.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

MODEL = "CameraModelType.FISHEYE624"
R_UPRIGHT = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])   # sensor camera -> upright camera


@dataclass(frozen=True)
class Fisheye624:
    """One FISHEYE624 camera: ``size`` (width, height), ``f`` (fx, fy), ``c`` (cx, cy), ``coeffs``
    (k1..k6, p1, p2, s1..s4)."""

    size: tuple[int, int]
    f: tuple[float, float]
    c: tuple[float, float]
    coeffs: tuple[float, ...]

    @classmethod
    def from_calibration(cls, calib: dict) -> Fisheye624:
        """From a ``cameras.json`` stream's ``calibration`` (``camera.py from_json`` L431-465);
        ValueError for another projection model or a wrong parameter count."""
        model, p = calib["projection_model_type"], [float(x) for x in calib["projection_params"]]
        if model != MODEL:
            raise ValueError(f"projection model {model} (only {MODEL} is read)")
        if len(p) == 15:                       # Aria: one focal length
            f, c, k = (p[0], p[0]), (p[1], p[2]), p[3:]
        elif len(p) == 16:
            f, c, k = (p[0], p[1]), (p[2], p[3]), p[4:]
        else:
            raise ValueError(f"{MODEL} needs 15 or 16 projection_params, got {len(p)}")
        return cls((int(calib["image_width"]), int(calib["image_height"])), f, c, tuple(k))

    def distort(self, p: np.ndarray) -> np.ndarray:
        """``OVR624Distortion.evaluate``: [...,2] -> [...,2]."""
        k1, k2, k3, k4, k5, k6, p1, p2, s1, s2, s3, s4 = self.coeffs
        r2 = np.clip((p * p).sum(axis=-1, keepdims=True), -(np.pi ** 2), np.pi ** 2)
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * (k4 + r2 * (k5 + r2 * k6)))))
        uv = p * radial
        x, y = uv[..., 0].copy(), uv[..., 1].copy()
        x2, y2, xy = uv[..., 0] ** 2, uv[..., 1] ** 2, uv[..., 0] * uv[..., 1]
        r2 = x2 + y2
        x += 2 * p2 * xy + p1 * (r2 + 2 * x2)
        y += 2 * p1 * xy + p2 * (r2 + 2 * y2)
        r4 = r2 * r2
        x += s1 * r2 + s2 * r4
        y += s3 * r2 + s4 * r4
        return np.stack([x, y], axis=-1)

    def project(self, v: np.ndarray) -> np.ndarray:
        """Eye-frame points [...,3] -> window pixels [...,2] (``eye_to_window``)."""
        v = np.asarray(v, np.float64)
        r = np.sqrt(v[..., 0] ** 2 + v[..., 1] ** 2)
        s = np.arctan2(r, v[..., 2]) / np.maximum(r, 2.0 ** -128)
        q = self.distort(v[..., :2] * s[..., None])
        return q * np.asarray(self.f) + np.asarray(self.c)

    def unproject(self, w: np.ndarray, iterations: int = 30) -> np.ndarray:
        """Window pixels [...,2] -> unit eye rays [...,3]: the distortion inverted by Newton steps
        (numerical Jacobian), then ``ArctanProjection.unproject``; NaN where the distortion has no
        inverse (past its fold: outside the lens's field). For writing fisheye images (the demo)
        and checks; the adapter only projects."""
        with np.errstate(all="ignore"):
            return self._unproject(w, iterations)

    def _unproject(self, w: np.ndarray, iterations: int) -> np.ndarray:
        q = (np.asarray(w, np.float64) - np.asarray(self.c)) / np.asarray(self.f)
        p, h = q.copy(), 1e-7
        for _ in range(iterations):
            e = self.distort(p) - q
            jx = (self.distort(p + [h, 0.0]) - self.distort(p)) / h
            jy = (self.distort(p + [0.0, h]) - self.distort(p)) / h
            det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
            p = p - np.stack([jy[..., 1] * e[..., 0] - jy[..., 0] * e[..., 1],
                              -jx[..., 1] * e[..., 0] + jx[..., 0] * e[..., 1]], axis=-1) / det[..., None]
        r = np.linalg.norm(p, axis=-1)
        s = np.sinc(r / np.pi)
        ray = np.stack([p[..., 0] * s, p[..., 1] * s, np.cos(r)], axis=-1)
        bad = ~(np.linalg.norm(self.distort(p) - q, axis=-1) < 1e-9) | (r > np.pi)
        ray[bad] = np.nan
        return ray


def pinhole_K(cam: Fisheye624) -> np.ndarray:
    """[3,3] K of the camera's pinhole version (``convert_to_pinhole_camera``, focal_scale 1)."""
    return np.array([[cam.f[0], 0.0, cam.c[0]], [0.0, cam.f[1], cam.c[1]], [0.0, 0.0, 1.0]])


def upright_K(K: np.ndarray, height: int) -> np.ndarray:
    """K of the image turned 90 degrees clockwise (``np.rot90(k=3)``) from K of an image of ``height`` rows."""
    return np.array([[K[1, 1], 0.0, height - 1 - K[1, 2]], [0.0, K[0, 0], K[0, 2]], [0.0, 0.0, 1.0]])


@functools.lru_cache(maxsize=2)
def _warp_table(cam: Fisheye624, K: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(indices [4,N] into the flat source image, weights [4,N] float32) of the bilinear samples
    of every upright pinhole pixel (row-major); a neighbour outside the source weighs 0."""
    K = np.asarray(K, np.float64).reshape(3, 3)
    W, H = cam.size
    u_up, v_up = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64))  # upright pixels
    u, v = v_up, H - 1 - u_up                                         # the same pixel before the turn
    ray = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    src = cam.project(ray).reshape(-1, 2)
    x0, y0 = np.floor(src[:, 0]), np.floor(src[:, 1])
    fx, fy = src[:, 0] - x0, src[:, 1] - y0
    idx, wts = [], []
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        x, y = x0 + dx, y0 + dy
        inside = (x >= 0) & (x < W) & (y >= 0) & (y < H) & np.isfinite(w)
        idx.append(np.where(inside, y * W + x, 0).astype(np.int32))
        wts.append(np.where(inside, w, 0.0).astype(np.float32))
    return np.stack(idx), np.stack(wts)


def undistort_upright(image: np.ndarray, cam: Fisheye624, K: np.ndarray) -> np.ndarray:
    """The fisheye ``image`` uint8 [h,w] or [h,w,C] of ``cam`` warped to the pinhole camera ``K``
    [3,3] (same pose, same size) and turned upright: uint8 [w,h(,C)], whose K is
    ``upright_K(K, h)``. Bilinear, black outside the source image (``warp_image``'s remap)."""
    W, H = cam.size
    img = np.asarray(image)
    if img.shape[:2] != (H, W):
        raise ValueError(f"image is {img.shape[1]}x{img.shape[0]}, the calibration says {W}x{H}")
    idx, wts = _warp_table(cam, tuple(np.asarray(K, np.float64).ravel()))
    flat = img.reshape(H * W, -1).astype(np.float32)
    out = sum(flat[idx[k]] * wts[k][:, None] for k in range(4))
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(W, H, -1)
    return out[..., 0] if img.ndim == 2 else out
