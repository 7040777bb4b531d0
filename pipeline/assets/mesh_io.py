"""Load untrusted mesh files safely and bring them into the canonical object frame.

Canonical frame (all instances, nested transforms applied; axes as in the file, glTF +y up),
by ``normalise``:
  * "bulk" (default): the bulk of the surface area. Per axis, the area-weighted
    ``BULK_TRIM``..``1 - BULK_TRIM`` quantiles of the triangle corners (each carrying a third
    of its triangle's area) bound a core box; every corner within ``BULK_MARGIN`` x the core's
    largest side of that box belongs to the body. The body's bounding-box centre goes to the
    origin and its farthest corner to radius 0.5. A connected object is all body (the same
    frame as "bbox"); stray specks far away (under ~1% of the area) no longer shrink the
    body to a few pixels: they lie outside the unit sphere, and those beyond ``STRAY_RADIUS``
    are dropped from the rendered scene and the canonical mesh (a speck passing by the
    camera would otherwise fill the frame).
  * "bbox": the bounding-box centre at the origin, the farthest vertex at radius 0.5.

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
from urllib.parse import unquote

import numpy as np
import trimesh
from PIL import Image

from pipeline.assets import gltf_ext
from pipeline.errors import StepFailed

SUPPORTED_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_ABS_COORD = 1e6  # a vertex farther than this (file units) is "absurd size"
MIN_EXTENT = 1e-6
BULK_TRIM = 0.01  # area fraction trimmed at each end of each axis by "bulk" normalisation
BULK_MARGIN = 0.5  # corners this far (x the core box's largest side) outside the core still count
STRAY_RADIUS = 1.0  # canonical faces beyond this radius (stray specks under "bulk") are not rendered
NORMALISATIONS = ("bulk", "bbox")


class MeshRejected(StepFailed):
    """An object the pipeline will not render: ``stage`` and a one-line ``reason``."""


class ContainedResolver(trimesh.resolvers.FilePathResolver):
    """A file resolver that refuses any asset path that leaves the mesh's folder.

    glTF URIs are percent-encoded (RFC 3986, glTF 2.0 spec 3.3): ``Unicode%20\u2764.bin``
    names the file ``Unicode \u2764.bin``. A name is tried as written first (OBJ material
    and texture names are plain paths), then percent-decoded; both must stay inside the
    folder (``..%2F`` decodes to ``../`` and is refused like ``../``).
    """

    def __init__(self, source: str | os.PathLike, max_bytes: int = 2**31):
        super().__init__(source)
        self._root = Path(self.parent).resolve()
        self._max_bytes = max_bytes

    def _inside(self, name: str) -> Path:
        target = (self._root / name.strip()).resolve()
        if os.path.commonpath([self._root, target]) != str(self._root):
            raise MeshRejected("load", "an asset path leaves the mesh folder", f"asset {name!r}")
        return target

    def get(self, name: str):
        target = self._inside(name)
        if not target.is_file():
            decoded = self._inside(unquote(name))
            target = decoded if decoded.is_file() else target
        if not target.is_file():
            raise MeshRejected("load", "a referenced asset file is missing", f"asset {name!r}")
        if target.stat().st_size > self._max_bytes:
            raise MeshRejected("load", f"an asset is over the {self._max_bytes // 2**20} MB cap", f"asset {name!r}")
        return target.read_bytes()


@dataclass
class CanonicalObject:
    """A loaded object: the original scene plus the transform into the canonical frame.

    ``scene``: trimesh.Scene as loaded (materials kept, for RGB).
    ``to_canonical``: [4,4] float64, file frame -> canonical frame.
    ``mesh``: all instances concatenated, in the canonical frame (geometry, points).
    ``outside``: area fraction of the surface outside the radius-0.5 sphere (0 for "bbox").
    """

    uid: str
    scene: trimesh.Scene
    to_canonical: np.ndarray
    mesh: trimesh.Trimesh
    outside: float = 0.0

    @property
    def faces(self) -> int:
        return int(len(self.mesh.faces))

    @property
    def textured(self) -> bool:
        """True if any instance has a texture image (vertex colours and plain materials: False)."""
        for geom in self.scene.geometry.values():
            material = getattr(getattr(geom, "visual", None), "material", None)
            if any(isinstance(getattr(material, a, None), Image.Image) for a in ("image", "baseColorTexture")):
                return True
        return False


def read_mesh_arrays(path: str | os.PathLike, unit: float = 1.0, **load_kw) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's object model file as (vertices [V,3] float64 times ``unit``, faces [F,3] int64), loaded as
    the dataset toolkits load theirs (``process=False``: vertex order and count kept, so per-vertex labels
    still line up). ``load_kw`` goes to ``trimesh.load`` (e.g. ``skip_materials=True``). An unreadable file
    is ``StepFailed("load")`` with one line naming it."""
    try:
        mesh = trimesh.load(path, force="mesh", process=False, **load_kw)
    except Exception as e:  # noqa: BLE001
        raise StepFailed("load", f"object model {Path(path).name} unreadable ({type(e).__name__})") from None
    return np.asarray(mesh.vertices, np.float64) * unit, np.asarray(mesh.faces, np.int64)


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][min(np.searchsorted(cw, q * cw[-1]), len(x) - 1)])


