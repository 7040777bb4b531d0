"""Batched, windowed DDIM sampling with classifier-free guidance: the one sampling loop, which
``sample``, validation, ``evaluate`` and ``generate`` run.

Guidance contrasts the full conditions with the references dropped (object views, background,
first frame and the point cloud zeroed: exactly what reference dropout shows in training); the MLO
conditions stay in both branches. At guidance 1 the mix is the conditional prediction alone, so the
reference-dropped branch is not run. A stage-1 (image) model samples every frame independently; a
stage-2 one samples each window jointly through the motion modules.

* Batched: B clips of the same length F are denoised together (2B rows with the guidance branch).
* Long clips: F may exceed the trained window W (cfg.frames). At every DDIM step each window of
  W frames (stride W - overlap) predicts the noise of its frames and overlapping predictions are
  blended with linear ramps (Animate Anyone's long-video inference, which averages the windows'
  predictions; the ramp weights the frames near a window's own edge less). Stage-1 (image)
  models sample frames independently, so their windows just chunk the clip (overlap 0).
* Precision: on CUDA the model runs under autocast in the training precision (bf16 / fp16); the
  scheduler update and the latents stay float32. On CPU everything is float32.
* Noise: clip b starts from ``torch.randn`` of a CPU generator seeded with ``seeds[b]``, so a clip's
  result does not depend on which batch it was sampled in nor on the device.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from diffusers import DDIMScheduler

from trainer.conditions import N_VIEWS, SOURCES, collate, prepare_batch
from trainer.config import TrainConfig
from trainer.latents import latent_channels, latent_factor

# condition keys that are never cut along the frame axis
_NOT_TIME = frozenset({"refs", "points", "ref_keep", "source"})


def precision_context(cfg: TrainConfig, device: torch.device):
    """autocast in the training precision on CUDA; nothing on CPU."""
    if device.type != "cuda" or cfg.mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def ddim_scheduler(cfg: TrainConfig) -> DDIMScheduler:
    """The DDIM sampler of the training noise schedule (scaled-linear betas 0.00085..0.012, as SD1.5)."""
    # "trailing" spacing starts at t = T-1 (pure noise), which zero-terminal-SNR needs (Lin et al.
    # 2024); "leading" with few steps would start far from it (t = 750 at 4 steps).
    return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type=cfg.prediction_type, clip_sample=False,
                         set_alpha_to_one=False, rescale_betas_zero_snr=cfg.zero_terminal_snr,
                         timestep_spacing="trailing")


def plan_windows(frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows of ``window`` frames covering [0, frames), consecutive ones sharing
    ``overlap`` frames (the last one is moved back to end at ``frames``)."""
    if frames <= window:
        return [(0, frames)]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    stride = window - overlap
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return [(s, s + window) for s in starts]


def blend_weights(windows: list[tuple[int, int]], frames: int, overlap: int) -> list[torch.Tensor]:
    """Per-window frame weights [e - s]: 1 inside, a linear ramp over ``overlap`` frames at an edge
    shared with another window (never at the clip's own first / last frame)."""
    out = []
    for s, e in windows:
        n = e - s
        w = torch.ones(n)
        if overlap > 0:
            ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
            k = min(overlap, n)
            if s > 0:
                w[:k] = torch.minimum(w[:k], ramp[:k])
            if e < frames:
                w[n - k:] = torch.minimum(w[n - k:], ramp[:k].flip(0))
        out.append(w)
    return out


def conditions(items: list[dict], cfg: TrainConfig, device: torch.device) -> tuple[dict, dict]:
    """(full conditions, references dropped) for raw items (trainer.data.MixedStores.load layout)."""
    items = [dict(it, ref_keep=np.float32(1.0), jitter=np.ones(3, np.float32), flip=np.bool_(False))
             for it in items]
    cond = prepare_batch(collate(items), cfg.mlo_mode, cfg.tau, cfg.resolution, device)
    null = prepare_batch(collate([dict(it, ref_keep=np.float32(0.0)) for it in items]), cfg.mlo_mode, cfg.tau,
                         cfg.resolution, device)
    return cond, null


def _cut(c: dict, s: int, e: int, frames: int) -> dict:
    return {k: (v[:, s:e] if k not in _NOT_TIME and torch.is_tensor(v) and v.dim() >= 3 and v.shape[1] == frames
                else v) for k, v in c.items()}


