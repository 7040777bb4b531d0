"""manivideo command line: data pipeline (render-objaverse, render-hoi), store tools, trainer.

Every command exits 0 on success, 2 with a one-line message on bad input (writing
nothing), and 1 on an unexpected internal error. A render command also exits 3 when some
shards kept failing outside any item (the others are done; the summary names them), and 4
when the store's device refused writes ("no space left on the device holding OUT", read-only,
no permission): no new shard was started, finished shards are kept, a rerun goes on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.engine.output import RETRY_FAILED_HELP
from pipeline.errors import RunIncomplete, StorageError, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ManiVideo data pipeline and trainer.")


@app.command("render-objaverse")
def render_objaverse(
    workers: Annotated[int, typer.Option(help="Ray workers (one EGL context each)")] = 2,
    source: Annotated[str, typer.Option(help="'objaverse', 'objaverse-xl', 'builtin' (demo objects) or a folder "
                                             "of meshes")] = "objaverse",
    out: Annotated[str, typer.Option(help="output store: a folder, or an object-store URL (s3://bucket/prefix/x.zarr, "
                                         "gs://...)")] = "out/objaverse.zarr",
    limit: Annotated[int | None, typer.Option(help="at most this many objects")] = None,
    uids: Annotated[Path | None, typer.Option(help="file of Objaverse uids or Objaverse-XL identifiers, one per line")] = None,
    lvis: Annotated[list[str] | None, typer.Option(help="keep only these LVIS categories (repeatable)")] = None,
    xl_source: Annotated[list[str] | None, typer.Option(help="objaverse-xl: keep only these sources (sketchfab, "
                                                        "smithsonian, thingiverse, github; repeatable)")] = None,
    license: Annotated[list[str] | None, typer.Option(help="objaverse-xl: keep only these licenses (repeatable)")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Objaverse cache (default ~/.objaverse/hf-objaverse-v1; "
                                                   "objaverse-xl: ~/.objaverse)")] = None,
    frames: Annotated[int, typer.Option(help="T, frames per clip")] = 24,
    resolution: Annotated[int, typer.Option(help="R, square image side")] = 512,
    clips: Annotated[int, typer.Option(help="clips (trajectories) per object")] = 1,
    yfov: Annotated[float, typer.Option(help="vertical field of view, degrees")] = 40.0,
    cam_distance: Annotated[float, typer.Option(help="camera distance (object fits a unit-diameter sphere)")] = 2.5,
    seed: Annotated[int, typer.Option(help="global seed")] = 0,
    samples_per_shard: Annotated[int, typer.Option(help="samples per shard (= per task); 0 = auto, up to 16")] = 0,
    max_faces: Annotated[int, typer.Option(help="refuse meshes with more faces")] = 2_000_000,
    min_faces: Annotated[int, typer.Option(help="skip (record) meshes with fewer faces")] = 0,
    min_coverage: Annotated[float, typer.Option(help="fail objects whose pixel fraction is below this in all six "
                                                "reference views ('degenerate framing')")] = 0.002,
    normalise: Annotated[str, typer.Option(help="canonical frame: 'bulk' of the surface area, or 'bbox' "
                                           "(farthest vertex)")] = "bulk",
    max_texture: Annotated[int, typer.Option(help="downscale textures to this side")] = 2048,
    rgb_renderer: Annotated[str, typer.Option(help="RGB frames and reference views: 'atlas' (own PBR shader, all "
                                              "images in one atlas pass) or 'pyrender'")] = "atlas",
    timeout: Annotated[float, typer.Option(help="seconds per object before it is killed and recorded")] = 600.0,
    address: Annotated[str | None, typer.Option(help="join this Ray cluster (e.g. 'auto' or HOST:6379)")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(
        help="GPUs per worker (NVIDIA EGL renders on the GPU Ray assigns); default: share local GPUs, 0 with "
             "--address")] = None,
    mirror: Annotated[str | None, typer.Option(
        help="objaverse: download from this URL (a mirror in the Hugging Face repo's layout: object-paths.json.gz, "
             "glbs/...) instead of Hugging Face; not part of the store's identity")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a store made with other arguments")] = False,
    retry_failed: Annotated[str | None, typer.Option(metavar="[STAGE,...]", help=RETRY_FAILED_HELP)] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
):
    """Objaverse / Objaverse-XL / local / built-in meshes -> an Objaverse store (RGB, object layer, 6 views, points)."""
    from pipeline.engine import runner
    from pipeline.engine.output import check_writable
    from pipeline.objaverse import job as objaverse_job
    from schemas.config import ConfigError, RenderConfig

    try:
        cfg = RenderConfig(frames=frames, resolution=resolution, yfov_deg=yfov, cam_distance=cam_distance,
                           clips_per_object=clips, seed=seed, samples_per_shard=samples_per_shard,
                           max_faces=max_faces, max_texture_px=max_texture, timeout_s=timeout, min_faces=min_faces,
                           min_coverage=min_coverage, normalise=normalise, rgb_renderer=rgb_renderer).validate()
    except ConfigError as e:
        raise UserError(str(e)) from None
    check_writable(out)
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise UserError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker:g}")
    gpus = runner.auto_gpus_per_worker(workers, address) if gpus_per_worker is None else gpus_per_worker
    job = objaverse_job.build_job(source, out, cfg, limit, str(uids) if uids else None, lvis,
                                  str(cache_dir) if cache_dir else None, workers, xl_source, license,
                                  num_gpus_per_worker=gpus, mirror=mirror)
    summary = runner.run(job, workers, address, timeout_s=timeout, progress=progress, overwrite=overwrite,
                         retry_failed=runner.retry_stages(retry_failed))
    typer.echo(summary.format())
    summary.raise_if_incomplete()


@app.command("inspect")
def inspect_store(store: Annotated[str, typer.Argument(help="store folder or object-store URL")],
                  as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
                  verify: Annotated[bool, typer.Option(help="also read every shard file and check its CRC-32C")] = False):
    """Samples, arrays (shape, dtype), size on disk, bytes per sample, failures by reason, corrupt shards."""
    from pipeline.inspection.inspect_store import format_report, inspect

    report = inspect(store, verify=verify)
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@app.command("preview")
def preview(
    store: Annotated[str, typer.Argument(help="store folder or object-store URL")],
    out: Annotated[Path, typer.Option(help="contact sheet PNG")] = Path("preview.png"),
    samples: Annotated[int, typer.Option(help="how many samples")] = 3,
    gif: Annotated[Path | None, typer.Option(help="also write an animated GIF of the clips")] = None,
):
    """A contact sheet (views, frames, normal and depth maps) to check a store by eye."""
    from pipeline.hoi.preview_hoi import preview_hoi
    from pipeline.human.preview_human import preview_human
    from pipeline.inspection.preview import write_preview

    paths = write_preview(store, out, samples, gif, by_kind={"hoi": preview_hoi, "human": preview_human})
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@app.command("export-sample")
def export_sample(store: Annotated[str, typer.Argument(help="store folder or object-store URL")], index: int, out: Path):
    """One sample's arrays, under the contract's names, to an .npz file."""
    from pipeline.inspection.export import export_npz

    export_npz(store, index, out)
    typer.echo(f"wrote {out}")


@app.command("view")
def view(
    store: Annotated[str, typer.Argument(help="store folder or object-store URL")],
    index: int,
    save: Annotated[Path | None, typer.Option(help="write a Rerun recording (.rrd) instead of opening the viewer")] = None,
    mano_dir: Annotated[Path | None, typer.Option(help="MANO .pkl folder, for stores made with MANO")] = None,
    tau: Annotated[float | None, typer.Option(help="occlusion-confidence softness (default: the trainer's)")] = None,
):
    """One sample in 3D with Rerun: frames, joints, each MLO layer, D, camera, hands, object points."""
    from pipeline.inspection.view import view as view_sample
    from schemas.occlusion import DEFAULT_TAU

    typer.echo(view_sample(store, index, save, str(mano_dir) if mano_dir else None,
                           DEFAULT_TAU if tau is None else tau))


# --- HOI commands ---
import pipeline.hoi.commands as hoi_commands  # noqa: E402

app.command("render-hoi")(hoi_commands.render_hoi)
app.command("make-demo-hoi")(hoi_commands.make_demo_hoi)
app.command("export-sequence")(hoi_commands.export_sequence)

# --- human commands ---
import pipeline.human.commands as human_commands  # noqa: E402

app.command("render-human")(human_commands.render_human)
app.command("make-demo-human")(human_commands.make_demo_human)

# --- trainer commands ---
import trainer.commands as train_commands  # noqa: E402

app.command("train")(train_commands.train)
app.command("sample")(train_commands.sample)
app.command("evaluate")(train_commands.evaluate)


def _optional_values(argv: list[str], defaults: dict[str, str]) -> None:
    """Options whose value may be left out (``--retry-failed`` alone = all stages): insert the default."""
    i = 1
    while i < len(argv):
        if argv[i] in defaults and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            argv.insert(i + 1, defaults[argv[i]])
        i += 1


# generate composes the two halves: the HOI pipeline renders the motion's conditions, the trainer samples
@app.command("generate")
def generate(
    checkpoint: Annotated[Path, typer.Option(help="trainer checkpoint (.pt) or its diffusers export folder")],
    out: Annotated[Path, typer.Option(help="output folder: video.mp4, side.mp4, inputs.png, inputs.json")],
    sequence: Annotated[Path | None, typer.Option(help="sequence folder in the open format (export-sequence "
                                                       "writes one)")] = None,
    motion: Annotated[Path | None, typer.Option(help="or: a MANO .npz (hand fields of hands.npz + object_poses, "
                                                     "K, width, height[, cam_to_world])")] = None,
    object_mesh: Annotated[Path | None, typer.Option(help="with --motion: the object's mesh (metres)")] = None,
    camera: Annotated[str | None, typer.Option(help="camera of the sequence (default: the first)")] = None,
    ref_images: Annotated[Path | None, typer.Option(help="folder with front/back/left/right/top/bottom images "
                                                         "(default: rendered from the object mesh)")] = None,
    background: Annotated[Path | None, typer.Option(help="background image (default: the sequence's)")] = None,
    steps: Annotated[int | None, typer.Option(help="DDIM steps (default: config sample_steps)")] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
    overlap: Annotated[int | None, typer.Option(help="frames shared by consecutive windows (default window/4)")] = None,
    hand_model: Annotated[str, typer.Option(help="'mano' (needs --mano-dir) or 'stand-in'")] = "mano",
    mano_dir: Annotated[Path | None, typer.Option(help="folder with MANO_RIGHT/MANO_LEFT .pkl")] = None,
    fps: Annotated[int, typer.Option(help="frames per second of the videos")] = 8,
):
    """A manipulation video from a hand-object motion (any length: blended overlapping windows)."""
    from pipeline.hoi.sequence_conditions import render_conditions
    from trainer.generate import generate as run_generate

    run_generate(str(checkpoint), str(sequence) if sequence else None, str(out), camera,
                 str(ref_images) if ref_images else None, str(background) if background else None, steps, guidance,
                 seed, overlap, hand_model, str(mano_dir) if mano_dir else None, fps, log=typer.echo,
                 motion=str(motion) if motion else None, object_mesh=str(object_mesh) if object_mesh else None,
                 render_conditions=render_conditions)


def main() -> None:
    from schemas.config import ConfigError
    from schemas.store import SchemaError

    _optional_values(sys.argv, {"--retry-failed": "all"})
    try:
        app(standalone_mode=False)
    except (UserError, ConfigError, SchemaError) as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except RunIncomplete as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(3)
    except StorageError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(4)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:
        # usage errors (missing option, bad value, unknown command) from click, or from the copy
        # of click that typer vendors: one line, their own exit code (2)
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `python cli.py`: the help
            e.show()
            sys.exit(0)
        if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
            lines = e.format_message().splitlines() or [type(e).__name__]
            typer.echo(f"error: {lines[0]}", err=True)
            sys.exit(e.exit_code or 2)
        raise


if __name__ == "__main__":
    main()
