"""Wiring of the model: embeddings, zero-init injections, reference attention, motion modules."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from trainer.condition_attention import SplitCrossAttnProcessor
from trainer.config import load_config
from trainer.embeddings import GeometryEmbedding, MLOEmbedding, PoseGuider
from trainer.latents import latent_channels
from trainer.model import build_model
from trainer.reference_attention import ReaderProcessor, WriterProcessor

R, H, V = 64, 8, 7
C = latent_channels(load_config("tiny"))  # the tiny preset's pixel-patch latent: 3 x 8 x 8 channels


def inputs(b=2, f=1, seed=0, c_h=39):
    g = torch.Generator().manual_seed(seed)
    cond = {"H": torch.randn(b, f, c_h, R, R, generator=g), "D": torch.rand(b, f, 13, R, R, generator=g),
            "H_o": torch.randn(b, f, 3, R, R, generator=g), "points": torch.randn(b, 2048, 6, generator=g)}
    return (torch.randn(b, f, C, H, H, generator=g), torch.randint(0, 1000, (b,), generator=g), cond,
            torch.randn(b, V, C, H, H, generator=g))


def perturb(module, seed=1):
    """Give zero-initialised layers random weights (to see that an injection is wired in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def test_embedding_shapes_and_pointnet_order_invariance():
    pg = PoseGuider(39, 4, (16, 32, 64), downscale=8)
    assert pg(torch.randn(3, 39, R, R)).shape == (3, 4, H, H)
    convs = [m for m in pg.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and [c.stride[0] for c in convs] == [2, 2, 2, 1]    # the paper's four conv layers
    assert convs[0].kernel_size == (4, 4) and pg.conv_out.weight.abs().max() == 0  # 4x4 strided; zero output
    assert PoseGuider(39, 48, (16, 32, 64), downscale=4)(torch.randn(1, 39, R, R)).shape == (1, 48, 16, 16)
    with pytest.raises(ValueError):
        PoseGuider(39, 4, (16, 32), downscale=8)
    ef = MLOEmbedding(52, 32, 32, 4)
    assert ef(torch.randn(3, 52, R, R)).shape == (3, 16, 32)
    en = GeometryEmbedding(3, 32, 32, 4)
    perturb(en)
    pts = torch.randn(2, 2048, 6)
    h_o = torch.randn(6, 3, R, R)
    out = en(h_o, pts, frames=3)
    assert out.shape == (6, 16, 32)
    assert torch.allclose(out, en(h_o, pts[:, torch.randperm(2048)], frames=3), atol=1e-5)


@pytest.mark.parametrize("mode,attention", [("latent", "separate"), ("conv_in", "separate"), ("latent", "shared")])
def test_zero_initialised_injections_leave_the_base_unet_unchanged(mode, attention):
    cfg = load_config("tiny", overrides={"pose_guider_mode": mode, "cond_attention": attention})
    model = build_model(cfg).eval()
    base = UNet2DConditionModel.from_config(model.unet.config)
    base.load_state_dict(model.unet.state_dict())
    noisy, t, cond, refs = inputs()
    tokens = model.tokens(cond)
    assert tokens.abs().max() == 0                                     # E_F, E_N start at zero
    with torch.no_grad():
        model.bank.enabled = False                                     # reference attention off
        ours = model(noisy, t, cond, refs)
        want = base(noisy.flatten(0, 1), t, encoder_hidden_states=torch.zeros_like(tokens)).sample
        assert torch.allclose(ours.flatten(0, 1), want, atol=1e-5)
        perturb(model.pose_guider)                                      # and G is really wired in
        assert not torch.allclose(model(noisy, t, cond, refs).flatten(0, 1), want, atol=1e-3)


def test_separate_cross_attention_gives_E_F_and_E_N_their_own_softmax_and_projections():
    """Paper eqs. 2 and 4: attn2(z) = W_O [softmax(Q K_F^T) V_F + softmax(Q K_N^T) V_N], K_N/V_N E_N's own."""
    model = build_model(load_config("tiny")).eval()
    perturb(model.mlo_embed), perturb(model.geo_embed), perturb(model.geo_attention, seed=2)
    procs = {n: p for n, p in model.unet.attn_processors.items() if isinstance(p, SplitCrossAttnProcessor)}
    assert procs and all(n.endswith("attn2.processor") for n in procs)
    name = next(iter(procs)).removesuffix(".processor")
    attn = model.unet.get_submodule(name)
    seen = {}
    hook = attn.register_forward_hook(lambda m, a, kw, out: seen.__setitem__("io", (a[0], kw, out)), with_kwargs=True)
    noisy, t, cond, refs = inputs()
    with torch.no_grad():
        model(noisy, t, cond, refs)
        hook.remove()
        x, kw, out = seen["io"]
        ctx = kw["encoder_hidden_states"]
        n_geo = model.cfg.token_grid ** 2
        mlo, geo = ctx[:, :-n_geo], ctx[:, -n_geo:]
        k_n, v_n = model.geo_attention.projections(name + ".processor")

        def attend(q, k, v):  # one softmax per head, written out
            h = attn.heads
            q, k, v = (z.view(z.shape[0], z.shape[1], h, -1).transpose(1, 2) for z in (q, k, v))
            w = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
            return (w @ v).transpose(1, 2).flatten(2)

        q = attn.to_q(x)
        want = attn.to_out[0](attend(q, attn.to_k(mlo), attn.to_v(mlo)) + attend(q, k_n(geo), v_n(geo)))
        assert torch.allclose(out, want, atol=1e-5)
        shared = AttnProcessor2_0()(attn, x, ctx)                       # one softmax over both: different
        assert not torch.allclose(out, shared, atol=1e-3)


def test_reference_attention_reads_what_the_reference_net_wrote_once_per_forward():
    model = build_model(load_config("tiny")).eval()
    names = [n for n, p in model.reference_unet.attn_processors.items() if isinstance(p, WriterProcessor)]
    readers = [n for n, p in model.unet.attn_processors.items() if isinstance(p, ReaderProcessor)]
    assert names and sorted(names) == sorted(readers)
    name = names[-1].removesuffix(".processor")
    ref_attn, attn = model.reference_unet.get_submodule(name), model.unet.get_submodule(name)
    seen = {}
    h1 = ref_attn.register_forward_pre_hook(lambda m, a, kw: seen.__setitem__("written", a[0].clone()),
                                            with_kwargs=True)
    h2 = attn.register_forward_hook(lambda m, a, kw, out: seen.__setitem__("io", (a[0].clone(), out.clone())),
                                    with_kwargs=True)
    noisy, t, cond, refs = inputs(b=2, f=3)
    fills = model.bank.fills
    with torch.no_grad():
        model(noisy, t, cond, refs)
    h1.remove(), h2.remove()
    assert model.bank.fills == fills + 1 and model.bank.writes == len(names) and model.bank.reads == len(names)
    written = model.bank.states[names[-1]]
    assert torch.equal(written, seen["written"])                      # writer stored attn1's input
    x, out = seen["io"]                                                # reader: [own, refs of its sample]
    ctx = torch.cat([x, written.reshape(2, -1, x.shape[-1]).repeat_interleave(3, dim=0)], dim=1)
    assert torch.allclose(out, AttnProcessor2_0()(attn, x, ctx), atol=1e-5)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_reference_attention_is_correct_under_gradient_accumulation(checkpointing):
    model = build_model(load_config("tiny"))
    perturb(model.pose_guider), perturb(model.geo_embed), perturb(model.mlo_embed)
    if checkpointing:
        model.enable_gradient_checkpointing()
    steps = [inputs(seed=s) for s in (3, 4)]
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(batches):
        model.zero_grad(set_to_none=True)
        for b in batches:
            model(*b).square().mean().backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    accumulated = grads(steps)
    separate = [a + b for a, b in zip(grads(steps[:1]), grads(steps[1:]), strict=True)]
    for a, b in zip(accumulated, separate, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    ref_grads = [p.grad for n, p in model.named_parameters() if n.startswith("reference_unet.down_blocks")]
    assert any(g is not None and g.abs().sum() > 0 for g in ref_grads)  # AppearanceNet learns through readers


def test_stage2_adds_motion_modules_that_start_as_identity_and_alone_train():
    cfg = load_config("tiny")
    model = build_model(cfg).eval()
    perturb(model.pose_guider), perturb(model.geo_embed)
    noisy, t, cond, refs = inputs(b=1, f=4)
    with torch.no_grad():
        image = model(noisy, t, cond, refs)
    video = copy.deepcopy(model)
    video.to_stage2()
    assert video.is_video
    trainable = {n for n, p in video.named_parameters() if p.requires_grad}
    assert trainable and trainable == set(video.motion_parameter_names())
    with torch.no_grad():
        assert torch.allclose(video(noisy, t, cond, refs), image, atol=1e-5)  # zero-init motion output


def test_reusing_the_reference_bank_gives_the_same_prediction_without_rerunning_it():
    model = build_model(load_config("tiny")).eval()
    perturb(model.unet)
    noisy, t, cond, refs = inputs()
    with torch.no_grad():
        first = model(noisy, t, cond, refs)
        fills = model.bank.fills
        again = model(noisy * 0.5, t // 2, cond, refs, reuse_reference=True)
        assert model.bank.fills == fills  # the reference net did not run again
        fresh = model(noisy * 0.5, t // 2, cond, refs)
    assert torch.allclose(again, fresh, atol=1e-6) and not torch.allclose(first, again)
