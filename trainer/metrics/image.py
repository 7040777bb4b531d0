"""PSNR and SSIM restricted to a region (the hand-object mask = union of the MLO layers).

Images are float tensors [N, 3, H, W] in [0, 1]; mask [N, 1, H, W] in {0, 1}. SSIM uses the
standard 11x11 Gaussian window (sigma 1.5, Wang et al. 2004) on the full image and averages
its map over the mask, so context just outside the region still shapes the local statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB over the masked pixels (all channels); inf if identical, nan if the mask is empty."""
    err = (pred.float() - target.float()).square()
    if mask is None:
        mse = err.mean()
    else:
        m = mask.float().expand_as(err)
        if m.sum() == 0:
            return float("nan")
        mse = (err * m).sum() / m.sum()
    return float("inf") if mse == 0 else float(10 * torch.log10(1.0 / mse))


def _gaussian(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM [N, 1, H, W] (mean over channels), reflect-padded to keep the size."""
    c = pred.shape[1]
    w = _gaussian(device=pred.device).expand(c, 1, -1, -1)
    pad = w.shape[-1] // 2

    def blur(x):
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), w, groups=c)

    x, y = pred.float(), target.float()
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=1, keepdim=True)


def masked_ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    s = ssim_map(pred, target)
    if mask is None:
        return float(s.mean())
    m = mask.float()
    return float((s * m).sum() / m.sum()) if m.sum() > 0 else math.nan
