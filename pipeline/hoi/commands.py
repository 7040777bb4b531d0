"""CLI commands of the HOI half: ``render-hoi`` and ``make-demo-hoi`` (registered in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.engine.output import RETRY_FAILED_HELP, check_writable
from pipeline.errors import UserError
from schemas.config import MAX_PADDING

WINDOW_FRAMES = 16  # render-hoi's default window (T)


def render_hoi(
    dataset: Annotated[str, typer.Argument(help="dataset: dexycb, arctic, taco, oakink2, hot3d or sequence (the open per-sequence format)")],
    root: Annotated[Path, typer.Option(help="dataset root (DexYCB: folder with calibration/, models/, subjects)")],
    mano_dir: Annotated[Path | None, typer.Option(help="folder with MANO_RIGHT/MANO_LEFT .pkl (https://mano.is.tue.mpg.de)")] = None,
    hand_model: Annotated[str, typer.Option(help="'mano' (your licensed files) or 'stand-in' (generated, not MANO)")] = "mano",
    out: Annotated[str, typer.Option(help="output store: a folder or an object-store URL (s3://...)")] = "out/hoi.zarr",
    subjects: Annotated[list[str] | None, typer.Option(help="subjects to use (name or suffix, repeatable)")] = None,
    sequences: Annotated[list[str] | None, typer.Option(help="sequences to use (repeatable)")] = None,
    cameras: Annotated[list[str] | None, typer.Option(
        help="cameras to use (repeatable): serials, ARCTIC views, OakInk2 names or serials, HOT3D stream ids")] = None,
    frames: Annotated[int, typer.Option(help="T, frames per sample (window)")] = WINDOW_FRAMES,
    stride: Annotated[int, typer.Option(help="take every stride-th frame")] = 1,
    resolution: Annotated[int, typer.Option(help="R, square crop side after resizing")] = 512,
    crop_margin: Annotated[float, typer.Option(help="crop side / hand-object box side")] = 1.25,
    fix_left_shapedirs: Annotated[bool | None, typer.Option(
        "--fix-left-shapedirs/--no-fix-left-shapedirs",
        help="negate MANO_LEFT shapedirs x; default: as the dataset was annotated (DexYCB: no)")] = None,
    split: Annotated[str | None, typer.Option(
        help="the dataset's official split (DexYCB: s0-train .. s3-test; ARCTIC: p1-train ..; TACO: train, test_1 ..; "
             "HOT3D: train; OakInk2 has none)")] = None,
    min_valid_frames: Annotated[float, typer.Option(
        help="skip windows where fewer than this fraction of frames have an annotated hand")] = 0.5,
    max_joint_error_mm: Annotated[float, typer.Option(
        help="fail a clip whose MANO joints miss the dataset's joint labels by more (mm)")] = 5.0,
    max_padding: Annotated[float, typer.Option(
        help="do not write windows whose crop is more than this fraction padding outside the camera image "
             "in some frame (counted in the summary)")] = MAX_PADDING,
    samples_per_shard: Annotated[int, typer.Option(help="samples per shard (= per task); 0 = auto, up to 8")] = 0,
    seed: Annotated[int, typer.Option(help="seed (object point sampling)")] = 0,
    workers: Annotated[int, typer.Option(help="Ray workers (one EGL context each)")] = 2,
    gpus_per_worker: Annotated[float | None, typer.Option(help="GPUs per worker; default: share local GPUs")] = None,
    address: Annotated[str | None, typer.Option(help="join this Ray cluster (e.g. 'auto' or HOST:6379)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds per item (sequence x camera) before it is recorded as failed")] = 600.0,
    overwrite: Annotated[bool, typer.Option(help="replace a store made with other arguments")] = False,
    retry_failed: Annotated[str | None, typer.Option(metavar="[STAGE,...]", help=RETRY_FAILED_HELP)] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
):
    """Hand-object dataset -> an HOI store: RGB crops, 13 MLO layers, object views/points, MANO, joints."""
    from pipeline.engine import runner
    from pipeline.hoi import job as hoi_job
    from pipeline.hoi.datasets import get_adapter
    from schemas.config import ConfigError, HoiConfig

    get_adapter(dataset)  # unknown name: one line naming the choices
    try:
        cfg = HoiConfig(frames=frames, stride=stride, resolution=resolution, samples_per_shard=samples_per_shard,
                        crop_margin=crop_margin, hand_model=hand_model, fix_left_shapedirs=fix_left_shapedirs,
                        max_joint_error_mm=max_joint_error_mm, max_padding=max_padding, seed=seed,
                        timeout_s=timeout).validate()
    except ConfigError as e:
        raise UserError(str(e)) from None
    if not 0.0 <= min_valid_frames <= 1.0:
        raise UserError(f"--min-valid-frames must be in 0..1, got {min_valid_frames}")
    check_writable(out)
    selection = {"subjects": subjects, "sequences": sequences, "cameras": cameras, "split": split,
                 "min_valid_frames": min_valid_frames}  # adapter.make_selection adds frames and stride
    gpus = runner.auto_gpus_per_worker(workers, address) if gpus_per_worker is None else gpus_per_worker
    job = hoi_job.build_job(dataset, root, out, cfg, selection, str(mano_dir) if mano_dir else None, gpus,
                                workers)
    if cfg.hand_model == "stand-in":
        typer.echo("note: hands are the stand-in hand (not MANO)", err=True)
    for note in job.notes:
        typer.echo(f"note: {note}", err=True)
    summary = runner.run(job, workers, address, timeout_s=timeout, progress=progress, overwrite=overwrite,
                         retry_failed=runner.retry_stages(retry_failed))
    typer.echo(summary.format())
    summary.raise_if_incomplete()


def make_demo_hoi(
    out: Annotated[Path, typer.Argument(help="folder to write the synthetic dataset into")],
    layout: Annotated[str, typer.Option(help="on-disk layout to write: a dataset name of render-hoi")] = "dexycb",
    frames: Annotated[int, typer.Option(help="frames in the sequence")] = 12,
    seed: Annotated[int, typer.Option(help="seed (background noise)")] = 0,
):
    """A small synthetic dataset in a dataset's exact on-disk layout (stand-in hands, not MANO)."""
    from pipeline.hoi import demo

    if layout not in demo.LAYOUTS:
        raise UserError(f"unknown --layout {layout!r}; available: {', '.join(demo.LAYOUTS)}")
    if frames < 3:
        raise UserError(f"--frames must be >= 3, got {frames}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new folder")
    check_writable(out)
    demo.make_demo(layout, out, frames, seed)
    typer.echo(f"wrote a demo in the {layout} layout (stand-in hand (not MANO), {frames} frames) to {out}\n"
               f"next: python cli.py render-hoi {layout} --root {out} --hand-model stand-in"
               + (f" --frames {frames}" if frames < WINDOW_FRAMES else ""))  # a window the demo can fill


