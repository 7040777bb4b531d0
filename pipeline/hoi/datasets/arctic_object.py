"""ARCTIC's articulated object model, as the toolkit's code builds it (github.com/zc-alexfan/arctic
at 49f3eb4, ``common/object_tensors.py``; line numbers of that file unless said otherwise).

  * ``meta/object_vtemplates/<obj>/mesh.obj``: vertices in **millimetres** (L278: ``v / 1000``);
  * ``parts.json``: one value per vertex, loaded as **bool** (L172 ``np.array(json.load(f),
    dtype=np.bool)``), stored as ``parts + 1`` (L249) and the vertices with ``parts_ids == 1``
    take the articulated positions (L102-104), i.e. the **articulated part (the toolkit's "top")
    is the vertices whose parts.json value is 0**. ARCTIC's docs (``docs/data/data_doc.md`` L53:
    "1 for top; 0 for bottom") say the opposite; the code made the dataset's own processed data
    and renders, so the code is followed here;
  * a pose row of ``.object.npy`` is (articulation rad, axis-angle (3), translation (3) mm)
    (``src/arctic/preprocess_dataset.py`` L29-31; ``src/arctic/processing.py`` L213-215 passes
    ``obj_trans / 1000``);
  * ``ObjectTensors.forward_7d_batch``: the articulated part turned by
    ``axis_angle_to_quaternion(z_axis * arti)`` (L73), ``z_axis = [0, 0, -1]`` (L292): about the
    object's -z axis through its origin; then every vertex by the global rotation plus the
    translation (L94-99). Here: metres.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from pipeline.errors import StepFailed

ARTI_AXIS = np.array([0.0, 0.0, -1.0])  # object_tensors.py: obj_tensors["z_axis"]
MM = 1000.0


def object_pose(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``.object.npy`` rows [N,7] -> (object -> world [N,4,4] at rest, metres; articulation [N] rad)."""
    p = np.asarray(params, np.float64).reshape(-1, 7)
    P = np.tile(np.eye(4), (len(p), 1, 1))
    P[:, :3, :3] = Rotation.from_rotvec(p[:, 1:4]).as_matrix()
    P[:, :3, 3] = p[:, 4:7] / MM
    return P, p[:, 0]


def top_rotation(arti: float) -> np.ndarray:
    """[4,4] the top part's articulation: ``arti`` radians about the object's -z axis."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(ARTI_AXIS * float(arti)).as_matrix()
    return T


@functools.lru_cache(maxsize=4)
def object_model(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mesh.obj`` vertices [V,3] (metres), faces [F,3], top mask [V] bool: True for the part the
    articulation turns, the vertices whose ``parts.json`` value is 0 (see the module doc)."""
    import trimesh

    folder = Path(folder)
    try:
        mesh = trimesh.load(folder / "mesh.obj", process=False, force="mesh")
        parts = np.asarray(json.loads((folder / "parts.json").read_text()), bool).reshape(-1)
    except (FileNotFoundError, ValueError) as e:
        raise StepFailed("load", f"object model {folder}: {type(e).__name__}: {str(e)[:120]}") from None
    v = np.asarray(mesh.vertices, np.float64) / MM
    if len(parts) != len(v):
        raise StepFailed("load", f"{folder}/parts.json has {len(parts)} entries for {len(v)} vertices of mesh.obj")
    return v, np.asarray(mesh.faces, np.int64), articulated_mask(parts)


def articulated_mask(parts: np.ndarray) -> np.ndarray:
    """bool [V]: the vertices ``ObjectTensors`` articulates, from ``parts.json`` read as bool:
    ``parts_ids = parts + 1`` (object_tensors.py L249) and ``parts_ids == 1`` (L102) are the
    vertices whose value is 0 (False)."""
    return ~np.asarray(parts, bool)


def split_parts(v: np.ndarray, f: np.ndarray, top: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"bottom", "top"} -> (vertices, faces) of each rigid part; a face goes to the part of the
    majority of its vertices (its vertices move with that part)."""
    face_top = top[f].sum(axis=1) >= 2
    out = {}
    for name, sel in (("bottom", ~face_top), ("top", face_top)):
        ff = f[sel]
        used = np.unique(ff)
        remap = np.full(len(v), -1)
        remap[used] = np.arange(len(used))
        out[name] = (v[used], remap[ff])
    return out