def bulk_frame(v: np.ndarray, f: np.ndarray, trim: float = BULK_TRIM,
               margin: float = BULK_MARGIN) -> tuple[np.ndarray, float]:
    """(centre [3], radius) of the bulk of a surface: v float64 [N,3], f int [M,3] (see module doc)."""
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    pts, w = tri.reshape(-1, 3), np.repeat(area / 3, 3)
    if not np.isfinite(w).all() or w.sum() <= 0:
        lo, hi = pts.min(axis=0), pts.max(axis=0)
    else:
        lo = np.array([_weighted_quantile(pts[:, k], w, trim) for k in range(3)])
        hi = np.array([_weighted_quantile(pts[:, k], w, 1 - trim) for k in range(3)])
    pad = margin * (hi - lo).max()
    body = pts[np.all((pts >= lo - pad) & (pts <= hi + pad), axis=1)]
    lo, hi = body.min(axis=0), body.max(axis=0)
    centre = (lo + hi) / 2
    return centre, float(np.linalg.norm(body - centre, axis=1).max())


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def load_scene(path: str | os.PathLike, max_file_mb: float, max_faces: int, max_texture_px: int) -> trimesh.Scene:
    """Parse a mesh file into a trimesh.Scene, or raise MeshRejected."""
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise MeshRejected("load", f"unsupported file type {path.suffix!r}")
    try:
        size_mb = path.stat().st_size / 2**20
    except OSError as e:
        raise MeshRejected("load", "cannot read the file", str(e.strerror)) from None
    if size_mb > max_file_mb:
        raise MeshRejected("load", f"file over the {max_file_mb:g} MB cap", f"{size_mb:.1f} MB")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    resolver = ContainedResolver(path, int(max_file_mb * 2**20))
    n_draco = 0
    try:
        if path.suffix.lower() in (".glb", ".gltf"):
            tree, binary = gltf_ext.read_gltf(path)
            gltf_ext.check_extensions(tree)
            n_draco = gltf_ext.decode_draco_primitives(tree, binary, resolver)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            scene = trimesh.load_scene(str(path), resolver=resolver)
    except MeshRejected:
        raise
    except StepFailed as e:
        raise MeshRejected(e.stage, e.reason, e.detail) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MeshRejected("load", "texture too large", _first_line(e)) from None
    except Exception as e:  # noqa: BLE001  (any parser failure is this object's failure)
        raise MeshRejected("load", f"cannot parse the {path.suffix.lower()} file", _first_line(e)) from None
    if n_draco and not any(np.any(g.vertices) for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh)):
        raise MeshRejected("load", "Draco geometry was not decoded", "the glTF reader left placeholder zeros")
    n_faces = sum(len(g.faces) for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh))
    instances = sum(1 for _ in scene.graph.nodes_geometry)
    if n_faces == 0:
        raise MeshRejected("validate", "no triangles")
    if n_faces > max_faces or instances * n_faces > 50 * max_faces:
        raise MeshRejected("validate", f"over the {max_faces} faces cap", f"{n_faces} faces in {instances} instances")
    _cap_textures(scene, max_texture_px)
    return scene


def triangle_instances(scene: trimesh.Scene):
    """(node, geometry name, trimesh.Trimesh, transform [4,4] node -> scene) for every instance of
    the scene that has triangles (points, lines and empty meshes are skipped)."""
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geom = scene.geometry[name]
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            yield node, name, geom, transform