@torch.no_grad()
def sample_clips(model, items: list[dict], cfg: TrainConfig, device: torch.device, steps: int,
                 guidance: float | None = None, seeds: list[int] | None = None, window: int | None = None,
                 overlap: int | None = None, decode_chunk: int = 16) -> dict:
    """Sample B clips of F frames each.

    Returns float32 CPU tensors in [0, 1]: ``video`` [B, F, 3, R, R], ``truth`` [B, F, 3, R, R] (the
    items' rgb, resized), ``mask`` [B, F, 1, R, R] (hand-object region), ``valid`` [B, F, 1, R, R] (1 where
    the truth's pixel comes from the camera image), ``latents`` [B, F, C, h, w] (the final clean
    estimate, before decoding), and ``cond`` (the full conditions on ``device``), ``windows`` (the plan used).
    """
    model.eval()
    guidance = cfg.guidance_scale if guidance is None else guidance
    seeds = list(range(len(items))) if seeds is None else list(seeds)
    cond, null = conditions(items, cfg, device)
    # guidance 1 is the conditional prediction alone: the reference-dropped branch is not run
    n_branch = 1 if guidance == 1 else 2
    both = cond if n_branch == 1 else {k: torch.cat([null[k], cond[k]]) for k in cond}
    b, f = cond["target"].shape[:2]
    window = window or (cfg.frames if model.is_video else max(cfg.frames, 8))
    overlap = (window // 4 if model.is_video else 0) if overlap is None else overlap
    windows = plan_windows(f, window, overlap)
    weights = [w.to(device) for w in blend_weights(windows, f, overlap)]
    ctx = precision_context(cfg, device)
    with ctx:
        refs = model.encode(both["refs"].flatten(0, 1)).unflatten(0, (n_branch * b, -1))   # 2B, V, C, h, w
        tokens = model.tokens(both).unflatten(0, (n_branch * b, f))                       # 2B, F, N, C
    h = cfg.resolution // latent_factor(cfg)
    latents = torch.stack([torch.randn((f, latent_channels(cfg), h, h), generator=torch.Generator().manual_seed(int(s)))
                           for s in seeds]).to(device)
    sched = ddim_scheduler(cfg)
    sched.set_timesteps(steps, device=device)
    first = True
    for i, t in enumerate(sched.timesteps):
        acc = torch.zeros_like(latents)
        wsum = torch.zeros(f, device=device)
        for (s, e), w in zip(windows, weights, strict=True):
            x = latents[:, s:e]
            with ctx:
                # the reference net's inputs are fixed: fill its bank once, at the first call
                pred = model(torch.cat([x] * n_branch), t.expand(n_branch * b).to(device), _cut(both, s, e, f), refs,
                             tokens=tokens[:, s:e].flatten(0, 1), reuse_reference=not first).float()
            first = False
            if n_branch == 2:
                uncond, full = pred.chunk(2)
                pred = uncond + guidance * (full - uncond)
            acc[:, s:e] += pred * w.view(1, -1, 1, 1, 1)
            wsum[s:e] += w
        out = sched.step(acc / wsum.view(1, -1, 1, 1, 1), t, latents)
        # last step: the clean estimate, not x at the residual noise level of alphas_cumprod[0]
        latents = out.pred_original_sample if i == len(sched.timesteps) - 1 else out.prev_sample
    flat = latents.flatten(0, 1)
    with ctx:
        video = torch.cat([model.decode(flat[j:j + decode_chunk]) for j in range(0, len(flat), decode_chunk)])
    video = ((video.float() + 1) / 2).clamp(0, 1).unflatten(0, (b, f)).cpu()
    return {"video": video, "truth": ((cond["target"] + 1) / 2).clamp(0, 1).cpu(), "mask": cond["mask"].cpu(),
            "valid": cond["valid"].cpu(), "latents": latents.float().cpu(), "cond": cond, "windows": windows}


def condition_image(cond: dict, cfg: TrainConfig) -> torch.Tensor:
    """[F, 3, R, R] in [0, 1] for the first item of ``cond``: normals of the front-most layer (or inverse
    depth for depth_only); for a human item, its skeleton map S (when the model uses it) or the reference
    person O_B."""
    if int(cond["source"][0]) == SOURCES.index("human"):
        if "S" in cond:
            return cond["S"][0]
        return ((cond["refs"][0, N_VIEWS] + 1) / 2).expand(cond["H"].shape[1], -1, -1, -1)
    H = cond["H"][0]
    if cfg.mlo_mode == "depth_only":
        return H.expand(-1, 3, -1, -1)
    f, _, r, _ = H.shape
    normals = H.view(f, -1, 3, r, r)                                                # F, 13, 3, R, R
    front = cond["D"][0].argmax(dim=1)                                              # F, R, R
    pick = normals.gather(1, front[:, None, None].expand(-1, 1, 3, -1, -1))[:, 0]
    return torch.where(cond["mask"][0] > 0, (pick + 1) / 2, torch.zeros_like(pick))


def condition_images(cond: dict, cfg: TrainConfig) -> torch.Tensor:
    """[B, F, 3, R, R] in [0, 1]: ``condition_image`` of every item."""
    return torch.stack([condition_image({k: v[i:i + 1] for k, v in cond.items()}, cfg).cpu()
                        for i in range(cond["H"].shape[0])])
