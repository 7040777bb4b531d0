"""DDIM sampling with classifier-free guidance, the side-by-side video, and region PSNR/SSIM.

Guidance contrasts the full conditions with the references dropped (object views, background,
first frame and the point cloud zeroed: exactly what reference dropout shows in training);
the MLO conditions stay in both branches. A stage-1 checkpoint samples every frame of the
clip independently; a stage-2 one samples the clip jointly through the motion modules.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from diffusers import DDIMScheduler

from trainer.conditions import collate, prepare_batch
from trainer.config import TrainConfig
from trainer.latents import latent_channels, latent_factor
from trainer.metrics import masked_psnr, masked_ssim
from trainer.model import ManiVideoModel


def load_for_sampling(path: str, device: torch.device) -> tuple[ManiVideoModel, TrainConfig, str]:
    """Model (EMA weights when the checkpoint has them), its config and stage, in eval mode.
    ``path``: a checkpoint (needs nothing else: it carries its architecture) or a diffusers export folder."""
    from trainer.checkpoint import load_any

    model, cfg, stage = load_any(path)
    return model.to(device).eval(), cfg, stage


def _scheduler(cfg: TrainConfig) -> DDIMScheduler:
    # "trailing" spacing starts at t = T-1 (pure noise), which zero-terminal-SNR needs (Lin et al.
    # 2024); "leading" with few steps would start far from it (t = 750 at 4 steps).
    return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type=cfg.prediction_type, clip_sample=False,
                         set_alpha_to_one=False, rescale_betas_zero_snr=cfg.zero_terminal_snr,
                         timestep_spacing="trailing")


@torch.no_grad()
def generate(model: ManiVideoModel, item: dict, cfg: TrainConfig, device: torch.device, steps: int = 25,
             guidance: float | None = None, seed: int = 0) -> dict:
    """Sample one clip for a raw item (trainer.data.MixedStores.load).

    Returns numpy arrays in [0, 1]: ``video`` [F, R, R, 3], ``truth`` [F, R, R, 3],
    ``conditions`` [F, R, R, 3] (front-layer normals), ``mask`` [F, R, R], and ``metrics``.
    """
    model.eval()
    guidance = cfg.guidance_scale if guidance is None else guidance
    item = dict(item, ref_keep=np.float32(1.0), jitter=np.ones(3, np.float32))
    cond = prepare_batch(collate([item]), cfg.mlo_mode, cfg.tau, cfg.resolution, device)
    null = prepare_batch(collate([dict(item, ref_keep=np.float32(0.0))]), cfg.mlo_mode, cfg.tau,
                         cfg.resolution, device)
    both = {k: torch.cat([null[k], cond[k]]) for k in cond}
    refs = model.encode(both["refs"].flatten(0, 1)).unflatten(0, (2, -1))          # 2, V, 4, h, w
    tokens = model.tokens(both)
    f = cond["target"].shape[1]
    h = cfg.resolution // latent_factor(cfg)
    gen = torch.Generator(device).manual_seed(seed)
    latents = torch.randn((1, f, latent_channels(cfg), h, h), generator=gen, device=device)
    sched = _scheduler(cfg)
    sched.set_timesteps(steps, device=device)
    for i, t in enumerate(sched.timesteps):
        # the reference net's inputs are fixed: fill its bank once, at the first step
        pred = model(torch.cat([latents, latents]), t.expand(2).to(device), both, refs, tokens=tokens,
                     reuse_reference=i > 0)
        uncond, full = pred.chunk(2)
        out = sched.step(uncond + guidance * (full - uncond), t, latents)
        # last step: the clean estimate, not x at the residual noise level of alphas_cumprod[0]
        latents = out.pred_original_sample if i == len(sched.timesteps) - 1 else out.prev_sample
    video = (model.decode(latents[0]) + 1) / 2                                      # F, 3, R, R
    truth = (cond["target"][0] + 1) / 2
    mask = cond["mask"][0]
    # The VAE's own round trip bounds what any sample can reach (a random-init tiny VAE: very little).
    truth_latents = model.encode(cond["target"][0])
    recon = (model.decode(truth_latents) + 1) / 2
    metrics = {"psnr_region": masked_psnr(video, truth, mask), "ssim_region": masked_ssim(video, truth, mask),
               "psnr_full": masked_psnr(video, truth), "psnr_region_vae_roundtrip": masked_psnr(recon, truth, mask),
               "latent_rel_error": float((latents[0] - truth_latents).norm() / truth_latents.norm()),
               "frames": f, "steps": steps, "guidance": guidance}
    return {"video": _hwc(video), "truth": _hwc(truth), "conditions": _hwc(_condition_image(cond, cfg)),
            "mask": mask[:, 0].cpu().numpy(), "metrics": metrics}


def _condition_image(cond: dict, cfg: TrainConfig) -> torch.Tensor:
    """[F, 3, R, R] in [0, 1]: normals of the front-most layer (or inverse depth for depth_only);
    for a human item, its skeleton map S (when the model uses it) or the reference person O_B."""
    from trainer.conditions import N_VIEWS, SOURCES

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


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def write_outputs(result: dict, out: str | Path, fps: int = 8) -> list[Path]:
    """Write the result: ``out`` (.mp4 video, or .png for one frame), ``<stem>_side`` (conditions |
    result | ground truth) and ``<stem>.json`` (metrics). Returns the paths written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    side = np.concatenate([result["conditions"], result["video"], result["truth"]], axis=2)
    paths = []
    if out.suffix == ".png":
        imageio.imwrite(out, _u8(result["video"][0]))
        paths.append(out)
        side_path = out.with_name(out.stem + "_side.png")
        imageio.imwrite(side_path, _u8(side[0]))
    else:
        for path, frames in ((out, result["video"]), (out.with_name(out.stem + "_side.mp4"), side)):
            # macro_block_size=1: small test videos (e.g. 64 px) are written at their true size
            with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as w:
                for frame in _u8(frames):
                    w.append_data(frame)
        side_path = out.with_name(out.stem + "_side.mp4")
        paths.append(out)
    paths.append(side_path)
    metrics_path = out.with_name(out.stem + ".json")
    metrics_path.write_text(json.dumps(result["metrics"], indent=2))
    paths.append(metrics_path)
    return paths


