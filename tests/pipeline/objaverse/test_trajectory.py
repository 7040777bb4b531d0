import numpy as np
import trimesh

from pipeline.objaverse import trajectory
from pipeline.render.cameras import intrinsics, look_at, project
from schemas.config import RenderConfig


def _sim(seed, cfg=RenderConfig()):
    return trajectory.simulate(np.random.default_rng(seed), cfg.frames, cfg.yfov_deg, cfg.cam_distance,
                               cfg.max_rotation_deg)


def test_quaternions_are_unit_and_motion_is_smooth():
    for seed in range(20):
        q, t = _sim(seed)
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-9)
        # angle between consecutive orientations is small and varies slowly
        dots = np.abs((q[1:] * q[:-1]).sum(axis=1)).clip(0, 1)
        step = 2 * np.arccos(dots)
        assert step.max() < np.radians(25)
        assert np.abs(np.diff(step)).max() < np.radians(6)
        # translation: small steps, small accelerations
        assert np.abs(np.diff(t, axis=0)).max() < 0.1
        assert np.abs(np.diff(t, n=2, axis=0)).max() < 0.03


def test_total_rotation_respects_the_limit():
    cfg = RenderConfig(max_rotation_deg=90)
    for seed in range(10):
        q, _ = _sim(seed, cfg)
        dots = np.abs((q[1:] * q[:-1]).sum(axis=1)).clip(0, 1)
        assert np.degrees(2 * np.arccos(dots)).sum() <= 90 + 1e-6


def _assert_in_view(cfg, seeds):
    """Points on the canonical bounding sphere (the worst-case object) project inside the image."""
    K = intrinsics(cfg.resolution, cfg.yfov_deg)
    view = np.linalg.inv(look_at((0, 0, cfg.cam_distance)))
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5).vertices
    for seed in seeds:
        q, t = _sim(seed, cfg)
        for pose in trajectory.object_poses(q, t):
            pts = (view @ pose @ np.c_[sphere, np.ones(len(sphere))].T).T[:, :3]
            uv = project(pts, K)
            assert (uv >= 0).all() and (uv <= cfg.resolution).all()
            assert (pts[:, 2] < -0.05).all()


def test_object_stays_in_view_every_frame():
    _assert_in_view(RenderConfig(), range(50))


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = _sim(3), _sim(3), _sim(4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_quat_to_matrix_matches_trimesh():
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = trajectory.random_quaternion(rng)
        m = trimesh.transformations.quaternion_matrix([q[3], q[0], q[1], q[2]])[:3, :3]  # trimesh: w first
        np.testing.assert_allclose(trajectory.quat_to_matrix(q), m, atol=1e-12)


def test_in_view_even_at_the_closest_allowed_camera():
    from schemas.config import min_cam_distance

    _assert_in_view(RenderConfig(cam_distance=min_cam_distance(40.0)), range(20))
