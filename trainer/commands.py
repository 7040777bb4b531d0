"""Typer-annotated entry points; cli.py registers them as ``train`` and ``sample``.

Heavy imports (torch, diffusers) happen inside the functions so ``python cli.py --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import UserError

# options that define the model a checkpoint holds: a stage-2 run or a resumed run must keep them
MODEL_KEYS = ("preset", "resolution", "block_out_channels", "layers_per_block", "attention_head_dim",
              "norm_num_groups", "cross_attention_dim", "vae_block_out_channels", "vae_layers_per_block",
              "vae_scale", "pose_guider_channels", "pose_guider_mode", "mlo_mode", "token_grid",
              "embed_channels", "prediction_type", "zero_terminal_snr", "num_train_timesteps", "tau")
# options that fix where the data stream stands at a given step (resume restarts it from step x batch x accum)
DATA_POSITION_KEYS = ("stage1_batch", "stage2_batch", "grad_accum", "seed", "frames")


def train(
    stage: Annotated[str, typer.Argument(help="stage1 (image) or stage2 (temporal: motion modules only)")],
    config: Annotated[Path | None, typer.Option(help="YAML/JSON file of TrainConfig options")] = None,
    preset: Annotated[str | None, typer.Option(help="tiny (CPU smoke size) or sd15 (paper size)")] = None,
    init: Annotated[Path | None, typer.Option(help="stage-1 checkpoint to start stage 2 from")] = None,
    resume: Annotated[Path | None, typer.Option(help="checkpoint of this stage to continue exactly")] = None,
    store: Annotated[list[str] | None, typer.Option(help="store folder (repeatable; overrides config 'stores')")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="output folder (checkpoints, metrics.jsonl, tb/)")] = None,
    steps: Annotated[int | None, typer.Option(help="stop at this optimiser step (total; default: config)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override an option: key=value (repeatable)")] = None,
):
    """Train one stage; writes checkpoints, metrics.jsonl, TensorBoard logs and a diffusers export."""
    from trainer.config import STAGES, load_config
    from trainer.train import train as run_training

    if stage not in STAGES:
        raise UserError(f"stage must be one of {STAGES}, got {stage!r}")
    overrides = list(set_ or [])
    if store:
        overrides.append("stores=[" + ", ".join(repr(s) for s in store) + "]")
    if run_dir:
        overrides.append(f"run_dir={run_dir}")
    from trainer.checkpoint import load_checkpoint

    # --resume continues the run's own config; stage 2 --init starts from the stage-1 run's
    # config (the model it loads). --config / --set / --store still override, within limits.
    source = resume or init
    base = load_checkpoint(source)["config"] if source else None
    cfg = load_config(preset, config, overrides, base=base)
    if base is not None:
        fixed = MODEL_KEYS + (DATA_POSITION_KEYS if resume else ())
        changed = [k for k in fixed if k in base and getattr(cfg, k) != base[k]]
        if changed:
            what = "resuming" if resume else "starting from a stage-1 checkpoint"
            raise UserError(f"cannot change {', '.join(changed)} when {what} ({source} was trained with "
                            f"{', '.join(f'{k}={base[k]!r}' for k in changed)})")
    summary = run_training(cfg, stage, init=str(init) if init else None, resume=str(resume) if resume else None,
                           max_steps=steps, log=typer.echo)
    if summary["checkpoint"]:  # rank 0 only under torchrun
        typer.echo(f"== {stage} done: {summary['step']} steps; checkpoint {summary['checkpoint']} ==")


def sample(
    checkpoint: Annotated[Path, typer.Option(help="trainer checkpoint (.pt)")],
    store: Annotated[Path, typer.Option(help="store to take the conditions and ground truth from")],
    index: Annotated[int, typer.Option(help="sample index in the store")] = 0,
    out: Annotated[Path, typer.Option(help="output video (.mp4); *_side.mp4 and *.json are written beside it")] = Path("sample.mp4"),
    steps: Annotated[int | None, typer.Option(help="DDIM steps (default: config sample_steps)")] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
):
    """DDIM-sample one store sample's clip; write the video, a side-by-side and region PSNR/SSIM."""
    from trainer.sample import sample_store

    result = sample_store(str(checkpoint), str(store), index, str(out), steps, guidance, seed)
    m = result["metrics"]
    typer.echo(f"PSNR (hand-object region) {m['psnr_region']:.2f} dB  SSIM {m['ssim_region']:.4f}  "
               f"(full-frame PSNR {m['psnr_full']:.2f} dB; the VAE round trip alone reaches "
               f"{m['psnr_region_vae_roundtrip']:.2f} dB)")
    typer.echo("wrote " + ", ".join(result["paths"]))
