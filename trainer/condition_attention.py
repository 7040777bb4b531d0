"""How the condition tokens E_F (MLO) and E_N (geometry) reach the UNet's transformer blocks.

Two forms, chosen by ``cond_attention``:

``separate`` (the paper, eqs. 2 and 4): each condition has its own cross-attention. In every
    spatial ``attn2`` of the denoising UNet, E_F tokens attend through the layer's own
    W^K / W^V and E_N tokens through a second pair that belongs to E_N; the two softmaxes are
    separate and the results are summed before the layer's output projection
        attn2(z) = W^O [ softmax(Q K_F^T / sqrt d) V_F + softmax(Q K_N^T / sqrt d) V_N ].
    This is the decoupled form IP-Adapter uses for an added condition; a sum of two attentions
    is what two cross-attention sub-layers in a row give to first order, without adding
    sub-layers (and norms) that a pretrained UNet does not have. E_N's projections start as
    copies of the layer's own (IP-Adapter's initialisation); since E_N's tokens are zero at
    init (zero-initialised head), its branch adds exactly zero until it trains.
``shared``: the tokens are concatenated and go through the layer's one cross-attention (one
    softmax over [E_F, E_N], shared W^K / W^V) — the simpler form this project used first; kept
    for the learning benchmark's comparison.

The E_N projections live in ``GeometryAttention`` (a diffusers ModelMixin owned by the model,
keyed by the attention layer's name), not inside the UNet, so the UNet's state dict stays
diffusers' own (``UNetMotionModel.from_unet2d`` copies it strictly) and the stage-2 conversion
keeps them: the processors are re-attached by name, as the reference-attention ones are.
Context layout passed as ``encoder_hidden_states``: [B*F, N_F + N_N, C], E_F tokens first
(N_F = 0 when E_F is off), E_N's ``n_geo`` tokens last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def cross_attention_names(unet) -> list[str]:
    """Processor keys of the spatial cross-attention layers (``...transformer_blocks.k.attn2.processor``)."""
    return [n for n in unet.attn_processors if n.endswith("attn2.processor") and "motion_modules" not in n]


def _key(name: str) -> str:
    return name.removesuffix(".processor").replace(".", "__")  # ModuleDict keys cannot hold dots


class GeometryAttention(ModelMixin, ConfigMixin):
    """E_N's own key/value projections, one pair per cross-attention layer of the UNet.

    ``layers``: {layer name: [inner_dim, cross_attention_dim]}; ``kv[key]`` = (to_k, to_v), bias-free
    Linear(cross_attention_dim -> inner_dim), as SD's attn2 projections are.
    """

    @register_to_config
    def __init__(self, layers: dict | None = None):
        super().__init__()
        self.kv = nn.ModuleDict({
            _key(n): nn.ModuleList([nn.Linear(c, d, bias=False), nn.Linear(c, d, bias=False)])
            for n, (d, c) in (layers or {}).items()})

    @classmethod
    def for_unet(cls, unet) -> GeometryAttention:
        """Projections for every spatial attn2 of ``unet``, initialised as copies of the layer's own."""
        modules = dict(unet.named_modules())
        layers, weights = {}, {}
        for name in cross_attention_names(unet):
            attn = modules[name.removesuffix(".processor")]
            layers[name] = [attn.to_k.out_features, attn.to_k.in_features]
            weights[_key(name)] = (attn.to_k.weight, attn.to_v.weight)
        module = cls(layers)
        with torch.no_grad():
            for key, (wk, wv) in weights.items():
                module.kv[key][0].weight.copy_(wk)
                module.kv[key][1].weight.copy_(wv)
        return module

    def projections(self, name: str) -> nn.ModuleList:
        return self.kv[_key(name)]


class SplitCrossAttnProcessor:
    """attn2 with separate softmaxes for E_F (the layer's W^K, W^V) and E_N (``GeometryAttention``)."""

    def __init__(self, geo: GeometryAttention, name: str, n_geo: int):
        self.geo, self.name, self.n_geo = geo, name, n_geo

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if encoder_hidden_states is None or attention_mask is not None or attn.spatial_norm is not None \
                or attn.group_norm is not None or attn.norm_cross or attn.residual_connection:
            raise NotImplementedError("SplitCrossAttnProcessor handles SD transformer-block cross-attention only")
        shape = hidden_states.shape
        if hidden_states.ndim == 4:                                        # B, C, H, W -> B, HW, C
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        b = hidden_states.shape[0]
        heads = attn.heads

        def split(x):                                                      # B, N, H*d -> B, H, N, d
            return x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        q = split(attn.to_q(hidden_states))
        mlo, geo = encoder_hidden_states[:, :-self.n_geo], encoder_hidden_states[:, -self.n_geo:]
        to_k, to_v = self.geo.projections(self.name)
        out = F.scaled_dot_product_attention(q, split(to_k(geo)), split(to_v(geo)))
        if mlo.shape[1]:
            out = out + F.scaled_dot_product_attention(q, split(attn.to_k(mlo)), split(attn.to_v(mlo)))
        out = out.transpose(1, 2).reshape(b, -1, heads * q.shape[-1]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if len(shape) == 4:
            out = out.transpose(-1, -2).reshape(shape)
        return out / attn.rescale_output_factor


def attach_condition_attention(unet, geo: GeometryAttention | None, n_geo: int) -> None:
    """Install the ``separate`` processors on every spatial attn2 of ``unet`` (``geo`` given), or
    the plain shared one (``geo`` None). Other processors (reference readers on attn1, motion
    modules) are kept."""
    current = unet.attn_processors
    names = set(cross_attention_names(unet))
    unet.set_attn_processor({n: ((SplitCrossAttnProcessor(geo, n, n_geo) if geo is not None else AttnProcessor2_0())
                                 if n in names else p) for n, p in current.items()})
