"""MANO kinematic tree and part labels: which of the six hand layers a vertex / face belongs to.

MANO's 16 joints: 0 wrist (palm), 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15
thumb (each finger: MCP, PIP, DIP; thumb: CMC, MCP, IP). A vertex's part is the part of
its dominant skinning joint (argmax of the weights); a face's part is the part of the
dominant joint of its three vertices' summed weights. Faces are sorted by part so each part
is one contiguous face range (one draw call per part in ``LayerRenderer``).
"""

from __future__ import annotations

import numpy as np

from schemas import HAND_PARTS

N_MANO_JOINTS = 16
# parent of each joint (kintree_table[0]); -1 for the root
MANO_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], np.int64)
# joint index -> part name
JOINT_PART = ("palm",) + ("index",) * 3 + ("middle",) * 3 + ("pinky",) * 3 + ("ring",) * 3 + ("thumb",) * 3
JOINT_PART_INDEX = np.array([HAND_PARTS.index(p) for p in JOINT_PART], np.int64)  # [16] into HAND_PARTS

# Fingertip vertices (thumb, index, middle, ring, pinky) per side, as manopth's ManoLayer
# takes them (manopth/manolayer.py, ManoLayer.forward): the middle tip is vertex 444 on the
# right hand but 445 on the left. DexYCB's joint_3d/joint_2d labels were made with manopth.
TIP_VERTEX_IDS = {"right": (745, 317, 444, 556, 673), "left": (745, 317, 445, 556, 673)}
# [16 joints + 5 tips] -> the 21-joint order used by DexYCB / manopth (manolayer.py's final
# reorder; dex_ycb_toolkit/dex_ycb.py _MANO_JOINTS names them, see JOINT21_NAMES):
# wrist, thumb(CMC,MCP,IP,tip), index(MCP,PIP,DIP,tip), middle(...), ring(...), pinky(...)
JOINT21_ORDER = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
JOINT21_NAMES = ("wrist",) + tuple(f"{f}_{j}" for f in ("thumb", "index", "middle", "ring", "little")
                                   for j in ("mcp", "pip", "dip", "tip"))  # DexYCB's names (thumb "mcp" = CMC)


def tip_vertex_ids(side: str) -> tuple[int, ...]:
    """The five fingertip vertex ids of ``side`` ("left"/"right"), manopth's choice."""
    if side not in TIP_VERTEX_IDS:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return TIP_VERTEX_IDS[side]


def vertex_parts(weights: np.ndarray) -> np.ndarray:
    """int64 [V] index into HAND_PARTS from skinning weights [V,16]."""
    return JOINT_PART_INDEX[np.argmax(weights, axis=1)]


def face_parts(weights: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """int64 [F] index into HAND_PARTS: dominant joint of the face's summed vertex weights."""
    return JOINT_PART_INDEX[np.argmax(weights[faces].sum(axis=1), axis=1)]


def sort_faces_by_part(weights: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """Faces [F,3] reordered so each part is contiguous (HAND_PARTS order, stable inside a part)
    and the (first_face, n_faces) range of each part name."""
    labels = face_parts(weights, faces)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=len(HAND_PARTS))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranges = {p: (int(starts[i]), int(counts[i])) for i, p in enumerate(HAND_PARTS)}
    return np.ascontiguousarray(faces[order]), ranges


def joints21(joints16: np.ndarray, vertices: np.ndarray, side: str) -> np.ndarray:
    """[...,21,3] DexYCB-ordered joints from the 16 skeleton joints [...,16,3] (MANO order) and
    the fingertip vertices of ``side`` taken from ``vertices`` [...,V,3] (manopth's tips)."""
    tips = vertices[..., list(tip_vertex_ids(side)), :]
    return np.concatenate([joints16, tips], axis=-2)[..., list(JOINT21_ORDER), :]
