"""One checkpoint dict that resumes a run exactly, and the diffusers-format export.

Checkpoint (``torch.save`` of a dict; written to a temp file then renamed, so a crash never
leaves a torn checkpoint)::

    format         "manivideo.trainer/1"
    stage, step    "stage1" | "stage2", optimiser steps done
    config         TrainConfig.to_dict()
    model          ManiVideoModel.state_dict() (VAE included: a random-init VAE must match too)
    optimizer, lr_scheduler, ema (or None), scaler (fp16, or None)
    rng            torch / cuda / numpy / python global states (the per-step noise generator is
                   reseeded from (seed, rank, step, micro-step), so it needs no state)
    data           items_consumed per rank (the stream position to restart from), world size
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from pipeline.errors import UserError

FORMAT = "manivideo.trainer/1"


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(path: str | Path, **state) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save({"format": FORMAT, **state, "rng": rng_states()}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    # mmap: an sd15 checkpoint is several GB; only what is used gets read
    # (weights_only=False: the dict holds RNG states; load only checkpoints you trust)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001  (not a torch file, truncated, ...)
        raise UserError(f"{path} is not a readable trainer checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a manivideo trainer checkpoint")
    return ckpt


def load_model_weights(model, ckpt: dict, prefer_ema: bool = True) -> bool:
    """Model weights from a checkpoint; its EMA weights replace the trained ones when present.
    Returns whether EMA weights were used."""
    model.load_state_dict(ckpt["model"])
    if not (prefer_ema and ckpt.get("ema")):
        return False
    shadow = ckpt["ema"]["shadow_params"]
    names = ckpt.get("ema_names")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in zip(names, shadow, strict=True):
            params[name].copy_(value)
    return True


def export_pretrained(model, folder: str | Path, cfg_dict: dict) -> Path:
    """diffusers ``save_pretrained`` folders: unet/ (UNet2DConditionModel or UNetMotionModel),
    reference_unet/, vae/, pose_guider/, mlo_embedding/, geometry_embedding/, plus
    motion_adapter/ in stage 2, ref_context.safetensors and trainer_config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.unet.save_pretrained(folder / "unet")
    model.reference_unet.save_pretrained(folder / "reference_unet")
    model.vae.save_pretrained(folder / "vae")
    model.pose_guider.save_pretrained(folder / "pose_guider")
    model.geo_embed.save_pretrained(folder / "geometry_embedding")
    if model.mlo_embed is not None:
        model.mlo_embed.save_pretrained(folder / "mlo_embedding")
    if model.is_video:
        model.unet.save_motion_modules(str(folder / "motion_adapter"))
    save_file({"ref_context": model.ref_context.detach().cpu().contiguous()}, folder / "ref_context.safetensors")
    (folder / "trainer_config.json").write_text(json.dumps(cfg_dict, indent=2))
    return folder
