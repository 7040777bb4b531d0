"""Occlusion confidence D, derived from per-layer depth (never stored).

For layer k covering pixel p, ``D_k(p) = exp(-(z_k(p) - z_front(p)) / tau)`` where
``z_front(p)`` is the nearest depth over all layers at p; ``D_k(p) = 0`` where layer k is
absent (depth 0). So the front-most layer at a pixel gets 1, a layer hidden ``tau`` behind
it gets 1/e. This is the one definition; the trainer and the previews call it.
"""

from __future__ import annotations

import numpy as np

DEFAULT_TAU = 0.02  # metres: a finger ~2 cm behind the object surface is at 1/e confidence


def occlusion_confidence(depth, tau: float = DEFAULT_TAU, layer_axis: int = -3):
    """Occlusion confidence from per-layer depth.

    Args:
        depth: [..., L, H, W] float array (numpy or torch), positive camera z-depth;
            0 where the layer is absent. ``layer_axis`` says which axis is L.
        tau: softness in the depth's unit (metres for HOI, scene units for Objaverse).

    Returns:
        Same shape and array type as ``depth`` (float32 for numpy), values in [0, 1].
    """
    if tau <= 0:
        raise ValueError("tau must be > 0")
    if isinstance(depth, np.ndarray):
        z = depth.astype(np.float32, copy=False)
        present = z > 0
        far = np.where(present, z, np.inf)
        front = far.min(axis=layer_axis, keepdims=True)
        gap = np.where(present, z - np.where(np.isfinite(front), front, 0), 0)
        return np.where(present, np.exp(-gap / tau), 0).astype(np.float32)
    import torch  # torch tensors: same formula, differentiable-free, on the tensor's device

    z = depth.float()
    present = z > 0
    far = torch.where(present, z, torch.full_like(z, float("inf")))
    front = far.amin(dim=layer_axis, keepdim=True)
    front = torch.where(torch.isfinite(front), front, torch.zeros_like(front))
    gap = torch.where(present, z - front, torch.zeros_like(z))
    return torch.where(present, torch.exp(-gap / tau), torch.zeros_like(z))
