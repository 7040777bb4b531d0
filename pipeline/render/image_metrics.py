"""Image agreement figures: PSNR and SSIM of uint8 RGB images (pure numpy/scipy).

SSIM is Wang et al. 2004 with the usual constants (Gaussian window sigma 1.5, truncated at
3.5 sigma = an 11-tap window, K1 0.01, K2 0.03, L 255), computed per channel and averaged,
over the whole image (the mean of the SSIM map).
"""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays of one shape (inf if identical)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 images [H,W,C] (or [H,W]), or of stacks [...,H,W,C] (mean over all)."""
    from scipy.ndimage import gaussian_filter

    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {x.shape} vs {y.shape}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    x, y = x.reshape((-1,) + x.shape[-3:]), y.reshape((-1,) + y.shape[-3:])
    sigma = (0, 1.5, 1.5, 0)  # blur rows and columns only, not images or channels

    def blur(z):
        return gaussian_filter(z, sigma, truncate=3.5)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
