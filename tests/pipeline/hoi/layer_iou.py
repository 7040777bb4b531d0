"""Do a stored sample's MLO layers sit on its image? The union of the layers of a frame against
the pixels the demo scene draws there (``demo.foreground``), mapped into the sample's crop."""

from __future__ import annotations

import numpy as np


def crop_mask(mask: np.ndarray, K_source: np.ndarray, K_crop: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
    """(truth [R,R] bool, inside [R,R] bool) of a full-image mask [H,W] seen through the crop.
    ``K_source``: the adapter's K (OpenCV, pixel i's centre at i); ``K_crop``: the stored K (pixel
    j's centre at j + 0.5). Each crop pixel takes the nearest source pixel of its ray; ``inside``
    marks crop pixels whose source pixel is on the image."""
    H, W = mask.shape
    j = np.arange(R) + 0.5
    u = np.rint(K_source[0, 0] * (j - K_crop[0, 2]) / K_crop[0, 0] + K_source[0, 2]).astype(int)
    v = np.rint(K_source[1, 1] * (j - K_crop[1, 2]) / K_crop[1, 1] + K_source[1, 2]).astype(int)
    ok_u, ok_v = (u >= 0) & (u < W), (v >= 0) & (v < H)
    truth = mask[np.clip(v, 0, H - 1)][:, np.clip(u, 0, W - 1)]
    inside = ok_v[:, None] & ok_u[None, :]
    return truth & inside, inside


def layer_iou(depth: np.ndarray, mask: np.ndarray, K_source: np.ndarray, K_crop: np.ndarray) -> float:
    """IoU of the union of a frame's layers (``mlo_depth[t]`` [L,R,R] > 0) and the truth mask,
    over crop pixels on the image."""
    R = depth.shape[-1]
    layers = (np.asarray(depth, np.float32) > 0).any(axis=0)
    truth, inside = crop_mask(mask, K_source, K_crop, R)
    layers &= inside
    union = (layers | truth).sum()
    return float((layers & truth).sum() / union) if union else 1.0
