"""LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018), written here: no torchvision, no download.

Same computation and parameter names as the ``lpips`` package (``LPIPS(net="alex", version="0.1")``):
inputs in [-1, 1] go through the scaling layer, AlexNet's five ReLU outputs are unit-normalised
over channels, squared differences are weighted by the 1 x 1 linear layers ``lin0..lin4``,
averaged over space and summed over layers. Weights, both local files:

* trunk: torchvision's ImageNet AlexNet ``alexnet-owt-7be5be79.pth`` (``features.*`` keys are used);
* linear layers: the lpips package's ``weights/v0.1/alex.pth`` (keys ``lin{k}.model.1.weight``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

TRUNK_NAME = "alexnet-owt-7be5be79.pth"
TRUNK_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LIN_NAME = "alex.pth"
LIN_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
CHANNELS = (64, 192, 384, 256, 256)
TAPS = (1, 4, 7, 9, 11)  # ReLU outputs of torchvision's alexnet().features


class _Lin(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))


class LPIPS(nn.Module):
    """``LPIPS(trunk, lin)(a, b)``: a, b [N, 3, H, W] in [0, 1] -> distance [N] (0 for identical images).
    ``trunk`` / ``lin`` None: random initialisation (tests only)."""

    def __init__(self, trunk: str | Path | None = None, lin: str | Path | None = None):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
        for k, c in enumerate(CHANNELS):
            setattr(self, f"lin{k}", _Lin(c))
        if lin is None:  # random init: non-negative weights, as trained LPIPS layers are
            with torch.no_grad():
                for k in range(5):
                    w = getattr(self, f"lin{k}").model[1].weight
                    w.copy_(w.abs())
        if trunk is not None:
            state = torch.load(trunk, map_location="cpu", weights_only=True)
            self.features.load_state_dict({k[len("features."):]: v for k, v in state.items()
                                           if k.startswith("features.") and int(k.split(".")[1]) <= TAPS[-1]})
        if lin is not None:
            state = torch.load(lin, map_location="cpu", weights_only=True)
            self.load_state_dict({k: v for k, v in state.items() if k.startswith("lin")}, strict=False)
            missing = [f"lin{k}.model.1.weight" for k in range(5) if f"lin{k}.model.1.weight" not in state]
            if missing:
                raise ValueError(f"{lin} is not an LPIPS linear-layer file (missing {missing[0]})")
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        xa, xb = ((t.float() * 2 - 1 - self.shift) / self.scale for t in (a, b))
        total = torch.zeros(a.shape[0], device=a.device)
        k = 0
        for i, layer in enumerate(self.features):
            xa, xb = layer(xa), layer(xb)
            if i in TAPS:
                na = xa / (xa.square().sum(1, keepdim=True).sqrt() + 1e-10)
                nb = xb / (xb.square().sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + getattr(self, f"lin{k}").model((na - nb).square()).mean(dim=(1, 2, 3))
                k += 1
        return total
