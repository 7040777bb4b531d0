"""The training loop for both stages, top to bottom (after nanoGPT / DiT train.py).

stage1: image stage. One random frame per sample; trains the denoising UNet, AppearanceNet,
        pose guider G and the token embeddings E_F, E_N.
stage2: temporal stage. T-frame windows; the stage-1 model (EMA weights if it has them) gets
        AnimateDiff motion modules and only those train.

Multi-GPU: launched by torchrun (WORLD_SIZE > 1) it wraps the model in DDP; each rank reads its
own share of the item stream. With WORLD_SIZE unset/1 no process group is created.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr

from pipeline.errors import UserError
from trainer.checkpoint import (
    architecture,
    build_from_architecture,
    export_pretrained,
    load_checkpoint,
    load_model_weights,
    prune_checkpoints,
    save_checkpoint,
    set_rng_states,
)
from trainer.conditions import SOURCES, latent_valid, masked_mse, prepare_batch
from trainer.config import TrainConfig
from trainer.data import MixedStores, make_loader
from trainer.model import ManiVideoModel, build_model


class TrainingDiverged(UserError):
    """Loss or gradient norm became NaN/inf; the message names the step and what to change."""


def make_scheduler(cfg: TrainConfig) -> DDPMScheduler:
    """SD1.5's noise schedule; zero-terminal-SNR rescaling and v-prediction are options."""
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type=cfg.prediction_type, clip_sample=False,
                         rescale_betas_zero_snr=cfg.zero_terminal_snr)


def make_optimizer(params, lr: float, eight_bit: bool) -> torch.optim.Optimizer:
    if eight_bit:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UserError("adam8bit=true needs bitsandbytes (pip install bitsandbytes; CUDA only)") from None
        return bnb.optim.Adam8bit(params, lr=lr)
    # the paper's optimiser; fused on CUDA: one kernel, and no full-size temporaries (the default
    # foreach Adam holds one more copy of the trainable weights during the step: +6.4 GiB in sd15 stage 1)
    params = list(params)
    return torch.optim.Adam(params, lr=lr, fused=bool(params) and all(p.is_cuda for p in params))


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def prediction_target(cfg: TrainConfig, scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
                      t: torch.Tensor) -> torch.Tensor:
    """What the model predicts: the noise (epsilon), the velocity (v_prediction) or the clean latent
    (sample, x0). x0-prediction is the tiny preset's choice: its pixel-patch latent has 192 channels
    per token and the UNet's first level only 32, and a network narrower than its input cannot pass
    the noise through to predict it, while the clean image is low-dimensional (Li & He 2025, "Back to
    Basics: Let Denoising Generative Models Denoise", make the same point for pixel-patch models)."""
    if cfg.prediction_type == "epsilon":
        return noise
    if cfg.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return latents


def diffusion_loss(model, raw: ManiVideoModel, batch: dict, scheduler: DDPMScheduler, gen: torch.Generator,
                   cfg: TrainConfig, device: torch.device, cond: dict | None = None) -> torch.Tensor:
    """Loss of one micro-batch. ``model`` is the module to call (DDP wrapper or the model),
    ``raw`` the unwrapped model (VAE access). ``cond``: ``prepare_batch``'s output, when already made
    (benchmarks/memory_budget.py traces the step from there). Returns a scalar float32 tensor."""
    if cond is None:
        cond = prepare_batch(batch, cfg.mlo_mode, cfg.tau, cfg.resolution, device)
    b, f = cond["target"].shape[:2]
    with autocast(cfg, device):
        latents = raw.encode(cond["target"].flatten(0, 1)).unflatten(0, (b, f))          # B, F, 4, h, w
        ref_latents = raw.encode(cond["refs"].flatten(0, 1)).unflatten(0, (b, -1))       # B, V, 4, h, w
    noise = torch.randn(latents.shape, generator=gen, device=device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen, device=device)
    noisy = scheduler.add_noise(latents, noise, t)
    target = prediction_target(cfg, scheduler, latents, noise, t)
    with autocast(cfg, device):
        pred = model(noisy, t, cond, ref_latents)
    # the target is only known where its pixels come from the camera image (``valid``: no padding)
    mse = masked_mse((pred.float() - target).square(), latent_valid(cond["valid"], latents.shape[-1]))   # B
    if cfg.snr_gamma > 0:  # min-SNR weighting (Hang et al. 2023)
        snr = compute_snr(scheduler, t).clamp(min=1e-8)
        clipped = snr.clamp(max=cfg.snr_gamma)
        weight = {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}
        mse = mse * weight[cfg.prediction_type]
    return mse.mean()


