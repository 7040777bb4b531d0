"""The memory work on the model, each against the path it replaced (tiny preset, CPU):
reference K/V once per clip, checkpointed motion modules, frozen weights held in bf16 with
float32 masters for checkpoints and exports, and the chunked VAE."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from trainer.checkpoint import export_pretrained, load_checkpoint, save_checkpoint
from trainer.config import load_config
from trainer.latents import latent_channels
from trainer.model import build_model
from trainer.reference_attention import ReaderProcessor

R, H, V = 64, 8, 7


def inputs(b=1, f=1, seed=0, c=None):
    g = torch.Generator().manual_seed(seed)
    cond = {"H": torch.randn(b, f, 39, R, R, generator=g), "D": torch.rand(b, f, 13, R, R, generator=g),
            "H_o": torch.randn(b, f, 3, R, R, generator=g), "points": torch.randn(b, 2048, 6, generator=g)}
    c = c or latent_channels(load_config("tiny"))
    return (torch.randn(b, f, c, H, H, generator=g), torch.randint(0, 1000, (b,), generator=g), cond,
            torch.randn(b, V, c, H, H, generator=g))


def randomise(model, seed=1):
    """Random weights in the zero-initialised parts (encoders' outputs, motion modules' proj_out),
    so every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("pose_guider", "geo_embed", "mlo_embed")) or "proj_out" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(*batch)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def readers(model):
    return [p for p in model.unet.attn_processors.values() if isinstance(p, ReaderProcessor)]


@pytest.mark.parametrize("stage,frames", [("stage1", 1), ("stage2", 3)])
def test_reference_kv_once_per_clip_equals_the_repeated_reference_path(stage, frames):
    model = build_model(load_config("tiny"), stage)
    randomise(model)
    batch = inputs(b=2, f=frames)
    rows = []
    name = next(n for n, p in model.unet.attn_processors.items() if isinstance(p, ReaderProcessor))
    to_k = model.unet.get_submodule(name.removesuffix(".processor")).to_k
    hook = to_k.register_forward_hook(lambda m, a, out: rows.append(a[0].shape[:2]))
    new_out, new_grads = loss_and_grads(model, batch)
    for r in readers(model):
        r.per_clip = False
    old_out, old_grads = loss_and_grads(model, batch)
    hook.remove()
    assert torch.allclose(new_out, old_out, atol=1e-5)
    assert new_grads.keys() == old_grads.keys() and len(new_grads) > 0
    for n in new_grads:
        assert torch.allclose(new_grads[n], old_grads[n], atol=1e-5, rtol=1e-4), n
    # what changed: the reference tokens go through W^K once per sample, not once per frame
    (own, ref), (both,) = rows[:2], rows[2:]
    n_tok, m_tok = own[1], ref[1] // V
    assert own == (2 * frames, n_tok) and ref == (2, V * m_tok)
    assert both == (2 * frames, n_tok + V * m_tok)


