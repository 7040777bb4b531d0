"""Real EGL renders of known geometry: silhouettes, normals and depth are exact."""

import numpy as np
import pytest
import trimesh

from pipeline.render.cameras import intrinsics, project
from pipeline.render.context import shared_context
from pipeline.render.layers import Draw, LayerRenderer

R = 64
YFOV = 40.0


@pytest.fixture(scope="module")
def renderer():
    r = LayerRenderer(shared_context(R), R, near=0.05, far=50.0)
    square = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], float)
    r.upload("square", square, np.tile([0.0, 0, 1], (4, 1)), np.array([[0, 1, 2], [0, 2, 3]]))
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    r.upload("sphere", sphere.vertices, sphere.vertex_normals, sphere.faces)
    return r


def _translate(z, x=0.0, y=0.0):
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def test_square_silhouette_depth_and_normal_are_exact(renderer):
    K = intrinsics(R, YFOV)
    normal, depth = renderer.render([[Draw("square", _translate(-2.0))]], K)
    # expected coverage: pixel centres (i + 0.5) inside the projected square
    lo, hi = project(np.array([[-0.5, 0.5, -2.0], [0.5, -0.5, -2.0]]), K)
    centres = np.arange(R) + 0.5
    cols = (centres >= lo[0]) & (centres <= hi[0])
    rows = (centres >= lo[1]) & (centres <= hi[1])
    expected = rows[:, None] & cols[None, :]
    covered = depth[0] > 0
    assert covered.sum() == expected.sum() > 100
    assert np.array_equal(covered, expected)
    # no anti-aliasing: every covered pixel has exactly the plane's depth, others 0
    assert np.all(depth[0][covered] == np.float32(2.0))
    assert np.all(normal[0][~covered] == 0)
    n = normal[0][covered].astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(n, np.tile([0, 0, 1], (len(n), 1)), atol=1.5 / 255)


def test_tilted_square_depth_matches_ray_plane_intersection(renderer):
    K = intrinsics(R, YFOV)
    rot = trimesh.transformations.rotation_matrix(np.radians(40), [0, 1, 0])
    mv = _translate(-2.0) @ rot
    _, depth = renderer.render([[Draw("square", mv)]], K)
    v, u = np.nonzero(depth[0] > 0)
    # ray through the pixel centre, intersected with the plane through (0,0,-2) with normal R·z
    x = (u + 0.5 - K[0, 2]) / K[0, 0]
    y = -(v + 0.5 - K[1, 2]) / K[1, 1]
    d = np.stack([x, y, -np.ones_like(x)], axis=1)
    nrm = mv[:3, :3] @ [0, 0, 1]
    t = (nrm @ [0, 0, -2.0]) / (d @ nrm)
    np.testing.assert_allclose(depth[0][v, u], t, rtol=2e-4)


def test_sphere_normals_are_unit_and_face_the_camera(renderer):
    K = intrinsics(R, YFOV)
    normal, depth = renderer.render([[Draw("sphere", _translate(-2.0))]], K)
    covered = depth[0] > 0
    n = normal[0][covered].astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=0.02)
    assert (n[:, 2] > -0.02).all()  # facing the viewer (+z in OpenGL camera space)
    assert 1.45 < depth[0][covered].min() < 1.55  # nearest point of a r=0.5 sphere at 2 m
    v, u = np.nonzero(covered)
    centre_px = np.argmin((u + 0.5 - R / 2) ** 2 + (v + 0.5 - R / 2) ** 2)
    assert n[centre_px, 2] > 0.99


def test_tiles_are_independent_and_match_single_renders(renderer):
    K = intrinsics(R, YFOV)
    tiles = [[Draw("sphere", _translate(-2.0 - 0.3 * i, x=0.2 * i))] for i in range(7)]
    tiles.insert(3, [])  # an empty tile stays empty
    normal, depth = renderer.render(tiles, K)
    assert depth[3].max() == 0 and normal[3].max() == 0
    for i in (0, 4, 7):
        n1, d1 = renderer.render([tiles[i]], K)
        # same coverage and normals; depth equal up to float interpolation at another window offset
        assert np.array_equal(d1[0] > 0, depth[i] > 0) and np.array_equal(n1[0], normal[i])
        np.testing.assert_allclose(d1[0], depth[i], rtol=1e-5)


def test_many_tiles_spill_into_several_atlases():
    small = LayerRenderer(shared_context(R), R, max_atlas_side=2 * R)  # 4 tiles per atlas
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    small.upload("s", sphere.vertices, sphere.vertex_normals, sphere.faces)
    K = intrinsics(R, YFOV)
    normal, depth = small.render([[Draw("s", _translate(-2.0 - 0.1 * i))] for i in range(9)], K)
    assert depth.shape == (9, R, R)
    nearest = [depth[i][depth[i] > 0].min() for i in range(9)]
    assert np.all(np.diff(nearest) > 0.05)  # each tile got its own pose


def test_coarse_sphere_normals_are_not_mirrored_at_the_silhouette():
    # smooth vertex normals of a coarse mesh graze away from the camera near the rim; the
    # shader must keep them (not flip them toward the viewer, which mirrors x and y)
    R2 = 128
    r = LayerRenderer(shared_context(R2), R2, near=0.05, far=50.0)
    coarse = trimesh.creation.uv_sphere(radius=0.5, count=[12, 12])
    r.upload("coarse", coarse.vertices, coarse.vertex_normals, coarse.faces)
    K = intrinsics(R2, YFOV)
    normal, depth = r.render([[Draw("coarse", _translate(-2.0))]], K)
    v, u = np.nonzero(depth[0] > 0)
    n = normal[0][v, u].astype(np.float32) / 255 * 2 - 1
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    # the analytic sphere normal at the visible surface point, from the pixel's ray and depth
    x = (u + 0.5 - K[0, 2]) / K[0, 0] * depth[0][v, u]
    y = -(v + 0.5 - K[1, 2]) / K[1, 1] * depth[0][v, u]
    p = np.stack([x, y, -depth[0][v, u]], axis=1) - [0, 0, -2.0]
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip((n * p).sum(axis=1), -1, 1)))
    assert angle.max() < 45, f"{(angle > 45).sum()} pixels off by more than 45 degrees"


def test_closing_a_private_context_leaves_the_shared_one_working():
    from pipeline.render.context import GLContext

    private = GLContext(32)
    private.close()
    r = LayerRenderer(shared_context(R), R, near=0.05, far=50.0)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    r.upload("s", sphere.vertices, sphere.vertex_normals, sphere.faces)
    _, depth = r.render([[Draw("s", _translate(-2.0))]], intrinsics(R, YFOV))
    assert (depth[0] > 0).sum() > 100
