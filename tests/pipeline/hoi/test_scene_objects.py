"""Which of a scene's objects make the object layer (OakInk2, HOT3D): the ones that move, the largest first."""

from __future__ import annotations

import numpy as np

from pipeline.hoi.datasets.scene_objects import box_corners, choose_objects, moved_distance


def _poses(shifts: np.ndarray) -> np.ndarray:
    P = np.tile(np.eye(4), (len(shifts), 1, 1))
    P[:, :3, 3] = shifts
    return P


def test_moving_objects_are_kept_largest_first_and_still_ones_dropped():
    small, big, still = box_corners(np.random.default_rng(0).uniform(-0.02, 0.02, (50, 3))), \
        box_corners(np.array([[-0.1, -0.05, -0.05], [0.1, 0.05, 0.05]])), box_corners(np.eye(3) * 0.05)
    n = 6
    poses = {"lid": _poses(np.linspace([0, 0, 0], [0.3, 0, 0], n)),        # moves most
             "box": _poses(np.linspace([0, 0, 0], [0.2, 0, 0], n)),        # moves, largest
             "can": _poses(np.full((n, 3), 0.5) + np.linspace(0, 0.01, n)[:, None])}  # 1.7 cm: still
    valid = {k: np.ones(n, bool) for k in poses}
    assert choose_objects({"lid": small, "box": big, "can": still}, poses, valid) == ["box", "lid"]
    # a rotation about the centre moves the corners too
    R = np.tile(np.eye(4), (2, 1, 1))
    R[1, :3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    assert abs(moved_distance(big, R, np.ones(2, bool)) - np.linalg.norm([0.1 + 0.05, 0.1 - 0.05, 0])) < 1e-12
    # invalid frames do not count
    jump = _poses(np.array([[0, 0, 0], [5.0, 0, 0], [0, 0, 0]]))
    assert moved_distance(big, jump, np.array([True, False, True])) == 0.0


def test_when_nothing_moves_the_object_nearest_the_hands_is_kept():
    n = 4
    c = box_corners(np.eye(3) * 0.02)
    poses = {"far": _poses(np.full((n, 3), 1.0)), "near": _poses(np.zeros((n, 3)))}
    valid = {k: np.ones(n, bool) for k in poses}
    hands = np.full((n, 2, 3), np.nan)
    hands[:, 1] = [0.05, 0.0, 0.0]                                 # only the right wrist is there
    assert choose_objects({"far": c, "near": c}, poses, valid, hands) == ["near"]
    assert choose_objects({}, {}, {}) == []
