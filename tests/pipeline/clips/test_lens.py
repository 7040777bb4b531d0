"""Undistortion with OpenCV's rational lens model (ARCTIC's egocentric camera: dist8)."""

import numpy as np

from pipeline.clips.lens import distort_normalised, undistort

K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])


def test_no_distortion_is_the_identity():
    img = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    out, valid = undistort(img, K, np.zeros(8))
    assert valid.all() and np.array_equal(out, img)


def test_a_recorded_dot_lands_where_the_pinhole_camera_sees_its_ray():
    """A ray (x, y) is recorded at K (distort(x, y)); after undistortion it is at K (x, y)."""
    d = np.array([0.3, -0.05, 0.002, -0.003, 0.01, 0.02, 0.0, 0.0])
    x, y = 0.4, -0.3
    xd, yd = distort_normalised(np.array(x), np.array(y), d)
    ud, vd = K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2]
    img = np.zeros((240, 320, 3), np.uint8)
    iu, iv = int(round(float(ud))), int(round(float(vd)))
    img[iv - 1:iv + 2, iu - 1:iu + 2] = 255
    out, valid = undistort(img, K, d)
    ys, xs = np.nonzero(out[..., 0] > 80)
    w = out[ys, xs, 0].astype(float)
    u, v = (xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()
    # the dot's centre (drawn at the rounded pixel: within a pixel of the ray's pinhole point)
    assert abs(u - (K[0, 2] + K[0, 0] * x)) < 1.0 and abs(v - (K[1, 2] + K[1, 1] * y)) < 1.0
    assert np.hypot(float(ud) - (K[0, 2] + K[0, 0] * x), float(vd) - (K[1, 2] + K[1, 1] * y)) > 5   # a real shift
    # pincushion (k1 > 0): the corners' rays were recorded outside the picture
    assert valid[120, 160] and not valid[0, 0] and not valid[-1, -1]