def _saved_bytes(model, batch) -> int:
    """Bytes autograd holds for backward after the forward (distinct storages)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(*batch)
    out.square().mean().backward()
    return sum(seen.values())


def test_motion_modules_are_checkpointed_with_unchanged_gradients():
    model = build_model(load_config("tiny"))
    randomise(model)
    checkpointed = copy.deepcopy(model)
    checkpointed.enable_gradient_checkpointing()   # before to_stage2: the conversion keeps it
    model.to_stage2()
    checkpointed.to_stage2()
    checkpointed.load_state_dict(model.state_dict())
    randomise(model, seed=2)
    randomise(checkpointed, seed=2)
    batch = inputs(b=1, f=3, c=latent_channels(model.cfg))
    calls = []
    for m in (model, checkpointed):
        m.unet.down_blocks[0].motion_modules[0].proj_in.register_forward_pre_hook(lambda *a: calls.append(1))
    out, grads = loss_and_grads(model, batch)
    plain_calls = len(calls)
    out_ck, grads_ck = loss_and_grads(checkpointed, batch)
    assert torch.allclose(out, out_ck, atol=1e-6)
    assert grads.keys() == grads_ck.keys() and all("motion_modules" in n for n in grads)
    for n in grads:
        assert torch.allclose(grads[n], grads_ck[n], atol=1e-6), n
    assert plain_calls == 1 and len(calls) - plain_calls == 2   # forward, then the recompute in backward
    assert _saved_bytes(checkpointed, batch) < 0.6 * _saved_bytes(model, batch)
    sd = checkpointed.unet.state_dict()                          # names unchanged by the wrapping
    assert sd.keys() == model.unet.state_dict().keys()


def test_frozen_weights_held_in_bf16_train_the_same_and_save_float32(tmp_path):
    model = build_model(load_config("tiny", overrides={"latent": "vae"}), "stage2")  # a VAE: frozen weights to hold
    randomise(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    held = copy.deepcopy(model)
    n = held.hold_frozen_in(torch.bfloat16)
    frozen = [p for p in held.parameters() if not p.requires_grad]
    assert n == sum(p.numel() for p in frozen) and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in held.parameters() if p.requires_grad)
    batch = inputs(b=1, f=3, c=latent_channels(model.cfg))
    exact, exact_grads = loss_and_grads(model, batch)                          # float32, no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = loss_and_grads(model, batch)                              # before: fp32 frozen weights
        out_h, grads_h = loss_and_grads(held, batch)                           # now: bf16 frozen weights

    def worst(a, b):  # the largest relative L2 error over the trainable tensors
        return max(float((a[k] - b[k]).norm() / a[k].norm()) for k in a)

    # as accurate as the old bf16 path: the error to float32 grows by no more than rounding noise
    assert grads.keys() == grads_h.keys() == exact_grads.keys()
    assert (out_h.float() - exact).abs().max() <= 1.5 * (out.float() - exact).abs().max()
    assert worst(exact_grads, grads_h) <= 1.5 * worst(exact_grads, grads)
    assert worst(grads, grads_h) < 0.1
    # checkpoints and exports carry the float32 weights, not their bf16 copies
    sd = held.state_dict()
    assert all(torch.equal(sd[k], original[k]) for k in original)
    save_checkpoint(tmp_path / "c.pt", stage="stage2", model=sd)
    fresh = build_model(load_config("tiny", overrides={"latent": "vae"}), "stage2")
    fresh.load_state_dict(load_checkpoint(tmp_path / "c.pt")["model"])
    assert all(torch.equal(v, original[k]) for k, v in fresh.state_dict().items())
    export_pretrained(held, tmp_path / "export", {})
    vae = load_file(tmp_path / "export" / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(v.dtype == torch.float32 and torch.equal(v, original[f"vae.{k}"]) for k, v in vae.items())
    assert next(held.vae.parameters()).dtype == torch.bfloat16              # back to bf16 after the export
    # loading new weights refreshes the masters (a resume after the cast writes the loaded values)
    other = {k: v + 1 if v.is_floating_point() else v for k, v in original.items()}
    held.load_state_dict(other)
    assert all(torch.equal(v, other[k]) for k, v in held.state_dict().items())


def test_chunked_vae_matches_one_call():
    model = build_model(load_config("tiny", overrides={"latent": "vae"})).eval()  # a VAE with weights to chunk
    images = torch.rand(11, 3, R, R) * 2 - 1
    model.vae_chunk = 4
    latents = model.encode(images)
    decoded = model.decode(latents)
    model.vae_chunk = 64
    assert torch.allclose(latents, model.encode(images), atol=1e-5)
    assert torch.allclose(decoded, model.decode(latents), atol=1e-5)
    calls = []
    model.vae.encoder.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    model.vae_chunk = 4
    model.encode(images)
    assert calls == [4, 4, 3]
