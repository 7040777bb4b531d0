"""Procedural background images (O_B for Objaverse samples): smooth two-colour gradients."""

from __future__ import annotations

import numpy as np


def gradient_background(rng: np.random.Generator, resolution: int) -> np.ndarray:
    """uint8 [R,R,3]: a linear gradient between two muted random colours at a random angle,
    with a soft vignette. Smooth images keep lossless storage small."""
    c0, c1 = rng.uniform(40, 220, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    coords = (np.arange(resolution) + 0.5) / resolution - 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    t = np.clip(0.5 + (xx * np.cos(angle) + yy * np.sin(angle)), 0, 1)[..., None]
    vignette = 1 - 0.25 * (xx**2 + yy**2)[..., None]
    img = ((1 - t) * c0 + t * c1) * vignette
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
