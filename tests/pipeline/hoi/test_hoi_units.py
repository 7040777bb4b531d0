"""Pure functions of the HOI path: windows, crops and their intrinsics, masked median."""

import numpy as np
import pytest

from pipeline.clips.crop import crop_box, crop_image, crop_intrinsics
from pipeline.clips.windows import frame_windows
from pipeline.hoi.background import masked_median as _masked_median


def test_frame_windows():
    assert frame_windows(12, 4, 1) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert frame_windows(12, 3, 2) == [[0, 2, 4], [6, 8, 10]]
    assert frame_windows(5, 8, 1) == []


@pytest.mark.parametrize("box", [(100, 50, 200), (-30, -20, 120), (600, 400, 100)])
def test_crop_maps_pixels_where_K_says(box):
    H, W, R = 480, 640, 100
    K_cv = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    x0, y0, side = box
    # a bright 4x4-pixel block whose centre is a 3D point's projection
    X = np.array([0.05, -0.03, 0.8])
    u_cv = K_cv[0, 0] * X[0] / X[2] + K_cv[0, 2]
    v_cv = K_cv[1, 1] * X[1] / X[2] + K_cv[1, 2]
    img = np.zeros((H, W, 3), np.uint8)
    cu, cv = int(round(u_cv)), int(round(v_cv))
    img[cv - 2:cv + 2, cu - 2:cu + 2] = 255
    K = crop_intrinsics(K_cv, (cu - 60, cv - 60, 200), R)
    out = crop_image(img, (cu - 60, cv - 60, 200), R)
    ys, xs = np.nonzero(out[..., 0] > 60)
    u, v = K[0, 0] * X[0] / X[2] + K[0, 2], K[1, 1] * X[1] / X[2] + K[1, 2]
    assert abs(xs.mean() + 0.5 - u) < 0.6 and abs(ys.mean() + 0.5 - v) < 0.6
    # boxes reaching outside the image are padded with black, never fail
    assert crop_image(img, box, R).shape == (R, R, 3)


def test_crop_box_is_square_and_covers_points():
    pts = np.array([[100.0, 200.0], [180.0, 230.0]])
    x0, y0, side = crop_box(pts, 640, 480, 1.25, 16)
    assert side == 100 and x0 <= 100 and x0 + side >= 180 and y0 <= 200 and y0 + side >= 230
    assert crop_box(np.zeros((0, 2)), 640, 480, 1.25, 16) == (80, 0, 480)


def test_masked_median_matches_nanmedian():
    rng = np.random.default_rng(0)
    v, keep = rng.random((9, 6, 5)), rng.random((9, 6, 5)) > 0.4
    keep[:, 0, 0] = False
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanmedian(np.where(keep, v, np.nan), axis=0)
    np.testing.assert_allclose(_masked_median(v, keep), ref, rtol=1e-6, equal_nan=True)


def test_object_layer_mesh_keeps_every_part_of_the_datasets_object(tmp_path):
    """The HOI object layer draws the dataset's mesh whole: a part far from the body (a lid set
    aside, a second piece) stays, where Objaverse's "bulk" normalisation would drop it."""
    import trimesh

    from pipeline.hoi.clip_sample import load_layer_object

    body = trimesh.creation.box((0.1, 0.1, 0.1))
    far = trimesh.creation.box((0.01, 0.01, 0.01))
    far.apply_translation((0.5, 0.0, 0.0))
    mesh = trimesh.util.concatenate([body, far])
    mesh.export(tmp_path / "two_parts.obj")
    obj = load_layer_object("two_parts", str(tmp_path / "two_parts.obj"))
    assert obj.faces == len(mesh.faces)
    # the canonical frame still maps the file's vertices exactly (the layer poses them with it)
    back = obj.mesh.vertices @ np.linalg.inv(obj.to_canonical)[:3, :3].T + np.linalg.inv(obj.to_canonical)[:3, 3]
    assert np.abs(back).max() == pytest.approx(np.abs(mesh.vertices).max())
