"""FVD features: the Kinetics-400 I3D as the TorchScript file StyleGAN-V uses (``i3d_torchscript.pt``,
a faithful port of the TF-Hub I3D behind the original FVD). Loaded from a local path only.

Interface of that file (StyleGAN-V's convention): ``detector(videos, rescale=True, resize=True,
return_features=True)`` with videos [B, 3, T, H, W] float in [0, 255] -> features [B, 400]. Any
TorchScript module with that signature works (the tests script a small random 3D CNN).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

I3D_NAME = "i3d_torchscript.pt"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt"


class I3DFeatures:
    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.net = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor, batch: int = 8) -> np.ndarray:
        """videos [B, T, 3, H, W] in [0, 1] -> features [B, D] float64."""
        out = []
        for i in range(0, len(videos), batch):
            x = (videos[i:i + batch].float() * 255).permute(0, 2, 1, 3, 4).to(self.device)   # B, 3, T, H, W
            out.append(self.net(x, rescale=True, resize=True, return_features=True).double().cpu().numpy())
        return np.concatenate(out)
