"""ManiVideoModel: frozen VAE + denoising UNet + AppearanceNet + G, E_F, E_N (+ G_1 on S, motion modules).

Everything but our three small encoders is diffusers: AutoencoderKL, UNet2DConditionModel
(stage 1), UNetMotionModel.from_unet2d + MotionAdapter (stage 2). ``sd15`` loads local
weights when ``pretrained_sd15`` / ``motion_adapter_path`` are set and is otherwise randomly
initialised from the SD1.5 layout written here (never a hub download).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path

import torch
import torch.utils.checkpoint
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from torch import nn

from pipeline.errors import UserError
from trainer.condition_attention import GeometryAttention, attach_condition_attention
from trainer.conditions import condition_channels
from trainer.config import TrainConfig
from trainer.embeddings import SKELETON_CHANNELS, GeometryEmbedding, MLOEmbedding, PoseGuider
from trainer.latents import PixelLatent, build_codec, latent_channels, latent_factor
from trainer.reference_attention import ReferenceBank, attach_reference_attention


class _EmptyFp32Note(logging.Filter):
    """diffusers warns on every ``UNetMotionModel.to(dtype)`` that modules "should be kept in float32: []"
    (its list is empty, not None); only that empty note is dropped, a real list still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_EmptyFp32Note())

VAE_CHUNK = 8  # images per VAE call: the encoder's activations at 512^2 are ~0.3 GB an image


