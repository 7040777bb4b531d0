"""Which of a scene's many annotated rigid objects go into the one object layer (datasets that
pose every object on the table in every frame: OakInk2, HOT3D).

The layer, and the crop around it, should hold what the hands manipulate, not every object
in the room: an object is kept when it *moves* during the item (sequence x camera), and the
largest kept one is the primary one (reference views, points, ``obj_rot``/``obj_trans``): of
an articulated object split into parts (OakInk2), the body rather than its lid.
The choice is made once per item, so every window of an item has the same parts (as
``export-sequence`` needs). Objects left out stay in the RGB frames and the background, as
DexYCB's static objects do.
"""

from __future__ import annotations

import numpy as np

MIN_MOVE_M = 0.02     # an object whose bounding box moves less than this (m) over the item is static


def box_corners(vertices: np.ndarray) -> np.ndarray:
    """[8,3] corners of the axis-aligned bounding box of ``vertices`` [V,3]."""
    lo, hi = np.min(vertices, axis=0), np.max(vertices, axis=0)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], np.float64)


def moved_distance(corners: np.ndarray, poses: np.ndarray, valid: np.ndarray) -> float:
    """Largest displacement (m) of the box ``corners`` [8,3] over the frames where ``valid`` [N],
    relative to the first valid frame; ``poses`` [N,4,4] object -> a fixed frame (world). 0
    when fewer than two frames are valid."""
    ok = np.flatnonzero(np.asarray(valid, bool))
    if len(ok) < 2:
        return 0.0
    P = np.asarray(poses, np.float64)[ok]
    pts = np.einsum("nij,kj->nki", P[:, :3, :3], corners) + P[:, None, :3, 3]     # [n,8,3]
    return float(np.linalg.norm(pts - pts[:1], axis=-1).max())


def choose_objects(corners: dict[str, np.ndarray], poses: dict[str, np.ndarray], valid: dict[str, np.ndarray],
                   hand_points: np.ndarray | None = None, min_move: float = MIN_MOVE_M) -> list[str]:
    """Names of the objects of the layer, primary first.

    ``corners``: name -> [8,3] box corners (m, object frame); ``poses``: name -> [N,4,4] object
    -> world (a frame fixed over the item); ``valid``: name -> [N] bool; ``hand_points``: [N,k,3]
    hand positions in the same frame (NaN where absent), for the fallback. Kept: every object
    whose box moves more than ``min_move`` (``moved_distance``); the largest (box diagonal)
    first, the others most moved first. When none does, the one object whose centre is on average nearest a hand (the most moved one if
    there are no hands either). [] when there are no objects.
    """
    names = sorted(corners)
    if not names:
        return []
    moved = {n: moved_distance(corners[n], poses[n], valid[n]) for n in names}
    kept = sorted((n for n in names if moved[n] > min_move), key=lambda n: (-moved[n], n))
    if kept:
        size = {n: float(np.linalg.norm(np.ptp(corners[n], axis=0))) for n in kept}
        primary = max(kept, key=lambda n: (size[n], -kept.index(n)))
        return [primary] + [n for n in kept if n != primary]
    if hand_points is not None and np.isfinite(hand_points).any():
        dist = {}
        for n in names:
            c = corners[n].mean(axis=0)
            P = np.asarray(poses[n], np.float64)
            centre = P[:, :3, :3] @ c + P[:, :3, 3]                                   # [N,3]
            d = np.linalg.norm(np.asarray(hand_points, np.float64) - centre[:, None], axis=-1)  # [N,k]
            d = np.where(np.asarray(valid[n], bool)[:, None] & np.isfinite(d), d, np.inf).min(axis=1)
            d = d[np.isfinite(d)]
            dist[n] = float(d.mean()) if len(d) else np.inf
        return [min(names, key=lambda n: (dist[n], n))]
    return [max(names, key=lambda n: (moved[n], n))]