def export_sequence(
    dataset: Annotated[str, typer.Argument(help="dataset adapter to read (a render-hoi dataset name)")],
    root: Annotated[Path, typer.Option(help="dataset root, as for render-hoi")],
    out: Annotated[Path, typer.Option(help="folder to write the sequence folders into")],
    subjects: Annotated[list[str] | None, typer.Option(help="subjects to use (name or suffix, repeatable)")] = None,
    sequences: Annotated[list[str] | None, typer.Option(help="sequences to use (repeatable)")] = None,
    cameras: Annotated[list[str] | None, typer.Option(help="cameras to use (repeatable)")] = None,
    split: Annotated[str | None, typer.Option(help="the dataset's official split")] = None,
    hand_model: Annotated[str, typer.Option(help="'mano' or 'stand-in': converts PCA/relative poses to absolute")] = "mano",
    mano_dir: Annotated[Path | None, typer.Option(help="folder with MANO_RIGHT/MANO_LEFT .pkl")] = None,
    fix_left_shapedirs: Annotated[bool | None, typer.Option(
        "--fix-left-shapedirs/--no-fix-left-shapedirs",
        help="how the dataset's left hands were fitted; default: the dataset's own setting")] = None,
):
    """Write a dataset's sequences (one folder per sequence x camera) in the open sequence format."""
    from pipeline.hoi.export_sequence import export

    check_writable(out)
    selection = {"subjects": subjects, "sequences": sequences, "cameras": cameras, "split": split}
    summary = export(dataset, root, out, selection, hand_model, str(mano_dir) if mano_dir else None,
                     fix_left_shapedirs, echo=typer.echo)
    typer.echo(summary.format())
    if not summary.written:
        raise typer.Exit(1)
