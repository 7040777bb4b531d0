"""Load untrusted mesh files safely and bring them into the canonical object frame.

Canonical frame: the axis-aligned bounding box centre of the whole scene (all instances,
nested transforms applied) at the origin, uniformly scaled so the farthest vertex is at
radius 0.5 (the object fits a unit-diameter sphere); axes as in the file (glTF: +y up).

Safety, because Objaverse files are untrusted:
  * file size is capped before reading; face count after parsing;
  * images are refused above a pixel cap (PIL's decompression-bomb check made an error)
    and downscaled to ``max_texture_px``;
  * every referenced file (OBJ materials, glTF buffers/images) is read through a resolver
    that refuses paths leaving the mesh's folder;
  * only mesh formats are read (no pickle, no code, no npz).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from pipeline.errors import StepFailed

SUPPORTED_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_ABS_COORD = 1e6  # a vertex farther than this (file units) is "absurd size"
MIN_EXTENT = 1e-6


class MeshRejected(StepFailed):
    """An object the pipeline will not render: ``stage`` and a one-line ``reason``."""


class ContainedResolver(trimesh.resolvers.FilePathResolver):
    """A file resolver that refuses any asset path that leaves the mesh's folder."""

    def __init__(self, source: str | os.PathLike, max_bytes: int = 2**31):
        super().__init__(source)
        self._root = Path(self.parent).resolve()
        self._max_bytes = max_bytes

    def get(self, name: str):
        target = (self._root / name.strip()).resolve()
        if os.path.commonpath([self._root, target]) != str(self._root):
            raise MeshRejected("load", f"asset path {name!r} leaves the mesh folder")
        if target.is_file() and target.stat().st_size > self._max_bytes:
            raise MeshRejected("load", f"asset {name!r} is over the {self._max_bytes // 2**20} MB cap")
        return super().get(name)


@dataclass
class CanonicalObject:
    """A loaded object: the original scene plus the transform into the canonical frame.

    ``scene``: trimesh.Scene as loaded (materials kept, for RGB).
    ``to_canonical``: [4,4] float64, file frame -> canonical frame.
    ``mesh``: all instances concatenated, in the canonical frame (geometry, points).
    """

    uid: str
    scene: trimesh.Scene
    to_canonical: np.ndarray
    mesh: trimesh.Trimesh


def _cap_textures(scene: trimesh.Scene, max_px: int) -> None:
    for geom in scene.geometry.values():
        material = getattr(getattr(geom, "visual", None), "material", None)
        if material is None:
            continue
        for attr in ("image", "baseColorTexture", "emissiveTexture", "metallicRoughnessTexture",
                     "normalTexture", "occlusionTexture"):
            img = getattr(material, attr, None)
            if isinstance(img, Image.Image) and max(img.size) > max_px:
                img = img.copy()
                img.thumbnail((max_px, max_px))
                setattr(material, attr, img)


def load_scene(path: str | os.PathLike, max_file_mb: float, max_faces: int, max_texture_px: int) -> trimesh.Scene:
    """Parse a mesh file into a trimesh.Scene, or raise MeshRejected."""
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise MeshRejected("load", f"unsupported file type {path.suffix!r}")
    try:
        size_mb = path.stat().st_size / 2**20
    except OSError as e:
        raise MeshRejected("load", f"cannot read file: {e.strerror}") from None
    if size_mb > max_file_mb:
        raise MeshRejected("load", f"file is {size_mb:.0f} MB, over the {max_file_mb:.0f} MB cap")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            scene = trimesh.load_scene(str(path), resolver=ContainedResolver(path, int(max_file_mb * 2**20)))
    except MeshRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MeshRejected("load", f"texture too large: {str(e).splitlines()[0][:120]}") from None
    except Exception as e:  # noqa: BLE001  (any parser failure is this object's failure)
        raise MeshRejected("load", f"cannot parse: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None
    n_faces = sum(len(g.faces) for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh))
    instances = sum(1 for _ in scene.graph.nodes_geometry)
    if n_faces == 0:
        raise MeshRejected("validate", "no triangles")
    if n_faces > max_faces or instances * n_faces > 50 * max_faces:
        raise MeshRejected("validate", f"{n_faces} faces in {instances} instances, over the {max_faces} cap")
    _cap_textures(scene, max_texture_px)
    return scene


def canonicalise(uid: str, scene: trimesh.Scene, max_faces: int) -> CanonicalObject:
    """Concatenate instances, validate the geometry and compute the canonical transform."""
    meshes = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geom = scene.geometry[name]
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            meshes.append((np.asarray(geom.vertices, np.float64), np.asarray(geom.faces), transform,
                           np.asarray(geom.vertex_normals, np.float64)))
    if not meshes:
        raise MeshRejected("validate", "no triangles")
    total = sum(len(m[1]) for m in meshes)
    if total > max_faces:
        raise MeshRejected("validate", f"{total} faces after instancing, over the {max_faces} cap")
    verts, faces, normals, offset = [], [], [], 0
    for v, f, t, n in meshes:
        if not np.isfinite(v).all():
            raise MeshRejected("validate", "NaN or inf vertex coordinates")
        verts.append(v @ t[:3, :3].T + t[:3, 3])
        # a mirroring instance transform turns the winding inside out: keep normals outward
        faces.append((f[:, ::-1] if np.linalg.det(t[:3, :3]) < 0 else f) + offset)
        with np.errstate(all="ignore"):  # normals move by the inverse transpose
            normals.append(np.nan_to_num(n @ np.linalg.pinv(t[:3, :3])))
        offset += len(v)
    v = np.concatenate(verts)
    f = np.concatenate(faces)
    if not np.isfinite(v).all() or np.abs(v).max() > MAX_ABS_COORD:
        raise MeshRejected("validate", f"absurd size: coordinates up to {np.abs(v).max():.3g}")
    used = np.unique(f)
    lo, hi = v[used].min(axis=0), v[used].max(axis=0)
    if (hi - lo).max() < MIN_EXTENT:
        raise MeshRejected("validate", f"absurd size: extent {(hi - lo).max():.3g}")
    centre = (lo + hi) / 2
    radius = np.linalg.norm(v[used] - centre, axis=1).max()
    scale = 0.5 / radius
    to_canonical = np.diag([scale, scale, scale, 1.0])
    to_canonical[:3, 3] = -centre * scale
    n = np.concatenate(normals)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    mesh = trimesh.Trimesh((v - centre) * scale, f, vertex_normals=n, process=False)
    area = mesh.area_faces
    if not np.isfinite(area).all() or area.sum() <= 0:
        raise MeshRejected("validate", "all triangles are degenerate (zero area)")
    return CanonicalObject(uid=uid, scene=scene, to_canonical=to_canonical, mesh=mesh)


def load_object(uid: str, path: str | os.PathLike, max_file_mb: float, max_faces: int,
                max_texture_px: int) -> CanonicalObject:
    """load_scene + canonicalise."""
    return canonicalise(uid, load_scene(path, max_file_mb, max_faces, max_texture_px), max_faces)
