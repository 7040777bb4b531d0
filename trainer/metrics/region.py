"""The hand-object region (what the paper scores its region metrics on).

The region of a clip is the square box around the union over all frames of its hand-object mask
(union of the stored MLO layers, ``trainer.conditions.prepare_batch``'s ``mask``), widened by
``margin`` of its side on each side and clipped to the image; when the mask is empty it is the
whole frame. One box per clip, so the crop does not jitter from frame to frame (FVD sees a
steady crop). Crops are resized to ``size`` x ``size`` for the network metrics (bilinear,
antialiased); PSNR / SSIM on the region use the mask itself (``trainer.metrics.image``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def region_box(mask: torch.Tensor, margin: float = 0.1) -> tuple[int, int, int, int]:
    """mask [F, 1, H, W] -> (y0, y1, x0, x1) of the clip's square hand-object box (pixels, end exclusive)."""
    h, w = mask.shape[-2:]
    m = mask.reshape(-1, h, w).amax(dim=0) > 0
    if not bool(m.any()):
        return 0, h, 0, w
    ys, xs = torch.nonzero(m, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = min(max(y1 - y0, x1 - x0) * (1 + 2 * margin), h, w)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    s = int(round(side))
    return y0, y0 + s, x0, x0 + s


def crop(video: torch.Tensor, box: tuple[int, int, int, int], size: int | None = None) -> torch.Tensor:
    """video [F, 3, H, W] -> the box, resized to size x size when given."""
    y0, y1, x0, x1 = box
    out = video[..., y0:y1, x0:x1]
    if size is not None and out.shape[-1] != size:
        out = F.interpolate(out.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out
