"""Reference attention (AppearanceNet -> denoising UNet) with paired attention processors.

The reference UNet runs once per forward on the reference latents (6 object views,
background, optional first frame). A ``WriterProcessor`` on each of its self-attention
layers (``attn1``) stores the hidden states entering that layer in a shared ``ReferenceBank``
under the layer's module name; the ``ReaderProcessor`` on the denoising UNet's layer of the
SAME name concatenates them (all V references, repeated over the F frames) to its own tokens
along the token axis, so keys/values are [own tokens, reference tokens] and queries its own.
Pairing is by name: UNet2DConditionModel and UNetMotionModel.from_unet2d share spatial module
names, and the motion modules (temporal attention) have no partner so keep the default processor.

Gradient accumulation / checkpointing: the model clears the bank and fills it once per forward
(one reference pass per micro-step). Writers overwrite by name rather than append, so a
recompute under gradient checkpointing writes the same values again instead of growing the
bank, and readers recomputed in backward still find this micro-step's tensors (the bank is only
cleared at the start of the next forward).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor2_0


class ReferenceBank:
    """Hidden states written by the reference UNet, keyed by attention module name.

    ``states[name]``: [B*V, N, C] (reference batch = B samples x V references, sample-major).
    ``views``: V. ``enabled``: False makes readers plain self-attention (base UNet behaviour).
    ``writes`` / ``reads`` count calls since the last ``clear`` (tests check once per forward).
    """

    def __init__(self):
        self.states: dict[str, torch.Tensor] = {}
        self.views = 1
        self.enabled = True
        self.fills = 0
        self.writes = 0
        self.reads = 0

    def clear(self, views: int = 1) -> None:
        self.states.clear()
        self.views = views
        self.fills += 1
        self.writes = self.reads = 0


class WriterProcessor(AttnProcessor2_0):
    """Stores the input of a reference-UNet self-attention, then attends as usual."""

    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        self.bank.states[self.name] = hidden_states
        self.bank.writes += 1
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReaderProcessor(AttnProcessor2_0):
    """Self-attention over [own tokens, reference tokens of the paired writer]."""

    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if not self.bank.enabled:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        ref = self.bank.states.get(self.name)
        if ref is None:
            raise RuntimeError(f"reference bank has no states for {self.name}: run the reference UNet first")
        self.bank.reads += 1
        bf, _, c = hidden_states.shape                      # B*F, N, C (frames-major inside a sample)
        b = ref.shape[0] // self.bank.views
        ref = ref.reshape(b, -1, c)                         # B, V*N, C: all references of a sample
        ref = ref.repeat_interleave(bf // b, dim=0)         # B*F, V*N, C: same references for every frame
        context = torch.cat([hidden_states, ref.to(hidden_states.dtype)], dim=1)
        return super().__call__(attn, hidden_states, context, attention_mask, temb)


def self_attention_names(unet) -> list[str]:
    """Processor keys of the spatial self-attention layers (``...transformer_blocks.k.attn1.processor``)."""
    return [n for n in unet.attn_processors if n.endswith("attn1.processor") and "motion_modules" not in n]


def attach_reference_attention(reference_unet, unet, bank: ReferenceBank) -> list[str]:
    """Install writers on ``reference_unet`` and readers on ``unet``, paired by module name.

    Returns the paired names. Raises ValueError when the two UNets do not share their layout.
    """
    names = self_attention_names(reference_unet)
    missing = sorted(set(names) - set(unet.attn_processors))
    if not names or missing:
        raise ValueError(f"reference and denoising UNets do not pair by name (missing {missing[:3]})")
    reference_unet.set_attn_processor({n: (WriterProcessor(bank, n) if n in names else AttnProcessor2_0())
                                       for n in reference_unet.attn_processors})
    current = unet.attn_processors
    unet.set_attn_processor({n: (ReaderProcessor(bank, n) if n in names else current[n]) for n in current})
    return names