def sample_store(checkpoint: str, store: str, index: int, out: str, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, device: str | None = None,
                 split: str = "all") -> dict:
    """Sample ``index`` (within ``split``: train | test | all) of ``store`` with ``checkpoint``;
    writes the video, side-by-side and metrics."""
    from trainer.data import MixedStores

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg, stage = load_for_sampling(checkpoint, dev)
    # Any store can be sampled, whatever the run's mixing weights were.
    open_cfg = dataclasses.replace(cfg, use_objaverse=True, mix_objaverse=1.0, mix_hoi=1.0, mix_human=1.0,
                                   split=split)
    probe = MixedStores([store], open_cfg, frames=1)
    frames = probe.readers[0].layout.frames if stage == "stage1" else min(cfg.frames, probe.readers[0].layout.frames)
    data = MixedStores([store], open_cfg, frames=frames)
    if not 0 <= index < len(data.readers[0]):
        from pipeline.errors import UserError

        raise UserError(f"--index {index} is out of range: {store} has {len(data.readers[0])} samples")
    from trainer.inference import precision_context

    with precision_context(cfg, dev):  # the training precision on GPU
        result = generate(model, data.load(0, index, 0), cfg, dev, steps or cfg.sample_steps, guidance, seed)
    region = "person" if data.readers[0].layout.kind == "human" else "hand-object"  # what the mask covers
    result["metrics"].update(checkpoint=str(checkpoint), store=str(store), index=index, split=split,
                             region=region, key=data.readers[0].key(index))
    paths = write_outputs(result, out)
    return {"paths": [str(p) for p in paths], "metrics": result["metrics"]}