def _finite_everywhere(loss: torch.Tensor, world: int) -> bool:
    """True if the loss is finite on every rank: all ranks stop together (a rank that raised
    alone would leave the others waiting in the gradient all-reduce)."""
    ok = torch.isfinite(loss.detach()).float().reshape(1)
    if world > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item() == 1)


def _micro_seed(cfg: TrainConfig, rank: int, step: int, micro: int) -> int:
    # Noise and timesteps depend only on (seed, rank, step, micro): resuming needs no generator state.
    return (cfg.seed * 1_000_003 + rank * 7_919 + step * 131 + micro) % (2**63)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # CPU: peak RSS of the process


def build_for_stage(cfg: TrainConfig, stage: str, init: str | None, log=print,
                    resuming: bool = False) -> ManiVideoModel:
    """Stage 1: fresh model (or ``init`` weights). Stage 2: stage-1 weights from ``init`` + motion modules.
    ``resuming``: the weights come from a checkpoint of this stage afterwards."""
    if init:
        ckpt = load_checkpoint(init)
        if ckpt["stage"] != "stage1":
            raise UserError(f"--init {init} is a {ckpt['stage']} checkpoint; stage 2 starts from a stage-1 one")
        init_skeleton = bool(ckpt["config"].get("use_skeleton", False))
        if init_skeleton != cfg.use_skeleton:  # G_1 exists in one model and not in the other
            raise UserError(f"--init {init} was trained with use_skeleton={str(init_skeleton).lower()}; "
                            f"set the same (--set use_skeleton={str(init_skeleton).lower()})")
        # the checkpoint carries its architecture: the original SD1.5 folder is not needed
        model = build_from_architecture(cfg, "stage1", ckpt["arch"]) if ckpt.get("arch") else build_model(cfg)
        used_ema = load_model_weights(model, ckpt)
        log(f"init from {init} (step {ckpt['step']}{', EMA weights' if used_ema else ''})")
    else:
        model = build_model(cfg, "stage1")
        if stage == "stage2" and not resuming:
            log("warning: stage 2 without --init starts from a randomly initialised image model")
    if stage == "stage2":
        model.to_stage2()
    return model


