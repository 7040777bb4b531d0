"""One checkpoint dict that resumes a run exactly, and the diffusers-format export.

Checkpoint (``torch.save`` of a dict; written to a temp file then renamed, so a crash never
leaves a torn checkpoint)::

    format         "manivideo.trainer/2"
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

FORMAT = "manivideo.trainer/2"  # 2: four-conv pose guider, latent codec class, E_N's own cross-attention
OLD_FORMATS = {"manivideo.trainer/1": "an earlier trainer (8-conv pose guider); retrain with this version"}


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
    if isinstance(ckpt, dict) and ckpt.get("format") in OLD_FORMATS:
        raise UserError(f"{path} was written by {OLD_FORMATS[ckpt['format']]}")
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
    reference_unet/, vae/ (the latent codec), pose_guider/, mlo_embedding/, geometry_embedding/,
    geometry_attention/ (cond_attention=separate), plus
    motion_adapter/ in stage 2, ref_context.safetensors and trainer_config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # float32 masters of weights held in bf16 (ManiVideoModel.hold_frozen_in): never round a pretrained VAE/UNet
    with model.full_precision():
        _export(model, folder, cfg_dict)
    return folder


def _export(model, folder: Path, cfg_dict: dict) -> None:
    model.unet.save_pretrained(folder / "unet")
    model.reference_unet.save_pretrained(folder / "reference_unet")
    model.vae.save_pretrained(folder / "vae")
    model.pose_guider.save_pretrained(folder / "pose_guider")
    model.geo_embed.save_pretrained(folder / "geometry_embedding")
    if model.mlo_embed is not None:
        model.mlo_embed.save_pretrained(folder / "mlo_embedding")
    if getattr(model, "skeleton_guider", None) is not None:  # G_1 (use_skeleton)
        model.skeleton_guider.save_pretrained(folder / "skeleton_guider")
    if getattr(model, "geo_attention", None) is not None:    # E_N's own cross-attention (cond_attention=separate)
        model.geo_attention.save_pretrained(folder / "geometry_attention")
    if model.is_video:
        model.unet.save_motion_modules(str(folder / "motion_adapter"))
    save_file({"ref_context": model.ref_context.detach().cpu().contiguous()}, folder / "ref_context.safetensors")
    (folder / "trainer_config.json").write_text(json.dumps(cfg_dict, indent=2))


# --- checkpoints you can carry: the architecture travels with the weights --------------------------

def architecture(model, cfg) -> dict:
    """The diffusers configs of the VAE, the 2D UNet and (stage 2) the motion adapter, so a
    checkpoint rebuilds its model without the ``pretrained_sd15`` / ``motion_adapter_path`` folders.
    Stored in every checkpoint under ``arch``; call before ``to_stage2`` or after (the reference
    UNet is always the 2D layout)."""
    from diffusers import MotionAdapter

    arch = {"vae": dict(model.vae.config), "vae_class": type(model.vae).__name__,
            "unet": dict(model.reference_unet.config), "motion_adapter": None}
    if cfg.motion_adapter_path and Path(cfg.motion_adapter_path).is_dir():
        arch["motion_adapter"] = dict(MotionAdapter.load_config(cfg.motion_adapter_path))
    else:  # trainer.model.build_motion_adapter's random-init layout
        arch["motion_adapter"] = dict(block_out_channels=tuple(cfg.block_out_channels),
                                      motion_layers_per_block=cfg.layers_per_block,
                                      motion_num_attention_heads=cfg.motion_heads,
                                      motion_norm_num_groups=cfg.norm_num_groups,
                                      motion_max_seq_length=max(32, cfg.frames))
    return arch


def build_from_architecture(cfg, stage: str, arch: dict):
    """An uninitialised ManiVideoModel of the checkpoint's exact layout (weights come after)."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    from trainer.latents import codec_from_config
    from trainer.model import ManiVideoModel

    codec = codec_from_config(arch["vae"], arch.get("vae_class", "AutoencoderKL"))
    model = ManiVideoModel(cfg, codec, UNet2DConditionModel.from_config(arch["unet"]))
    if stage == "stage2":
        model.to_stage2(MotionAdapter.from_config(arch["motion_adapter"]))
    return model


def model_from_checkpoint(ckpt: dict, prefer_ema: bool = True):
    """(model with the checkpoint's weights, config, stage). Needs nothing but the checkpoint when it
    holds ``arch`` (every checkpoint since this field exists); older ones rebuild from the config,
    reading the original weight folders only if they are set and still there."""
    import dataclasses

    from trainer.config import config_from_dict
    from trainer.model import build_model

    cfg = config_from_dict(ckpt["config"])
    stage = ckpt["stage"]
    if ckpt.get("arch"):
        model = build_from_architecture(cfg, stage, ckpt["arch"])
    else:
        gone = {k: "" for k in ("pretrained_sd15", "motion_adapter_path")
                if getattr(cfg, k) and not Path(getattr(cfg, k)).is_dir()}
        model = build_model(dataclasses.replace(cfg, **gone), stage)
    load_model_weights(model, ckpt, prefer_ema)
    return model, cfg, stage


def load_any(path: str | Path):
    """(model, config, stage) from a trainer checkpoint file or a diffusers export folder."""
    path = Path(path)
    if path.is_dir():
        return load_export(path)
    return model_from_checkpoint(load_checkpoint(path))


def load_export(folder: str | Path):
    """(model, config, stage) from an ``export_pretrained`` folder (the EMA weights when the run had EMA)."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from safetensors.torch import load_file

    from trainer.config import config_from_dict
    from trainer.latents import codec_from_folder
    from trainer.model import ManiVideoModel

    folder = Path(folder)
    if not (folder / "trainer_config.json").is_file():
        raise UserError(f"{folder} is not a trainer export (no trainer_config.json)")
    cfg = config_from_dict(json.loads((folder / "trainer_config.json").read_text()))
    ref = UNet2DConditionModel.from_pretrained(folder / "reference_unet")
    model = ManiVideoModel(cfg, codec_from_folder(folder / "vae"), ref)  # reference_unet: a copy of ref
    stage = "stage2" if (folder / "motion_adapter").is_dir() else "stage1"
    if stage == "stage2":
        model.to_stage2(MotionAdapter.from_pretrained(folder / "motion_adapter"))
        model.unet.load_state_dict(UNetMotionModel.from_pretrained(folder / "unet").state_dict())
    else:
        model.unet.load_state_dict(UNet2DConditionModel.from_pretrained(folder / "unet").state_dict())
    for name, sub in (("pose_guider", "pose_guider"), ("geo_embed", "geometry_embedding"),
                      ("mlo_embed", "mlo_embedding"), ("skeleton_guider", "skeleton_guider"),
                      ("geo_attention", "geometry_attention")):
        module = getattr(model, name, None)
        if module is not None:
            module.load_state_dict(type(module).from_pretrained(folder / sub).state_dict())
    with torch.no_grad():
        model.ref_context.copy_(load_file(folder / "ref_context.safetensors")["ref_context"])
    return model, cfg, stage


def prune_checkpoints(run_dir: str | Path, stage: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` ``<stage>_step*.pt`` files (0 = keep all); returns those removed."""
    if keep <= 0:
        return []
    steps = sorted(Path(run_dir).glob(f"{stage}_step*.pt"))  # zero-padded step numbers sort by name
    removed = steps[:-keep] if len(steps) > keep else []
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
