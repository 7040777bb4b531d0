"""Does a model use its conditions? Held-out diffusion loss at fixed (noise, t) pairs, with and without swaps.

A diffusion model can lower its training loss from the noisy latent alone (at low t the
answer is mostly in x_t). Whether it *uses* the conditions shows when they are taken away:
evaluate the same held-out items at the same noise and timesteps, once with their own
conditions and once with another item's (a *swap*), and compare. The rise in loss is how much
the prediction depends on the conditions; a model that ignores them shows no rise.

Groups of conditions that can be swapped (``SWAPS``), as ``trainer.conditions.prepare_batch``
names them:
    mlo        H (layer normals), D (occlusion confidence), H_o (object normals)
    refs       the reference images: six object views, background / person O_B (+ first frame)
    points     the object point cloud P (+ normals)
    all        all of the above

A swap pairs each item with another of the same data source taken from a *different* held-out
sample (``derangement``), so the conditions stay plausible for the source and only their
agreement with the target is lost.

Shapes: a probe batch holds B items of F = 1 frame (stage 1) or T frames (stage 2); ``pairs``
holds ``noise`` [K, B, F, C, h, w] and ``t`` [K, B] long — K (noise, t) pairs per item, fixed by
a seed so every model is scored on exactly the same pairs.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.conditions import latent_valid, masked_mse, prepare_batch
from trainer.train import prediction_target

SWAPS = {"mlo": ("H", "D", "H_o"), "refs": ("refs",), "points": ("points",),
         "all": ("H", "D", "H_o", "refs", "points")}


def derangement(groups: list, samples: list) -> np.ndarray:
    """perm [B]: item i takes the conditions of item perm[i], of the same group (data source) and a
    different sample (the item's clip / window). Items with no such partner keep their own (perm[i] = i)
    and are left out of swap figures by ``swappable``."""
    n = len(groups)
    perm = np.arange(n)
    for g in dict.fromkeys(groups):
        idx = [i for i in range(n) if groups[i] == g]
        # rotate by the smallest shift that moves every item to another sample, if there is one
        for shift in range(1, len(idx)):
            cand = [idx[(j + shift) % len(idx)] for j in range(len(idx))]
            if all(samples[a] != samples[b] for a, b in zip(idx, cand, strict=True)):
                perm[idx] = cand
                break
    return perm


def swappable(perm: np.ndarray) -> np.ndarray:
    """bool [B]: items that got another item's conditions."""
    return perm != np.arange(len(perm))


def swap_conditions(cond: dict, perm: np.ndarray, which: str) -> dict:
    """``cond`` with the keys of group ``which`` (``SWAPS``) taken from item perm[i] for every i."""
    idx = torch.as_tensor(perm, device=cond["H"].device)
    out = dict(cond)
    for k in SWAPS[which]:
        out[k] = cond[k][idx]
    return out


def fixed_pairs(batch_size: int, frames: int, channels: int, side: int, num_train_timesteps: int,
                per_item: int = 4, seed: int = 1234) -> dict:
    """K = ``per_item`` (noise, t) pairs per item: half with t in the low band [0, T/3), half in the
    high band [2T/3, T) (T = ``num_train_timesteps``). Returns noise [K, B, F, C, h, w] float32,
    t [K, B] long and band [K] ("low" | "high")."""
    g = torch.Generator().manual_seed(seed)
    k_low = per_item // 2
    noise = torch.randn((per_item, batch_size, frames, channels, side, side), generator=g)
    t = torch.empty((per_item, batch_size), dtype=torch.long)
    lo, hi = num_train_timesteps // 3, 2 * num_train_timesteps // 3
    t[:k_low] = torch.randint(0, lo, (k_low, batch_size), generator=g)
    t[k_low:] = torch.randint(hi, num_train_timesteps, (per_item - k_low, batch_size), generator=g)
    return {"noise": noise, "t": t, "band": ["low"] * k_low + ["high"] * (per_item - k_low)}


@torch.no_grad()
def probe_losses(model, raw_batch: dict, pairs: dict, scheduler, cfg, device, perm: np.ndarray | None = None,
                 which: str | None = None, zero: bool = False) -> dict:
    """Per-item loss [B] averaged over the pairs of each band: {"low": [B], "high": [B]} (float64 numpy).

    ``which`` + ``perm``: swap that condition group first (``swap_conditions``). ``zero``: score the
    zero predictor (always predicts 0) instead of the model. The loss is the training loss
    (epsilon, v or x0 MSE as ``cfg.prediction_type`` says, no min-SNR weighting) over the latent
    elements whose pixels are valid (``valid``: not crop padding).
    """
    model.eval()
    cond = prepare_batch(raw_batch, cfg.mlo_mode, cfg.tau, cfg.resolution, device)
    if which is not None:
        cond = swap_conditions(cond, perm, which)
    b, f = cond["target"].shape[:2]
    latents = model.encode(cond["target"].flatten(0, 1)).unflatten(0, (b, f))
    ref_latents = model.encode(cond["refs"].flatten(0, 1)).unflatten(0, (b, -1))
    tokens = None if zero else model.tokens(cond)
    valid = latent_valid(cond["valid"], latents.shape[-1])  # as the training loss: padding is not scored
    out = {band: np.zeros(b) for band in set(pairs["band"])}
    count = dict.fromkeys(out, 0)
    for k, band in enumerate(pairs["band"]):
        noise, t = pairs["noise"][k].to(device), pairs["t"][k].to(device)
        noisy = scheduler.add_noise(latents, noise, t)
        target = prediction_target(cfg, scheduler, latents, noise, t)
        pred = torch.zeros_like(target) if zero else model(noisy, t, cond, ref_latents, tokens=tokens,
                                                          reuse_reference=k > 0)
        out[band] += masked_mse((pred.float() - target).square(), valid).double().cpu().numpy()
        count[band] += 1
    return {band: v / count[band] for band, v in out.items()}
