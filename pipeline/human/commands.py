"""CLI commands of the human half: ``render-human`` and ``make-demo-human`` (registered in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.engine.output import RETRY_FAILED_HELP, check_writable
from pipeline.errors import UserError
from schemas.config import MAX_PADDING


def render_human(
    root: Annotated[Path, typer.Option(help="folder of person videos: <video>/images/*.png (TikTok layout) "
                                            "or .mp4/.webm files")],
    out: Annotated[str, typer.Option(help="output store: a folder or an object-store URL (s3://...)")] = "out/human.zarr",
    frames: Annotated[int, typer.Option(help="T, frames per sample (window)")] = 16,
    stride: Annotated[int, typer.Option(help="take every stride-th frame")] = 1,
    resolution: Annotated[int, typer.Option(help="R, square crop side after resizing")] = 512,
    crop_margin: Annotated[float, typer.Option(help="crop side / the clip's keypoint box side")] = 1.3,
    min_person_frames: Annotated[float, typer.Option(help="fail a clip with a person in fewer of its "
                                                          "frames")] = 0.5,
    max_clips_per_video: Annotated[int, typer.Option(help="at most this many clips per video; 0 = all")] = 0,
    max_padding: Annotated[float, typer.Option(
        help="do not write clips whose crop is more than this fraction padding outside the video frame "
             "in some frame (counted in the summary)")] = MAX_PADDING,
    samples_per_shard: Annotated[int, typer.Option(help="samples per shard (= per task); 0 = auto")] = 0,
    workers: Annotated[int, typer.Option(help="Ray workers")] = 2,
    address: Annotated[str | None, typer.Option(help="join this Ray cluster ('auto' or HOST:6379)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds per video before it is recorded as failed")] = 600.0,
    overwrite: Annotated[bool, typer.Option(help="replace a store made with other arguments")] = False,
    retry_failed: Annotated[str | None, typer.Option(metavar="[STAGE,...]", help=RETRY_FAILED_HELP)] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
):
    """Person videos -> a human store: RGB crops, reference O_B, skeleton maps, keypoints, masks."""
    from pipeline.engine import runner
    from pipeline.human import job as human_job
    from pipeline.human.config import HumanConfig
    from schemas.config import ConfigError

    try:
        cfg = HumanConfig(frames=frames, stride=stride, resolution=resolution,
                          samples_per_shard=samples_per_shard, crop_margin=crop_margin,
                          min_person_frames=min_person_frames, max_clips_per_video=max_clips_per_video,
                          max_padding=max_padding, timeout_s=timeout).validate()
    except ConfigError as e:
        raise UserError(str(e)) from None
    check_writable(out)
    job = human_job.build_job(root, out, cfg, workers)
    summary = runner.run(job, workers, address, timeout_s=timeout, progress=progress, overwrite=overwrite,
                         retry_failed=runner.retry_stages(retry_failed))
    typer.echo(summary.format())
    summary.raise_if_incomplete()


def make_demo_human(
    out: Annotated[Path, typer.Argument(help="folder to write the synthetic dataset into")],
    frames: Annotated[int, typer.Option(help="frames per video")] = 24,
    seed: Annotated[int, typer.Option(help="seed (rooms)")] = 0,
):
    """A small person-video dataset: a drawn moving figure, OpenPose JSON keypoints, TikTok layout + mp4."""
    from pipeline.human.demo import make_demo

    if frames < 2:
        raise UserError(f"--frames must be >= 2, got {frames}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new folder")
    check_writable(out)
    names = make_demo(out, frames, seed)
    typer.echo(f"wrote {len(names)} demo videos ({', '.join(names)}; {frames} frames each) to {out}\n"
               f"next: python cli.py render-human --root {out} --frames 8 --resolution 64")
