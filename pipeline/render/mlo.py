"""Multi-layer occlusion (MLO) maps of a clip: 13 layers per frame, each rendered alone.

Layers (``schemas.LAYER_NAMES``): object, then left palm/thumb/index/middle/ring/pinky, then
right ... Each (frame, layer) is one tile of ``LayerRenderer``'s atlas: all T x 13 tiles go
through one pass and one read-back per atlas (64 tiles of 512 px per 4096 px atlas). A
hand's faces are sorted by part (``HandModel.faces``), so a part is one draw of a face
range; the T frames of a hand are one uploaded mesh (T copies of the hand, frame t's
copy starting at face t * F). Tiles of absent layers (no object, invalid hand) are not
drawn at all and come back all zero.

Everything is in the OpenGL camera frame, metres: depth is ``-z_cam``, 0 = absent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.hands.model import HandModel
from pipeline.render.layers import Draw, LayerRenderer
from schemas import HAND_PARTS, HANDS, LAYER_NAMES

OBJECT_MESH = "hoi_object"


@dataclass
class HandTrack:
    """One hand over T frames. ``vertices`` [T,V,3] float, camera frame (OpenGL), metres;
    ``valid`` [T] bool (invalid frames are not drawn)."""

    model: HandModel
    vertices: np.ndarray
    valid: np.ndarray


@dataclass
class ObjectTrack:
    """The object layer's mesh (its own frame, metres) and per-frame object-to-camera
    transforms ``modelviews`` [T,4,4] (OpenGL camera axes); ``valid`` [T] bool."""

    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    modelviews: np.ndarray
    valid: np.ndarray


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [...,V,3] of vertices [...,V,3] (float32 out)."""
    v = np.asarray(vertices, np.float64)
    lead, V = v.shape[:-2], v.shape[-2]
    v = v.reshape(-1, V, 3)
    fn = np.cross(v[:, faces[:, 1]] - v[:, faces[:, 0]], v[:, faces[:, 2]] - v[:, faces[:, 0]])  # [B,F,3]
    n = np.zeros_like(v)
    for k in range(3):  # sum face normals into vertices with bincount (fast, batched)
        idx = (np.arange(len(v))[:, None] * V + faces[:, k][None]).reshape(-1)
        for c in range(3):
            n[..., c] += np.bincount(idx, weights=fn[..., c].reshape(-1), minlength=len(v) * V).reshape(len(v), V)
    n = n.reshape(*lead, V, 3)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-20)
    return n.astype(np.float32)


def object_parts(obj: ObjectTrack | list[ObjectTrack] | None) -> list[ObjectTrack]:
    """The object layer as a list of rigid parts: one track (a rigid object), several (an
    articulated object's parts, or several manipulated objects sharing the one object layer),
    or none."""
    if obj is None:
        return []
    return list(obj) if isinstance(obj, (list, tuple)) else [obj]


def layer_tiles(n_frames: int, obj: ObjectTrack | list[ObjectTrack] | None,
                hands: dict[str, HandTrack]) -> list[tuple[int, int, list[Draw]]]:
    """(frame, layer index, draws) of every tile that has something to draw. The object tile
    of frame t draws every object part valid at t, with that part's own transform."""
    tiles = []
    parts = object_parts(obj)
    for t in range(n_frames):
        draws = [Draw(f"{OBJECT_MESH}_{i}", p.modelviews[t]) for i, p in enumerate(parts) if p.valid[t]]
        if draws:
            tiles.append((t, 0, draws))
        for side in HANDS:
            track = hands.get(side)
            if track is None or not track.valid[t]:
                continue
            n_faces = len(track.model.faces)
            for part in HAND_PARTS:
                first, count = track.model.part_ranges[part]
                if count:
                    tiles.append((t, LAYER_NAMES.index(f"{side}_{part}"),
                                  [Draw(f"hoi_hand_{side}", np.eye(4), (t * n_faces + first, count))]))
    return tiles


def upload_clip(renderer: LayerRenderer, obj: ObjectTrack | list[ObjectTrack] | None,
                hands: dict[str, HandTrack]) -> list[str]:
    """Upload the object parts and each hand's T posed copies (one mesh per hand); returns
    the uploaded mesh names."""
    names = []
    for i, part in enumerate(object_parts(obj)):
        renderer.upload(f"{OBJECT_MESH}_{i}", part.vertices, part.normals, part.faces)
        names.append(f"{OBJECT_MESH}_{i}")
    for side, track in hands.items():
        T, V = track.vertices.shape[:2]
        faces = track.model.faces
        normals = vertex_normals(track.vertices, faces)
        all_faces = (faces[None] + (np.arange(T) * V)[:, None, None]).reshape(-1, 3)
        renderer.upload(f"hoi_hand_{side}", track.vertices.reshape(-1, 3), normals.reshape(-1, 3), all_faces)
        names.append(f"hoi_hand_{side}")
    return names


def render_mlo(renderer: LayerRenderer, K: np.ndarray, n_frames: int, obj: ObjectTrack | list[ObjectTrack] | None,
               hands: dict[str, HandTrack], depth_dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """normal uint8 [T,13,R,R,3] ((n+1)/2*255, 0 absent) and depth [T,13,R,R] (m, 0 absent) of
    ``depth_dtype`` (float32, or float16 as stored: converted per drawn rectangle, not per map).
    ``obj``: the object layer, one rigid track or a list of rigid parts (see ``object_parts``)."""
    R, L = renderer.resolution, len(LAYER_NAMES)
    normal = np.zeros((n_frames * L, R, R, 3), np.uint8)
    depth = np.zeros((n_frames * L, R, R), depth_dtype)
    names = upload_clip(renderer, obj, hands)
    try:
        tiles = layer_tiles(n_frames, obj, hands)
        if tiles:
            renderer.render([d for _, _, d in tiles], K, out=(normal, depth), slots=[t * L + k for t, k, _ in tiles])
    finally:
        for name in names:
            renderer.delete(name)
    return normal.reshape(n_frames, L, R, R, 3), depth.reshape(n_frames, L, R, R)
