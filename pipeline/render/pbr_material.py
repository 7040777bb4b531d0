"""A trimesh geometry's look as glTF metallic-roughness data for ``rgb_atlas`` (pure, no GL).

Conversion (glTF 2.0 spec 3.9; pyrender's ``Mesh.from_trimesh`` where the spec is silent):
  * ``PBRMaterial``: factors and textures as given; unset metallic/roughness factors are
    1.0 (the spec default), unset ``alphaMode`` is OPAQUE, ``alphaCutoff`` 0.5.
  * ``SimpleMaterial`` (OBJ/MTL): base colour = ``diffuse`` x ``image``, roughness from
    the specular exponent as pyrender does, ``(2 / (Ns + 2)) ** 0.25``; metallic 0 (an MTL
    diffuse surface is not a metal; pyrender leaves it at 1.0, which renders it dark).
  * vertex colours (COLOR_0, linear, multiply the base colour) with pyrender's default
    material for coloured meshes (base 1, metallic 0.2, roughness 0.8); face colours are
    unrolled to per-corner colours (pyrender drops them for smooth meshes).
  * no visual: pyrender's default grey (base 0.3, metallic 0.2, roughness 0.8).
Alpha: OPAQUE ignores alpha, MASK keeps fragments with alpha >= cutoff, BLEND blends.
Vertex colours with any alpha < 1 make an otherwise opaque coloured mesh BLEND.

Vertex layout: float32 [V, 12] = position (3), normal (3), uv (2, trimesh convention:
v up, image row 0 at v = 1), colour RGBA (4, linear 0..1); faces uint32 [F, 3].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh
from PIL import Image

OPAQUE, MASK, BLEND = 0, 1, 2
ALPHA_MODES = {"OPAQUE": OPAQUE, "MASK": MASK, "BLEND": BLEND}
TEXTURE_SLOTS = ("base", "metallic_roughness", "normal", "occlusion", "emissive")  # texture unit order


@dataclass
class Material:
    """glTF metallic-roughness parameters. Colours are linear floats in 0..1.

    ``textures``: slot name (``TEXTURE_SLOTS``) -> uint8 RGBA image [H, W, 4], rows top-down
    as stored in the file (base colour and emissive are sRGB-encoded, the others linear)."""

    base_color: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.3, 0.3, 1.0]))
    metallic: float = 0.2
    roughness: float = 0.8
    emissive: np.ndarray = field(default_factory=lambda: np.zeros(3))
    alpha_mode: int = OPAQUE
    alpha_cutoff: float = 0.5
    double_sided: bool = False
    textures: dict = field(default_factory=dict)


@dataclass
class Primitive:
    """One drawable: interleaved vertices float32 [V,12], faces uint32 [F,3], its material."""

    vertices: np.ndarray
    faces: np.ndarray
    material: Material


def _rgba(image) -> np.ndarray | None:
    """uint8 [H,W,4] of a PIL image or array (grey replicated, alpha 255 when absent)."""
    if image is None:
        return None
    if isinstance(image, Image.Image):
        if image.mode in ("I", "I;16", "F"):  # 16-bit / float: scale to 8 bits first
            a = np.asarray(image, np.float64)
            image = Image.fromarray(np.clip(a / max(a.max(), 1e-12) * 255, 0, 255).astype(np.uint8))
        return np.ascontiguousarray(np.asarray(image.convert("RGBA"), np.uint8))
    a = np.asarray(image)
    if np.issubdtype(a.dtype, np.floating):
        a = np.clip(a * 255.0, 0, 255)
    a = a.astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] == 2:
        a = np.concatenate([np.repeat(a[..., :1], 3, axis=2), a[..., 1:]], axis=2)
    if a.shape[2] == 3:
        a = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(a[..., :4])


def _colour(c, default) -> np.ndarray:
    """A colour/factor as float [n] in 0..1 (uint8 inputs are divided by 255)."""
    if c is None:
        return np.asarray(default, np.float64)
    a = np.asarray(c)
    return a.astype(np.float64) / 255.0 if np.issubdtype(a.dtype, np.integer) else a.astype(np.float64)


def _factor(x, default: float) -> float:
    return float(default if x is None else x)


def material_of(visual) -> Material:
    """The Material of a trimesh visual (see the module doc)."""
    kind = getattr(visual, "kind", None)
    if kind in ("vertex", "face"):
        return Material(base_color=np.ones(4), metallic=0.2, roughness=0.8)
    mat = getattr(visual, "material", None) if kind == "texture" else None
    if isinstance(mat, trimesh.visual.material.PBRMaterial):
        tex = {"base": mat.baseColorTexture, "metallic_roughness": mat.metallicRoughnessTexture,
               "normal": mat.normalTexture, "occlusion": mat.occlusionTexture, "emissive": mat.emissiveTexture}
        return Material(
            base_color=_colour(mat.baseColorFactor, [1, 1, 1, 1])[:4],
            metallic=_factor(mat.metallicFactor, 1.0), roughness=_factor(mat.roughnessFactor, 1.0),
            emissive=_colour(mat.emissiveFactor, [0, 0, 0])[:3],
            alpha_mode=ALPHA_MODES.get(str(mat.alphaMode or "OPAQUE").upper(), OPAQUE),
            alpha_cutoff=_factor(mat.alphaCutoff, 0.5), double_sided=bool(mat.doubleSided),
            textures={k: _rgba(v) for k, v in tex.items() if v is not None})
    if isinstance(mat, trimesh.visual.material.SimpleMaterial):
        ns = mat.kwargs.get("Ns", 1.0)
        ns = float(ns[0] if isinstance(ns, (list, tuple, np.ndarray)) else ns)
        base = _colour(mat.diffuse, [1, 1, 1, 1])
        base = np.concatenate([base, [1.0]])[:4] if len(base) == 3 else base[:4]
        return Material(base_color=base, metallic=0.0, roughness=(2 / (max(ns, 0.0) + 2)) ** 0.25,
                        textures={"base": _rgba(mat.image)} if mat.image is not None else {})
    return Material()


def primitive_of(geom: trimesh.Trimesh) -> Primitive:
    """Vertices, faces and material of one geometry (smooth vertex normals, as pyrender)."""
    material = material_of(geom.visual)
    v = np.asarray(geom.vertices, np.float64)
    f = np.asarray(geom.faces, np.int64)
    n = np.asarray(geom.vertex_normals, np.float64)
    uv = np.zeros((len(v), 2))
    col = np.ones((len(v), 4))
    kind = getattr(geom.visual, "kind", None)
    if kind == "texture":
        raw = getattr(geom.visual, "uv", None)
        if raw is not None and len(raw) == len(v):
            uv = np.asarray(raw, np.float64)[:, :2]
        else:
            material.textures = {}  # no texture coordinates: textures cannot be placed
    elif kind == "vertex":
        col = _colour(geom.visual.vertex_colors, [1, 1, 1, 1])
    elif kind == "face":  # unroll: every corner gets its face's colour
        fc = _colour(geom.visual.face_colors, [1, 1, 1, 1])
        v, n = v[f].reshape(-1, 3), n[f].reshape(-1, 3)
        uv, col = np.zeros((len(v), 2)), np.repeat(fc, 3, axis=0)
        f = np.arange(len(v)).reshape(-1, 3)
    if col.shape[1] == 3:
        col = np.concatenate([col, np.ones((len(col), 1))], axis=1)
    if material.alpha_mode == OPAQUE and kind in ("vertex", "face") and (col[:, 3] < 1).any():
        material.alpha_mode = BLEND
    uv = np.where(np.isfinite(uv), uv, 0.0)
    n = _usable_normals(n, v, f)
    verts = np.concatenate([v, n, uv, col[:, :4]], axis=1).astype(np.float32)
    return Primitive(np.ascontiguousarray(verts), np.ascontiguousarray(f, np.uint32), material)


def _usable_normals(n: np.ndarray, v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Vertex normals float [V,3] with NaN/zero ones replaced by the normal of a face using
    the vertex (the shader normalises; a zero normal would shade as NaN)."""
    n = np.where(np.isfinite(n), n, 0.0)
    bad = np.linalg.norm(n, axis=1) < 1e-12
    if bad.any() and len(f):
        tri = v[f]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n = n.copy()
        for corner in range(3):
            n[f[:, corner]] = np.where(bad[f[:, corner], None], fn, n[f[:, corner]])
        n[np.linalg.norm(n, axis=1) < 1e-12] = (0.0, 0.0, 1.0)
    return n