def canonicalise(uid: str, scene: trimesh.Scene, max_faces: int, normalise: str = "bulk",
                 min_faces: int = 0) -> CanonicalObject:
    """Concatenate instances, validate the geometry and compute the canonical transform."""
    meshes = [(np.asarray(geom.vertices, np.float64), np.asarray(geom.faces), transform,
               np.asarray(geom.vertex_normals, np.float64)) for _, _, geom, transform in triangle_instances(scene)]
    if not meshes:
        raise MeshRejected("validate", "no triangles")
    total = sum(len(m[1]) for m in meshes)
    if total > max_faces:
        raise MeshRejected("validate", f"over the {max_faces} faces cap", f"{total} faces after instancing")
    if total < min_faces:
        raise MeshRejected("select", "fewer faces than --min-faces", f"{total} < {min_faces}")
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
        raise MeshRejected("validate", "absurd size: huge coordinates", f"coordinates up to {np.abs(v).max():.3g}")
    used = np.unique(f)
    lo, hi = v[used].min(axis=0), v[used].max(axis=0)
    if (hi - lo).max() < MIN_EXTENT:
        raise MeshRejected("validate", "absurd size: no extent", f"extent {(hi - lo).max():.3g}")
    if normalise == "bbox":
        centre = (lo + hi) / 2
        radius = np.linalg.norm(v[used] - centre, axis=1).max()
    elif normalise == "bulk":
        centre, radius = bulk_frame(v, f)
        if radius < MIN_EXTENT * 0.5:
            centre, radius = (lo + hi) / 2, np.linalg.norm(v[used] - (lo + hi) / 2, axis=1).max()
    else:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    scale = 0.5 / radius
    to_canonical = np.diag([scale, scale, scale, 1.0])
    to_canonical[:3, 3] = -centre * scale
    n = np.concatenate(normals)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    mesh = trimesh.Trimesh((v - centre) * scale, f, vertex_normals=n, process=False)
    area = mesh.area_faces
    if not np.isfinite(area).all() or area.sum() <= 0:
        raise MeshRejected("validate", "all triangles are degenerate (zero area)")
    far = np.linalg.norm(mesh.triangles_center, axis=1) > 0.5 + 1e-9
    outside = float(area[far].sum() / area.sum())
    cut = np.linalg.norm(mesh.triangles_center, axis=1) > STRAY_RADIUS
    if cut.any():  # only "bulk" leaves faces out there: stray specks, dropped from what is rendered
        mesh = _keep_faces(mesh, ~cut)
        scene = _drop_far_faces(scene, to_canonical, STRAY_RADIUS)
    return CanonicalObject(uid=uid, scene=scene, to_canonical=to_canonical, mesh=mesh, outside=outside)


def _keep_faces(mesh: trimesh.Trimesh, keep: np.ndarray) -> trimesh.Trimesh:
    """The faces ``keep`` (bool [M]) of a mesh, unreferenced vertices (and their normals) removed."""
    f = mesh.faces[keep]
    used, inverse = np.unique(f, return_inverse=True)
    return trimesh.Trimesh(mesh.vertices[used], inverse.reshape(f.shape),
                           vertex_normals=np.asarray(mesh.vertex_normals)[used], process=False)


def _drop_far_faces(scene: trimesh.Scene, to_canonical: np.ndarray, radius: float) -> trimesh.Scene:
    """A flat copy of ``scene`` (one node per instance, world transforms, materials kept) without
    the faces whose centre lies beyond ``radius`` in the canonical frame."""
    out = trimesh.Scene()
    for node, name, geom, transform in triangle_instances(scene):
        centres = geom.triangles_center @ (to_canonical @ transform)[:3, :3].T + (to_canonical @ transform)[:3, 3]
        keep = np.linalg.norm(centres, axis=1) <= radius
        if keep.all():
            out.add_geometry(geom, node_name=node, geom_name=name, transform=transform)
        elif keep.any():
            part = geom.copy()
            part.update_faces(keep)
            part.remove_unreferenced_vertices()
            out.add_geometry(part, node_name=node, geom_name=f"{name}:{node}", transform=transform)
    return out


def load_object(uid: str, path: str | os.PathLike, max_file_mb: float, max_faces: int,
                max_texture_px: int, normalise: str = "bulk", min_faces: int = 0) -> CanonicalObject:
    """load_scene + canonicalise."""
    return canonicalise(uid, load_scene(path, max_file_mb, max_faces, max_texture_px), max_faces, normalise,
                        min_faces)
