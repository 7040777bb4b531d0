"""``python cli.py sample``: one store clip sampled with ``trainer.inference.sample_clips`` (DDIM with
classifier-free guidance), the side-by-side video, and region PSNR/SSIM."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.inference import condition_image, precision_context, sample_clips
from trainer.metrics import masked_psnr, masked_ssim
from trainer.model import ManiVideoModel


def load_for_sampling(path: str, device: torch.device) -> tuple[ManiVideoModel, TrainConfig, str]:
    """Model (EMA weights when the checkpoint has them), its config and stage, in eval mode.
    ``path``: a checkpoint (needs nothing else: it carries its architecture) or a diffusers export folder."""
    from trainer.checkpoint import load_any

    model, cfg, stage = load_any(path)
    return model.to(device).eval(), cfg, stage


@torch.no_grad()
def generate(model: ManiVideoModel, item: dict, cfg: TrainConfig, device: torch.device, steps: int = 25,
             guidance: float | None = None, seed: int = 0) -> dict:
    """Sample one clip for a raw item (trainer.data.MixedStores.load): ``sample_clips`` with the noise
    of a CPU generator seeded with ``seed``.

    Returns numpy arrays in [0, 1]: ``video`` [F, R, R, 3], ``truth`` [F, R, R, 3],
    ``conditions`` [F, R, R, 3] (front-layer normals), ``mask`` [F, R, R], and ``metrics``.
    """
    guidance = cfg.guidance_scale if guidance is None else guidance
    out = sample_clips(model, [item], cfg, device, steps, guidance, seeds=[seed])
    cond, video, truth, mask = out["cond"], out["video"][0], out["truth"][0], out["mask"][0]
    f = video.shape[0]
    # The codec's own round trip bounds what any sample can reach (exact for the pixel-patch latents).
    truth_latents = model.encode(cond["target"][0])
    recon = ((model.decode(truth_latents).float() + 1) / 2).clamp(0, 1).cpu()
    truth_latents = truth_latents.float().cpu()
    metrics = {"psnr_region": masked_psnr(video, truth, mask), "ssim_region": masked_ssim(video, truth, mask),
               "psnr_full": masked_psnr(video, truth), "psnr_region_vae_roundtrip": masked_psnr(recon, truth, mask),
               "latent_rel_error": float((out["latents"][0] - truth_latents).norm() / truth_latents.norm()),
               "frames": f, "steps": steps, "guidance": guidance}
    return {"video": _hwc(video), "truth": _hwc(truth), "conditions": _hwc(condition_image(cond, cfg)),
            "mask": mask[:, 0].numpy(), "metrics": metrics}


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
    with precision_context(cfg, dev):  # the training precision on GPU
        result = generate(model, data.load(0, index, 0), cfg, dev, steps or cfg.sample_steps, guidance, seed)
    region = "person" if data.readers[0].layout.kind == "human" else "hand-object"  # what the mask covers
    result["metrics"].update(checkpoint=str(checkpoint), store=str(store), index=index, split=split,
                             region=region, key=data.readers[0].key(index))
    paths = write_outputs(result, out)
    return {"paths": [str(p) for p in paths], "metrics": result["metrics"]}
