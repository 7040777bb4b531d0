import numpy as np
import trimesh

from pipeline.objects.points import sample_surface_points


def test_points_lie_on_the_surface_with_outward_unit_normals():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    p, n = sample_surface_points(sphere, 2048, np.random.default_rng(0))
    assert p.shape == (2048, 3) and n.shape == (2048, 3) and p.dtype == np.float32
    r = np.linalg.norm(p, axis=1)
    assert np.all((r > 0.49) & (r <= 0.5 + 1e-6))
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert np.all((n * p / r[:, None]).sum(axis=1) > 0.98)


def test_sampling_is_area_uniform_and_deterministic():
    # a box 1 x 1 x 0.1: the two big faces hold 1/1.2 of the area each... share by area
    box = trimesh.creation.box(extents=(1.0, 1.0, 0.1))
    p, n = sample_surface_points(box, 20000, np.random.default_rng(1))
    big = np.abs(n[:, 2]) > 0.99
    assert abs(big.mean() - 2 / 2.4) < 0.015
    p2, _ = sample_surface_points(box, 20000, np.random.default_rng(1))
    assert np.array_equal(p, p2)
