"""Background references of hand-object datasets: a per-pixel median over frames of the
sequence, each pixel using only the frames where nothing that moves covers it.

``masked_median`` is the median itself; ``median_reference`` turns frames + keep masks into
the reference (large frames in row chunks, pixels never uncovered copied from the nearest
pixel that was); ``coverage_mask`` draws what may cover a pixel from projected 3D points
(for datasets without segmentation, e.g. ARCTIC); ``window_reference`` is a moving camera's
reference for one window (OakInk2's egocentric view, HOT3D's headset).
"""

from __future__ import annotations

import numpy as np


def masked_median(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Median over axis 0 of ``values`` [N,...] using only entries where ``keep``; NaN where none.
    (A sort with the dropped entries pushed to the end; much faster than np.nanmedian.)"""
    v = np.where(keep, values, np.inf).astype(np.float32)
    v.sort(axis=0)
    n = keep.sum(axis=0)
    lo = np.take_along_axis(v, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(v, np.maximum(n // 2, 0)[None], axis=0)[0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


def median_reference(imgs: np.ndarray, keep: np.ndarray, chunk_rows: int = 256) -> np.ndarray:
    """uint8 [H,W,3] from frames ``imgs`` uint8 [N,H,W,3] and ``keep`` bool [N,H,W] (pixel shows
    the background): the masked median; where no frame keeps a pixel, the nearest pixel that
    has one (all frames' plain median if none has)."""
    H = imgs.shape[1]
    med = np.empty(imgs.shape[1:], np.float32)
    for r in range(0, H, chunk_rows):
        sl = slice(r, r + chunk_rows)
        med[sl] = masked_median(imgs[:, sl].astype(np.float32), np.broadcast_to(keep[:, sl, :, None], imgs[:, sl].shape))
    hole = np.isnan(med).any(axis=-1)
    if hole.all():
        med = np.median(imgs, axis=0)
    elif hole.any():
        from scipy.ndimage import distance_transform_edt

        _, (iy, ix) = distance_transform_edt(hole, return_indices=True)
        med = med[iy, ix]
    return np.clip(med + 0.5, 0, 255).astype(np.uint8)


def coverage_mask(groups: list[tuple[np.ndarray, float]], K: np.ndarray, W: int, H: int) -> np.ndarray:
    """bool [H,W]: for each (points [N,3] OpenCV camera frame m, pad m), the convex hull of the
    projected points grown by ``pad`` (projected at the nearest point's depth); a single point
    gives a disc. K [3,3], pixel centres at integers."""
    from PIL import Image, ImageDraw
    from scipy.spatial import ConvexHull, QhullError

    img = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(img)
    for pts, pad in groups:
        p = pts[pts[:, 2] > 1e-3]
        if not len(p):
            continue
        uv = p[:, :2] / p[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
        r = K[0, 0] * pad / p[:, 2].min()
        try:
            uv = uv[ConvexHull(uv).vertices]
            ring = [tuple(x) for x in uv]
            draw.polygon(ring, fill=255)
            draw.line(ring + ring[:1], fill=255, width=int(2 * r) + 1)
        except (QhullError, ValueError):  # fewer than 3 points / degenerate: discs only
            pass
        for u, w in uv:
            draw.ellipse([u - r, w - r, u + r, w + r], fill=255)
    return np.asarray(img) > 0


HAND_PAD_M, OBJECT_PAD_M = 0.01, 0.005   # window_reference: margins around hands / object parts


def window_reference(clip, hand_models: dict, frames: int = 9) -> np.ndarray:
    """A moving camera's reference for one window of ``clip`` (a ``ClipData``, with the hand
    models that made its parameters): per-pixel median over up to ``frames`` of the
    window's frames, masking each frame's hands (hull of their vertices + ``HAND_PAD_M``) and
    object parts (+ ``OBJECT_PAD_M``); pixels covered in all take the nearest uncovered one."""
    T, H, W = clip.images.shape[:3]
    pick = np.unique(np.linspace(0, T - 1, min(T, frames)).round().astype(int))
    hand_v = {s: hand_models[s].forward(h.pose[pick], h.betas, h.trans[pick])[0] for s, h in clip.hands.items()}
    keep = np.ones((len(pick), H, W), bool)
    for k, t in enumerate(pick):
        groups = [(hand_v[s][k][::4], HAND_PAD_M) for s, h in clip.hands.items() if h.valid[t]]
        if clip.object_valid[t]:
            for p in clip.object_parts or []:
                v = p.vertices[:: max(1, len(p.vertices) // 500)]
                groups.append((v @ p.poses[t][:3, :3].T + p.poses[t][:3, 3], OBJECT_PAD_M))
        keep[k] = ~coverage_mask(groups, clip.K, W, H)
    return median_reference(clip.images[pick], keep)