class _CheckpointedForward:
    """Mixin: run the module's forward under non-reentrant activation checkpointing while grad is on."""

    def forward(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(super().forward, *args, use_reentrant=False, **kwargs)
        return super().forward(*args, **kwargs)


_CHECKPOINTED: dict[type, type] = {}


def checkpoint_motion_modules(unet) -> int:
    """Checkpoint the AnimateDiff motion modules of ``unet``'s down and up blocks (diffusers
    checkpoints the resnets and spatial transformers there, not the motion modules; its mid
    block checkpoints its own). Swaps each module's class for a checkpointed subclass, so
    parameter names, state dicts and ``copy.deepcopy`` are unchanged. Returns how many were wrapped."""
    n = 0
    for block in [*unet.down_blocks, *unet.up_blocks]:
        for m in getattr(block, "motion_modules", []):
            cls = type(m)
            if issubclass(cls, _CheckpointedForward):
                continue
            if cls not in _CHECKPOINTED:
                _CHECKPOINTED[cls] = type(f"Checkpointed{cls.__name__}", (_CheckpointedForward, cls), {})
            m.__class__ = _CHECKPOINTED[cls]
            n += 1
    return n


def unet_config(cfg: TrainConfig) -> dict:
    """SD1.5's UNet layout (cfg sd15) or a two-level miniature of it (cfg tiny), over the latent space
    ``cfg.latent`` gives (trainer.latents: 4 VAE channels, or 3 p^2 pixel-patch channels)."""
    n = len(cfg.block_out_channels)
    c = latent_channels(cfg)
    return dict(sample_size=cfg.resolution // latent_factor(cfg), in_channels=c,
                out_channels=c, block_out_channels=tuple(cfg.block_out_channels),
                down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
                layers_per_block=cfg.layers_per_block, attention_head_dim=cfg.attention_head_dim,
                norm_num_groups=cfg.norm_num_groups, cross_attention_dim=cfg.cross_attention_dim)


def _local(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{what} folder {p} does not exist (weights are only read from local folders)")
    return p


def build_backbones(cfg: TrainConfig) -> tuple[AutoencoderKL | PixelLatent, UNet2DConditionModel]:
    """Latent codec and denoising UNet, from ``pretrained_sd15`` (unet/, vae/ subfolders) or random init
    (``latent=pixels``: the exact pixel-patch codec, trainer.latents)."""
    if cfg.pretrained_sd15:
        root = _local(cfg.pretrained_sd15, "pretrained_sd15")
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True)
        if unet.config.cross_attention_dim != cfg.cross_attention_dim:
            raise UserError(f"cross_attention_dim {cfg.cross_attention_dim} != the checkpoint's "
                            f"{unet.config.cross_attention_dim}")
        return vae, unet
    return build_codec(cfg), UNet2DConditionModel(**unet_config(cfg))


def build_motion_adapter(cfg: TrainConfig) -> MotionAdapter:
    if cfg.motion_adapter_path:
        return MotionAdapter.from_pretrained(_local(cfg.motion_adapter_path, "motion_adapter_path"),
                                             local_files_only=True)
    adapter = MotionAdapter(block_out_channels=tuple(cfg.block_out_channels),
                            motion_layers_per_block=cfg.layers_per_block, motion_num_attention_heads=cfg.motion_heads,
                            motion_norm_num_groups=cfg.norm_num_groups, motion_max_seq_length=max(32, cfg.frames))
    # Zero output projection: stage 2 starts as exactly the stage-1 image model, frame by frame.
    for name, p in adapter.named_parameters():
        if "proj_out" in name:
            nn.init.zeros_(p)
    return adapter


class ManiVideoModel(nn.Module):
    """The whole denoiser. Shapes: B samples, F frames (1 in stage 1), V reference images, R image side,
    h = R / 8 latent side, N tokens."""

    def __init__(self, cfg: TrainConfig, vae: AutoencoderKL, unet: UNet2DConditionModel):
        super().__init__()
        self.cfg = cfg
        self.vae = vae.requires_grad_(False)
        self.unet = unet
        self.reference_unet = copy.deepcopy(unet)  # AppearanceNet starts from the same weights (Animate Anyone)
        # What comes after the last writer (the last transformer block's attn1 input) never feeds
        # a reader: freeze it, so DDP sees no unused gradients. Everything before, including the
        # last up block's resnets and norm1, does feed the readers and trains.
        last_attn = self.reference_unet.up_blocks[-1].attentions[-1]
        last_block = last_attn.transformer_blocks[-1]
        frozen = [self.reference_unet.conv_norm_out, self.reference_unet.conv_out, last_attn.proj_out]
        frozen += [m for name, m in last_block.named_children() if name != "norm1"]
        for m in frozen:
            if m is not None:
                m.requires_grad_(False)
        c_h, c_f, c_o = condition_channels(cfg.mlo_mode)
        latent_c = unet.config.in_channels
        out_c = latent_c if cfg.pose_guider_mode == "latent" else unet.config.block_out_channels[0]
        down = latent_factor(cfg)
        self.pose_guider = PoseGuider(c_h, out_c, tuple(cfg.pose_guider_channels), down)
        # G_1 (eq. 5): the skeleton guider, zero output at init like G, so switching it on
        # leaves the model's prediction unchanged until it trains
        self.skeleton_guider = (PoseGuider(SKELETON_CHANNELS, out_c, tuple(cfg.pose_guider_channels), down)
                                if cfg.use_skeleton else None)
        d, w, g = cfg.cross_attention_dim, cfg.embed_channels, cfg.token_grid
        self.mlo_embed = MLOEmbedding(c_f, d, w, g) if c_f else None
        self.geo_embed = GeometryEmbedding(c_o, d, w, g)
        # E_N's own cross-attention projections (paper eqs. 2 and 4; trainer.condition_attention)
        self.geo_attention = GeometryAttention.for_unet(unet) if cfg.cond_attention == "separate" else None
        self.ref_context = nn.Parameter(torch.zeros(1, 1, d))  # the reference UNet's only cross-attn token
        self.bank = ReferenceBank()
        self._pose_residual = None
        self.reference_trainable = True
        self.checkpointing = False
        self.vae_chunk = VAE_CHUNK
        self._masters: dict[str, torch.Tensor] = {}  # fp32 CPU copies of the frozen weights held low
        self._wire()

    # --- wiring (re-done after the stage-2 conversion swaps the UNet) ---
    def _wire(self) -> None:
        attach_reference_attention(self.reference_unet, self.unet, self.bank)
        attach_condition_attention(self.unet, self.geo_attention, self.cfg.token_grid ** 2)
        if self.cfg.pose_guider_mode == "conv_in":
            self.unet.conv_in.register_forward_hook(self._add_pose_residual)
        if self.checkpointing:
            self.enable_gradient_checkpointing()

    def _add_pose_residual(self, module, inputs, output):
        return output if self._pose_residual is None else output + self._pose_residual.to(output.dtype)

    @property
    def is_video(self) -> bool:
        return isinstance(self.unet, UNetMotionModel)

    def to_stage2(self, adapter: MotionAdapter | None = None) -> None:
        """Add AnimateDiff motion modules; only they stay trainable."""
        adapter = adapter or build_motion_adapter(self.cfg)
        self.unet = UNetMotionModel.from_unet2d(self.unet, adapter)
        self._wire()
        self.requires_grad_(False)
        self.unet.freeze_unet2d_params()  # leaves exactly the motion modules trainable
        self.reference_trainable = False

    def motion_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if "motion_modules" in n]

    def enable_gradient_checkpointing(self) -> None:
        """diffusers' checkpointing of both UNets, plus the motion modules in stage 2 (also when
        ``to_stage2`` comes after this call)."""
        self.checkpointing = True
        self.unet.enable_gradient_checkpointing()
        self.reference_unet.enable_gradient_checkpointing()
        if self.is_video:
            checkpoint_motion_modules(self.unet)

    # --- frozen weights in low precision, with an fp32 master for checkpoints and exports ---
    def hold_frozen_in(self, dtype: torch.dtype) -> int:
        """Cast every parameter that does not train (the VAE, the reference net's unused tail; in
        stage 2 also both UNets and the encoders) to ``dtype``, for use under autocast of that
        dtype: it halves their memory and autocast would cast them to ``dtype`` for every matmul
        and conv anyway. Their float32 values are kept on the CPU: ``state_dict`` (checkpoints) and
        ``full_precision`` (exports) give those, so a pretrained VAE/UNet is never rounded on disk.
        Call after the model's final weights are loaded (``load_state_dict`` refreshes the copies
        anyway) and after ``to_stage2``. Returns the number of parameters cast."""
        n = 0
        for name, p in self.named_parameters():
            if p.requires_grad or p.dtype == dtype or not p.is_floating_point():
                continue
            if name not in self._masters:
                self._masters[name] = p.detach().to("cpu", torch.float32, copy=True)
            p.data = p.data.to(dtype)
            n += p.numel()
        return n

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """nn.Module's, with the float32 master of every weight ``hold_frozen_in`` cast."""
        sd = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for name, master in self._masters.items():
            if prefix + name in sd:
                sd[prefix + name] = master
        return sd

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        for name in self._masters:
            if name in state_dict:  # keep the exact values, not their low-precision copy
                self._masters[name] = state_dict[name].detach().to("cpu", torch.float32, copy=True)
        return out

    @contextlib.contextmanager
    def full_precision(self):
        """Within: the weights ``hold_frozen_in`` cast are their float32 masters (on the CPU), for
        ``save_pretrained``-style exports. Not for compute."""
        params = dict(self.named_parameters())
        held = {}
        try:
            for name, master in self._masters.items():
                held[name] = params[name].data
                params[name].data = master
            yield self
        finally:
            for name, data in held.items():
                params[name].data = data

    # --- VAE ---
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, R, R] in [-1, 1] -> latents [N, C, h, w] (scaled, mean of the posterior).
        At most ``vae_chunk`` images per VAE call (the VAE has no batch coupling: same result)."""
        vae_dtype = self.vae.dtype  # a codec with no weights (PixelLatent) has a dtype too
        out = [self.vae.encode(x.to(vae_dtype)).latent_dist.mean.float() for x in images.split(self.vae_chunk)]
        return torch.cat(out) * self.cfg.vae_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [N, C, h, w] -> images [N, 3, R, R] in [-1, 1], ``vae_chunk`` at a time."""
        vae_dtype = self.vae.dtype  # a codec with no weights (PixelLatent) has a dtype too
        out = [self.vae.decode((z / self.cfg.vae_scale).to(vae_dtype)).sample.float()
               for z in latents.split(self.vae_chunk)]
        return torch.cat(out).clamp(-1, 1)

    # --- conditions ---
    def tokens(self, cond: dict) -> torch.Tensor:
        """Cross-attention tokens [B*F, N, C] from E_F (MLO) and E_N (geometry)."""
        b, f = cond["H"].shape[:2]
        flat = {k: cond[k].flatten(0, 1) for k in ("H", "D", "H_o")}
        parts = [self.geo_embed(flat["H_o"], cond["points"], frames=f)]
        if self.mlo_embed is not None:
            x = torch.cat([flat["H"], flat["D"]], 1) if self.cfg.mlo_mode == "full" else flat["H"]
            parts.insert(0, self.mlo_embed(x))
        return torch.cat(parts, dim=1)

    def run_reference(self, ref_latents: torch.Tensor) -> None:
        """Fill the bank: ref_latents [B, V, 4, h, w] through the reference UNet at t = 0."""
        b, v = ref_latents.shape[:2]
        self.bank.clear(views=v)
        x = ref_latents.flatten(0, 1)
        ctx = self.ref_context.expand(x.shape[0], -1, -1)
        t = torch.zeros(x.shape[0], device=x.device, dtype=torch.long)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.reference_trainable):
            self.reference_unet(x, t, encoder_hidden_states=ctx)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict, ref_latents: torch.Tensor,
                tokens: torch.Tensor | None = None, reuse_reference: bool = False) -> torch.Tensor:
        """noisy [B, F, 4, h, w], timesteps [B] long, cond from prepare_batch, ref_latents [B, V, 4, h, w]
        -> model prediction (epsilon, v or x0: cfg.prediction_type) [B, F, C, h, w]. ``tokens`` may be passed precomputed.
        ``reuse_reference``: keep the bank the previous call filled for the same ``ref_latents``
        (sampling: the reference net runs at t = 0, so its output is the same at every step)."""
        b, f = noisy.shape[:2]
        if not (reuse_reference and self.bank.states):
            self.run_reference(ref_latents)
        pose = self.pose_guider(cond["H"].flatten(0, 1))                    # B*F, C, h, w
        if self.skeleton_guider is not None and "S" in cond:                # eq. 5: + G_1(S)
            pose = pose + self.skeleton_guider(cond["S"].flatten(0, 1))
        ctx = self.tokens(cond) if tokens is None else tokens                 # B*F, N, C
        x = noisy.flatten(0, 1)
        if self.cfg.pose_guider_mode == "latent":
            x, self._pose_residual = x + pose.to(x.dtype), None               # paper eq. 1
        else:
            self._pose_residual = pose                                        # added after conv_in by the hook
        try:
            if self.is_video:
                sample = x.unflatten(0, (b, f)).permute(0, 2, 1, 3, 4)        # B, 4, F, h, w
                out = self.unet(sample, timesteps, encoder_hidden_states=ctx).sample
                return out.permute(0, 2, 1, 3, 4)
            t = timesteps.repeat_interleave(f)
            return self.unet(x, t, encoder_hidden_states=ctx).sample.unflatten(0, (b, f))
        finally:
            self._pose_residual = None


def build_model(cfg: TrainConfig, stage: str = "stage1") -> ManiVideoModel:
    """A fresh model for ``stage`` (stage 2 = stage-1 model + motion modules, only those trainable)."""
    vae, unet = build_backbones(cfg)
    model = ManiVideoModel(cfg, vae, unet)
    if stage == "stage2":
        model.to_stage2()
    return model
