"""YCB-like textured object models for the synthetic DexYCB demo, written as YCB ships them:
``models/<class>/textured_simple.obj`` + ``textured_simple.obj.mtl`` + ``texture_map.png``,
metres, origin at the object's centre."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _can(radius=0.034, height=0.1, n=48):
    """Cylinder along y with UVs (side wraps u, caps map to a small corner of the texture)."""
    verts, uvs, faces = [], [], []
    for ring, y in enumerate((-height / 2, height / 2)):
        for k in range(n + 1):
            a = 2 * np.pi * k / n
            verts.append((radius * np.cos(a), y, radius * np.sin(a)))
            uvs.append((k / n, 0.1 + 0.8 * ring))
    for k in range(n):
        a, b, c, d = k, k + 1, n + 1 + k + 1, n + 1 + k
        faces += [(a, c, b), (a, d, c)]
    for y, sgn in ((-height / 2, -1), (height / 2, 1)):
        centre = len(verts)
        verts.append((0, y, 0))
        uvs.append((0.05, 0.05))
        start = len(verts)
        for k in range(n):
            a = 2 * np.pi * k / n
            verts.append((radius * np.cos(a), y, radius * np.sin(a)))
            uvs.append((0.05 + 0.04 * np.cos(a), 0.05 + 0.04 * np.sin(a)))
        for k in range(n):
            i, j = start + k, start + (k + 1) % n
            faces.append((centre, i, j) if sgn > 0 else (centre, j, i))
    return np.array(verts), np.array(uvs), np.array(faces)


def _box(extents=(0.05, 0.15, 0.11)):
    ex = np.asarray(extents) / 2
    verts, uvs, faces = [], [], []
    for axis in range(3):
        for sign in (-1, 1):
            u_ax, v_ax = [a for a in range(3) if a != axis]
            base = len(verts)
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = np.zeros(3)
                p[axis], p[u_ax], p[v_ax] = sign * ex[axis], du * ex[u_ax], dv * ex[v_ax]
                verts.append(p)
                uvs.append(((du + 1) / 2, (dv + 1) / 2))
            quad = [(base, base + 1, base + 2), (base, base + 2, base + 3)]
            faces += quad if sign > 0 else [f[::-1] for f in quad]
    return np.array(verts), np.array(uvs), np.array(faces)


def _texture(kind: str, size=256) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == "can":
        img = np.zeros((size, size, 3))
        img[:] = (0.15, 0.25, 0.6)
        band = (y > 0.35) & (y < 0.65)
        img[band] = (0.9, 0.85, 0.7)
        img[band & ((x * 12) % 1 < 0.25)] = (0.75, 0.1, 0.1)
    else:
        img = np.zeros((size, size, 3))
        img[:] = (0.95, 0.8, 0.1)
        img[((x * 6).astype(int) + (y * 6).astype(int)) % 2 == 0] = (0.85, 0.2, 0.15)
    return Image.fromarray((img * 255).astype(np.uint8))


SHAPES = {"002_master_chef_can": ("can", _can), "003_cracker_box": ("box", _box)}


def write_model(models_dir: Path, ycb_class: str) -> Path:
    """Write one YCB-like model folder; returns the .obj path."""
    kind, fn = SHAPES[ycb_class]
    v, uv, f = fn()
    folder = Path(models_dir) / ycb_class
    folder.mkdir(parents=True, exist_ok=True)
    _texture(kind).save(folder / "texture_map.png")
    (folder / "textured_simple.obj.mtl").write_text(
        "newmtl material_0\nKa 0.2 0.2 0.2\nKd 1 1 1\nKs 0 0 0\nmap_Kd texture_map.png\n")
    lines = ["mtllib textured_simple.obj.mtl", "usemtl material_0"]
    lines += [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
    lines += [f"vt {a:.6f} {b:.6f}" for a, b in uv]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in f]
    path = folder / "textured_simple.obj"
    path.write_text("\n".join(lines) + "\n")
    return path
