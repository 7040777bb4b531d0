"""The latent space the denoiser works in: SD's VAE (``latent=vae``) or exact pixel patches (``latent=pixels``).

Why the tiny preset uses pixel patches. On CPU the model must be small and train in minutes,
and a figure that says whether *training* works must not be drowned by the latent space's own
error. A random VAE round-trips at ~9.5 dB (nothing a sample shows can be judged through it);
a VAE trained for a few CPU minutes adds its own blur and its own training budget. A fixed,
invertible latent has neither problem: ``pixel_unshuffle`` by ``p`` folds each p x p patch of
the [-1, 1] image into 3 p^2 channels (64 px, p = 4: 16 x 16 x 48), so decode(encode(x)) == x
up to float rounding (well above the 28 dB target: uint8 frames come back exactly) and every
error in a sample is the diffusion model's. This is pixel-space diffusion on patches (as in
"simple diffusion" and patch-based pixel DiTs); the sd15 preset keeps SD1.5's VAE.

Both codecs have the same interface, so the model does not care which it holds:
``encode(x).latent_dist.mean`` -> [N, C, R/f, R/f], ``decode(z).sample`` -> [N, 3, R, R]
(x in [-1, 1]; the trainer multiplies latents by ``vae_scale`` after encoding). Both are
diffusers ModelMixin classes, so checkpoints and ``save_pretrained`` exports carry them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class PixelLatent(ModelMixin, ConfigMixin):
    """Exact patch latent: [N, 3, R, R] <-> [N, 3 p^2, R/p, R/p] by pixel (un)shuffle. No weights.

    A diffusers model with no parameters cannot report a dtype, so it carries a zero-size buffer.
    """

    @register_to_config
    def __init__(self, patch: int = 4, in_channels: int = 3):
        super().__init__()
        self.register_buffer("_dtype_probe", torch.zeros(0), persistent=False)

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.patch ** 2

    def encode(self, x: torch.Tensor):
        z = F.pixel_unshuffle(x, self.config.patch)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z, mode=lambda: z))

    def decode(self, z: torch.Tensor):
        return SimpleNamespace(sample=F.pixel_shuffle(z, self.config.patch))


def latent_factor(cfg) -> int:
    """Image pixels per latent pixel along one axis: the VAE's 2^(levels-1) or the patch size."""
    if cfg.latent == "pixels":
        return cfg.latent_patch
    return 2 ** (len(cfg.vae_block_out_channels) - 1)


def latent_channels(cfg) -> int:
    return 3 * cfg.latent_patch ** 2 if cfg.latent == "pixels" else 4


def vae_config(cfg) -> dict:
    """A random-init AutoencoderKL's config (tiny: a small one; sd15: SD1.5's layout)."""
    n = len(cfg.vae_block_out_channels)
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(cfg.vae_block_out_channels),
                down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                layers_per_block=cfg.vae_layers_per_block, norm_num_groups=min(32, cfg.vae_block_out_channels[0]),
                sample_size=cfg.resolution)


def build_codec(cfg):
    """A fresh codec for ``cfg`` (random-init VAE; the pretrained one is loaded by trainer.model)."""
    if cfg.latent == "pixels":
        return PixelLatent(patch=cfg.latent_patch)
    return AutoencoderKL(**vae_config(cfg))


def codec_class_name(codec) -> str:
    return type(codec).__name__


def codec_from_config(config: dict, class_name: str = "AutoencoderKL"):
    """Rebuild a codec from a checkpoint's ``arch`` (weights come after)."""
    if class_name == "PixelLatent":
        return PixelLatent.from_config(config)
    return AutoencoderKL.from_config(config)


def codec_from_folder(folder: str | Path):
    """Load the codec of an export folder (``vae/``), whichever class wrote it."""
    folder = Path(folder)
    name = json.loads((folder / "config.json").read_text()).get("_class_name", "AutoencoderKL")
    return PixelLatent.from_pretrained(folder) if name == "PixelLatent" else AutoencoderKL.from_pretrained(folder)
