"""The condition encoders diffusers does not have: pose guider G, MLO embedding E_F, geometry E_N.

All three start with a zero output: G's last conv is zero, and the token MLPs end in a zero
Linear, so at init the UNet sees the noisy latent unchanged and all-zero condition tokens. With
zero tokens a cross-attention's keys and values are zero (SD's to_k/to_v have no bias), so it
adds only its output projection's bias: the model at init is the base UNet run with an all-zero
context. For a randomly initialised UNet that is simply its starting point. For a pretrained
SD1.5 it is *not* SD's unconditional model (SD was trained with the CLIP embedding of the empty
prompt, not zeros), so the first steps also adapt the UNet to the new context; nothing here
claims otherwise.
They are diffusers ModelMixin/ConfigMixin classes, so ``save_pretrained`` exports them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

SKELETON_CHANNELS = 3  # the skeleton map S is an RGB image (OpenPose colours), in [0, 1]


class PoseGuider(ModelMixin, ConfigMixin):
    """G: image-space MLO normals H -> latent-resolution features (zero at init). Four conv layers.

    The paper follows Animate Anyone's guider: "four convolution layers (4x4 kernels, 2x2 strides,
    16, 32, 64, 128 channels)". Four 2x2-strided convs would downsample 16x, but SD's latent is
    1/8 of the image, so here the first log2(downscale) convs are 4x4 with stride 2 and the rest
    3x3 with stride 1; the fourth conv is the zero-initialised output, whose width is what it
    feeds (the latent channels for eq. 1, conv_in's width after conv_in), not 128. The default
    ``channels`` (16, 32, 64) + the output conv = the paper's four layers.

    The skeleton guider G_1 of human items (paper eq. 5, z''_t = z_t + G_1(S)) is this same
    class with ``in_channels = SKELETON_CHANNELS``: same structure, its own weights.

    forward: cond [N, in_channels, R, R] float -> [N, out_channels, R/downscale, R/downscale].
    """

    @register_to_config
    def __init__(self, in_channels: int = 39, out_channels: int = 4, channels: tuple = (16, 32, 64),
                 downscale: int = 8):
        super().__init__()
        n_down = int(round(math.log2(downscale)))
        if 2 ** n_down != downscale or n_down > len(channels):
            raise ValueError(f"a {len(channels) + 1}-conv guider cannot downscale by {downscale}")
        layers, c = [], in_channels
        for i, width in enumerate(channels):
            conv = (nn.Conv2d(c, width, 4, stride=2, padding=1) if i < n_down
                    else nn.Conv2d(c, width, 3, padding=1))
            layers += [conv, nn.SiLU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.body(cond))


def _conv_stem(in_channels: int, width: int) -> nn.Sequential:
    """Three stride-2 3x3 convs (R -> R/8), enough context per token before pooling to the grid."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width // 4, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(width // 4, width // 2, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.SiLU(),
    )


class _TokenHead(nn.Module):
    """Grid features [N, C, g, g] (+ optional per-sample vector) -> tokens [N, g*g, dim]; zero at init."""

    def __init__(self, in_features: int, dim: int, grid: int):
        super().__init__()
        self.inp = nn.Linear(in_features, dim)
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, dim))  # where on the image a token comes from
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.inp(feats) + self.pos))


class MLOEmbedding(ModelMixin, ConfigMixin):
    """E_F = MLP(Conv[H, D]): per-frame MLO tokens for cross-attention.

    forward: x [N, in_channels, R, R] (normals of the 13 layers in [-1, 1] and D in [0, 1])
    -> tokens [N, grid**2, dim] float.
    """

    @register_to_config
    def __init__(self, in_channels: int = 52, dim: int = 768, width: int = 128, grid: int = 16):
        super().__init__()
        self.stem = _conv_stem(in_channels, width)
        self.head = _TokenHead(width, dim, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.config.grid
        feats = F.adaptive_avg_pool2d(self.stem(x), g).flatten(2).transpose(1, 2)  # N, g*g, width
        return self.head(feats)


class GeometryEmbedding(ModelMixin, ConfigMixin):
    """E_N = MLP(Conv[H_o, P]): object-layer normals + a PointNet summary of the point cloud.

    forward: h_o [B*F, in_channels, R, R] (object normals), points [B, P, 6] (xyz + normal, canonical
    frame), frames F -> tokens [B*F, grid**2, dim]. PointNet = shared per-point MLP + max-pool, so
    the point order does not matter.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, dim: int = 768, width: int = 128, grid: int = 16):
        super().__init__()
        self.stem = _conv_stem(in_channels, width)
        self.pointnet = nn.Sequential(nn.Linear(6, width // 2), nn.SiLU(), nn.Linear(width // 2, width), nn.SiLU(),
                                      nn.Linear(width, width))
        self.head = _TokenHead(2 * width, dim, grid)

    def forward(self, h_o: torch.Tensor, points: torch.Tensor, frames: int = 1) -> torch.Tensor:
        g = self.config.grid
        feats = F.adaptive_avg_pool2d(self.stem(h_o), g).flatten(2).transpose(1, 2)  # B*F, g*g, width
        glob = self.pointnet(points).amax(dim=1)                                       # B, width
        glob = glob.repeat_interleave(frames, dim=0)[:, None].expand(-1, feats.shape[1], -1)
        return self.head(torch.cat([feats, glob], dim=-1))
