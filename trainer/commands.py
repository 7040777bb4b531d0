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
    store: Annotated[list[str] | None, typer.Option(help="store folder or object-store URL (repeatable; overrides "
                                                         "config 'stores')")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="output folder (checkpoints, metrics.jsonl, tb/)")] = None,
    steps: Annotated[int | None, typer.Option(help="stop at this optimiser step (total; default: config)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override an option: key=value (repeatable)")] = None,
    split: Annotated[str | None, typer.Option(help="train on this side of the held-out split: train | test | all")] = None,
    require_pretrained: Annotated[bool, typer.Option(help="error (not a warning) when sd15 has no pretrained_sd15")] = False,
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
    if split:
        overrides.append(f"split={split}")
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
    check_pretrained(cfg, require_pretrained, resumed=base is not None, echo=typer.echo)
    summary = run_training(cfg, stage, init=str(init) if init else None, resume=str(resume) if resume else None,
                           max_steps=steps, log=typer.echo)
    if summary["checkpoint"]:  # rank 0 only under torchrun
        typer.echo(f"== {stage} done: {summary['step']} steps; checkpoint {summary['checkpoint']} ==")


def check_pretrained(cfg, require: bool, resumed: bool = False, echo=None) -> None:
    """The sd15 preset without ``pretrained_sd15`` starts from random weights, which trains nothing useful
    at this budget: a loud warning, or a UserError with ``--require-pretrained``. A resumed / stage-2
    run takes its weights from the checkpoint, so it is not checked."""
    if cfg.preset != "sd15" or cfg.pretrained_sd15 or resumed:
        return
    msg = ("sd15 preset without pretrained_sd15: the UNet and VAE are RANDOMLY INITIALISED; training SD1.5 "
           "from scratch at this budget produces nothing useful. Set pretrained_sd15=/path/to/stable-diffusion-v1-5")
    if require:
        raise UserError(msg)
    bar = "!" * 100
    echo = echo or typer.echo
    echo(f"{bar}\nWARNING: {msg}\n{bar}", err=True)


def sample(
    checkpoint: Annotated[Path, typer.Option(help="trainer checkpoint (.pt) or its diffusers export folder")],
    store: Annotated[str, typer.Option(help="store (folder or object-store URL) to take the conditions and ground "
                                            "truth from")],
    index: Annotated[int, typer.Option(help="sample index in the store")] = 0,
    out: Annotated[Path, typer.Option(help="output video (.mp4); *_side.mp4 and *.json are written beside it")] = Path("sample.mp4"),
    steps: Annotated[int | None, typer.Option(help="DDIM steps (default: config sample_steps)")] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
    split: Annotated[str, typer.Option(help="--index counts within this split: train | test | all")] = "all",
):
    """DDIM-sample one store sample's clip; write the video, a side-by-side and region PSNR/SSIM."""
    from trainer.sample import sample_store

    if split not in ("train", "test", "all"):
        raise UserError(f"--split must be train, test or all, got {split!r}")
    result = sample_store(str(checkpoint), str(store), index, str(out), steps, guidance, seed, split=split)
    m = result["metrics"]
    typer.echo(f"PSNR ({m.get('region', 'hand-object')} region) {m['psnr_region']:.2f} dB  SSIM {m['ssim_region']:.4f}  "
               f"(full-frame PSNR {m['psnr_full']:.2f} dB; the latent round trip alone reaches "
               f"{m['psnr_region_vae_roundtrip']:.2f} dB)")
    typer.echo("wrote " + ", ".join(result["paths"]))


def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="trainer checkpoint (.pt) or its diffusers export folder")],
    store: Annotated[list[str], typer.Option(help="store to evaluate on (repeatable)")],
    out: Annotated[Path, typer.Option(help="results folder (resumable: finished clips are kept)")],
    split: Annotated[str, typer.Option(help="which samples: test (held out) | train | all")] = "test",
    steps: Annotated[int | None, typer.Option(help="DDIM steps (default: config sample_steps)")] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    seed: Annotated[int, typer.Option(help="noise seed (clip i of store k uses seed + 1000 k + i)")] = 0,
    batch: Annotated[int, typer.Option(help="clips denoised together")] = 4,
    limit: Annotated[int | None, typer.Option(help="at most this many clips")] = None,
    inception: Annotated[Path | None, typer.Option(help="FID Inception weights, pt_inception-2015-12-05-6726825d.pth")] = None,
    lpips_trunk: Annotated[Path | None, typer.Option(help="LPIPS AlexNet trunk, alexnet-owt-7be5be79.pth")] = None,
    lpips_lin: Annotated[Path | None, typer.Option(help="LPIPS v0.1 linear layers, alex.pth")] = None,
    i3d: Annotated[Path | None, typer.Option(help="FVD I3D TorchScript, i3d_torchscript.pt")] = None,
    hands: Annotated[bool, typer.Option(help="hand keypoint metric (needs the [human] extra)")] = True,
    random_init_networks: Annotated[bool, typer.Option(help="TEST ONLY: random-weight Inception / LPIPS")] = False,
    compare: Annotated[str | None, typer.Option(help="'paper': show the paper's Table 1 / 2 rows")] = None,
):
    """Generate every held-out clip and score it: PSNR, SSIM, LPIPS, FID, FVD, hand keypoint error."""
    from trainer.evaluate import evaluate as run_evaluation

    if split not in ("train", "test", "all"):
        raise UserError(f"--split must be train, test or all, got {split!r}")
    if compare not in (None, "paper"):
        raise UserError(f"--compare takes 'paper', got {compare!r}")
    run_evaluation(str(checkpoint), list(store), str(out), split, steps, guidance, seed, batch, limit, inception,
                   lpips_trunk, lpips_lin, i3d, hands, random_init_networks, compare, log=typer.echo)