def train(cfg: TrainConfig, stage: str, init: str | None = None, resume: str | None = None,
          max_steps: int | None = None, log=print) -> dict:
    """Train ``stage`` until step cfg.steps(stage) (or ``max_steps``); returns {step, losses, checkpoint, run_dir}."""
    # --- distributed / device ---
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    master = rank == 0
    log = log if master else (lambda *a, **k: None)
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)

    # Stores first: a missing store is a one-line error before anything is built or written.
    batch, accum = cfg.batch(stage), cfg.grad_accum
    dataset = MixedStores(cfg.stores, cfg, frames=1 if stage == "stage1" else cfg.frames)

    # --- model, optimiser, EMA, schedule ---
    ckpt = load_checkpoint(resume) if resume else None
    if ckpt is not None and ckpt["stage"] != stage:
        raise UserError(f"--resume {resume} is a {ckpt['stage']} checkpoint, not {stage}")
    if ckpt is not None and ckpt.get("arch"):  # resuming needs only the checkpoint
        model = build_from_architecture(cfg, stage, ckpt["arch"])
    else:
        model = build_for_stage(cfg, stage, None if ckpt else init, log, resuming=ckpt is not None)
    arch = ckpt["arch"] if ckpt is not None and ckpt.get("arch") else architecture(model, cfg)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.to(device)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg.lr(stage), cfg.adam8bit)
    warm = max(1, cfg.warmup_steps)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm))
    ema = EMAModel(params, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    scaler = torch.amp.GradScaler(device.type) if cfg.mixed_precision == "fp16" else None
    scheduler = make_scheduler(cfg)
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_sched.load_state_dict(ckpt["lr_scheduler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
            ema.to(device)  # the checkpoint holds CPU tensors
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ckpt["data"]["world"] != world:
            raise UserError(f"checkpoint was written by {ckpt['data']['world']} processes; resume with the same")
        step = ckpt["step"]
        set_rng_states(ckpt["rng"])
        log(f"resumed {resume} at step {step}")
    if cfg.mixed_precision != "no" and device.type == "cuda":
        # Frozen weights (VAE; stage 2: both UNets and the encoders) held in the autocast dtype:
        # half their memory. Checkpoints and exports still write their float32 values (kept on the
        # CPU by the model). CPU runs keep float32: validation samples there without autocast.
        model.hold_frozen_in(torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None,
            find_unused_parameters=cfg.ddp_find_unused)

    # --- data: restart the item stream where the checkpoint left it ---
    loader = make_loader(dataset, batch, start_item=step * batch * accum, rank=rank, world=world,
                         num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    batches = iter(loader)

    # --- logging ---
    run = Path(cfg.run_dir)
    tb = None
    if master:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(run / "tb"))
    total = cfg.steps(stage) if max_steps is None else max_steps  # absolute step count, also when resuming
    log(f"{stage}: {sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters, sources "
        f"{dict(zip(dataset.sources, np.round(dataset.source_p, 3).tolist(), strict=True))}, "
        f"batch {batch}x{accum}x{world}, steps {step} -> {total}, device {device}")

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, stage=stage, step=step, config=cfg.to_dict(), model=model.state_dict(),
                        optimizer=optimizer.state_dict(), lr_scheduler=lr_sched.state_dict(),
                        ema=ema.state_dict() if ema else None, ema_names=names,
                        scaler=scaler.state_dict() if scaler else None,
                        data={"items_consumed": step * batch * accum, "world": world}, arch=arch)

    losses: list[float] = []
    validator = None  # built at the first validation (reads the stores' test split)
    gen = torch.Generator(device)
    t_log, wait, items = time.perf_counter(), 0.0, 0
    drawn = dict.fromkeys(SOURCES, 0)  # items this run trained on, per source (mixing check)
    model.train()
    while step < total:
        # --- one optimiser step = accum micro-steps; the reference net runs once per micro-step ---
        loss_sum = 0.0
        for micro in range(accum):
            t0 = time.perf_counter()
            raw = next(batches)
            wait += time.perf_counter() - t0
            for s in raw["source"].tolist():
                drawn[SOURCES[s]] += 1
            gen.manual_seed(_micro_seed(cfg, rank, step, micro))
            sync = contextlib.nullcontext() if (world == 1 or micro == accum - 1) else net.no_sync()
            with sync:
                loss = diffusion_loss(net, model, raw, scheduler, gen, cfg, device)
                if not _finite_everywhere(loss, world):
                    raise TrainingDiverged(f"loss is {loss.item()} at step {step}: lower the learning rate, "
                                           "use bf16 instead of fp16, or check the data")
                scaled = loss / accum
                (scaler.scale(scaled) if scaler else scaled).backward()
            loss_sum += loss.item() / accum
            items += raw["rgb"].shape[0] * world
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
        if not torch.isfinite(grad_norm) and scaler is None:
            raise TrainingDiverged(f"gradient norm is {grad_norm.item()} at step {step}: lower the learning rate "
                                   "or set max_grad_norm")
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        step += 1
        losses.append(loss_sum)

        if master and (step % cfg.log_every == 0 or step == total):
            dt = time.perf_counter() - t_log
            rec = {"step": step, "loss": loss_sum, "lr": lr_sched.get_last_lr()[0], "grad_norm": float(grad_norm),
                   "samples_per_s": items / dt, "data_wait_s": wait, "peak_mem_mb": peak_memory_mb(device)}
            with open(run / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            for k, v in rec.items():
                if k != "step":
                    tb.add_scalar(f"{stage}/{k}", v, step)
            log(f"step {step:6d}  loss {loss_sum:.4f}  grad {float(grad_norm):.3f}  "
                f"{rec['samples_per_s']:.2f} samples/s  data wait {wait:.2f}s")
            t_log, wait, items = time.perf_counter(), 0.0, 0
        if master and cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < total:
            checkpoint(run / f"{stage}_step{step:07d}.pt")
            checkpoint(run / f"{stage}_last.pt")
            prune_checkpoints(run, stage, cfg.keep_checkpoints)
        if master and cfg.val_every and step % cfg.val_every == 0:
            if validator is None:
                from trainer.validation import Validator

                validator = Validator(cfg, stage, log)
            rec = validator.run(model, ema, params, step, device, run, tb)
            if rec:
                log(f"step {step:6d}  validation on {rec['val/clips']} test clips: PSNR region "
                    f"{rec['val/psnr_region']:.2f} dB  SSIM region {rec['val/ssim_region']:.4f}")

    final = None
    if master:
        final = run / f"{stage}_last.pt"
        checkpoint(final)
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        export_pretrained(model, run / f"export_{stage}", cfg.to_dict())
        if ema is not None:
            ema.restore(params)
        tb.close()
        log(f"done: {step} steps, last loss {losses[-1] if losses else float('nan'):.4f}; checkpoint {final}; "
            f"diffusers export {run / f'export_{stage}'}")
        log(f"items drawn per source (this process): {drawn}")
    if world > 1:
        dist.barrier()  # ranks leave together, after rank 0 has written the checkpoint
        dist.destroy_process_group()
    return {"step": step, "losses": losses, "checkpoint": str(final) if final else None, "run_dir": str(run),
            "sources_drawn": drawn}

