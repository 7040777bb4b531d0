"""A small z-buffer rasteriser of the tests' own (numpy), independent of the project's renderers:
ground-truth pictures and pixel labels for dataset layouts written from a toolkit's code.

Pixel convention: OpenCV's, as ARCTIC's toolkit projects (``K p / z``, pixel i's centre at i): a
pixel is covered when its centre (integer coordinates) lies inside a projected triangle (edges
included); depth is interpolated perspective-correctly (1/z linear on screen).
"""

from __future__ import annotations

import numpy as np


def project(K: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[N,2] pixels of camera points [N,3] (OpenCV: x right, y down, z forward), ``K p / z``."""
    q = np.asarray(p, np.float64) @ np.asarray(K, np.float64).T
    return q[:, :2] / q[:, 2:3]


def rasterise(pix: np.ndarray, z: np.ndarray, faces: np.ndarray, W: int, H: int,
              chunk: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """(depth [H,W] float64, inf where empty; face [H,W] int64, -1 where empty) of the triangles
    ``faces`` [F,3] over vertices at pixels ``pix`` [V,2] with camera depths ``z`` [V] (> 0; a
    triangle with a vertex behind the camera is dropped)."""
    tri = np.asarray(pix, np.float64)[faces]                        # F,3,2
    tz = np.asarray(z, np.float64)[faces]                           # F,3
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    lo = np.ceil(tri.min(axis=1)).astype(np.int64)
    hi = np.floor(tri.max(axis=1)).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [W - 1, H - 1])
    n = np.maximum(hi - lo + 1, 0)
    ok = (tz > 1e-6).all(axis=1) & (np.abs(area) > 1e-12) & (n > 0).all(axis=1) & np.isfinite(tri).all(axis=(1, 2))
    idx = np.flatnonzero(ok)
    counts = n[idx, 0] * n[idx, 1]
    best_z = np.full(H * W, np.inf)
    best_f = np.full(H * W, -1, np.int64)
    start = 0
    while start < len(idx):  # triangles in groups of at most ``chunk`` candidate pixels
        stop = start + max(1, int(np.searchsorted(np.cumsum(counts[start:]), chunk)))
        f, cnt = idx[start:stop], counts[start:stop]
        start = stop
        t = np.repeat(np.arange(len(f)), cnt)
        local = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        nx = n[f, 0][t]
        px = lo[f, 0][t] + local % nx
        py = lo[f, 1][t] + local // nx
        A, B, C = a[f][t], b[f][t], c[f][t]
        ar = area[f][t]
        wa = ((B[:, 0] - px) * (C[:, 1] - py) - (B[:, 1] - py) * (C[:, 0] - px)) / ar
        wb = ((C[:, 0] - px) * (A[:, 1] - py) - (C[:, 1] - py) * (A[:, 0] - px)) / ar
        wc = 1.0 - wa - wb
        inside = (wa >= -1e-9) & (wb >= -1e-9) & (wc >= -1e-9)
        zz = tz[f][t]
        depth = 1.0 / (wa / zz[:, 0] + wb / zz[:, 1] + wc / zz[:, 2])
        pixel = (py * W + px)[inside]
        depth, face = depth[inside], f[t][inside]
        order = np.lexsort((depth, pixel))
        pixel, depth, face = pixel[order], depth[order], face[order]
        first = np.ones(len(pixel), bool)
        first[1:] = pixel[1:] != pixel[:-1]
        pixel, depth, face = pixel[first], depth[first], face[first]
        nearer = depth < best_z[pixel]
        best_z[pixel[nearer]] = depth[nearer]
        best_f[pixel[nearer]] = face[nearer]
    return best_z.reshape(H, W), best_f.reshape(H, W)


def face_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F,3] unit normals (right-handed winding) of triangles over vertices ``v`` [V,3]."""
    t = np.asarray(v, np.float64)[faces]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
