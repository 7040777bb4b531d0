"""``python cli.py generate``: a manipulation video from a new hand-object motion.

Input: a sequence folder in the project's open sequence format (``pipeline.sequence_format``;
``export-sequence`` writes any supported dataset's sequences in it), one of its cameras, and the
object's mesh named by the sequence (reference views rendered with the pipeline's code) or the
user's own six reference images and background.

The conditions are rendered on the fly by the pipeline itself, exactly as ``render-hoi sequence``
renders a store sample (no copy of that code; ``pipeline.hoi.sequence_conditions``, passed in by
``cli.py``): the sequence adapter builds the clip, the HOI sample builder renders the 13 MLO layers (normals + depth, from which D is computed), the
object's reference views and its point cloud, and crops everything to one square box around
the hand-object region of the whole motion. The whole motion is one clip: a motion longer than
the trained window (cfg.frames) is sampled with overlapping, blended windows
(``trainer.inference``), so a 120-frame motion gives one 120-frame video.

Output folder: ``video.mp4``, ``side.mp4`` (front-layer normals | occlusion confidence D |
generated | the sequence's own frames), ``inputs.png`` (the six references and the background),
``inputs.json`` (everything the run used).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError
from schemas.store import LAYER_NAMES, REF_VIEW_NAMES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
    except OSError as e:
        raise UserError(f"{path}: unreadable image ({type(e).__name__})") from None


def user_references(folder: Path, size: int) -> np.ndarray:
    """uint8 [6, R, R, 3] from ``folder/<view>.(png|jpg)`` for each of REF_VIEW_NAMES."""
    views = []
    for name in REF_VIEW_NAMES:
        found = [folder / f"{name}{s}" for s in IMAGE_SUFFIXES if (folder / f"{name}{s}").is_file()]
        if not found:
            raise UserError(f"--ref-images {folder}: no {name}.png/.jpg (needs {', '.join(REF_VIEW_NAMES)})")
        views.append(_image(found[0], size))
    return np.stack(views)


def item_from_sample(sample: dict, refs: np.ndarray, background: np.ndarray, first_frame: bool) -> dict:
    """A raw trainer item (``trainer.conditions`` layout) from a contract sample with all 13 layers."""
    ref_list = [refs, background[None]]
    if first_frame:
        ref_list.append(sample["rgb"][:1])
    from trainer.conditions import SOURCES

    return {"rgb": sample["rgb"], "normal": sample["mlo_normal"], "depth": sample["mlo_depth"],
            "layer_idx": np.arange(len(LAYER_NAMES), dtype=np.int64), "refs": np.concatenate(ref_list),
            "points": np.concatenate([sample["points"], sample["point_normals"]], axis=1).astype(np.float32),
            "source": np.int64(SOURCES.index("hoi")), "ref_keep": np.float32(1.0),
            "jitter": np.ones(3, np.float32), "flip": np.bool_(False)}


def _u8(x: torch.Tensor) -> np.ndarray:
    """[F, 3, R, R] in [0, 1] -> uint8 [F, R, R, 3]."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as w:
        for f in frames:
            w.append_data(f)


def generate(checkpoint: str, sequence: str | None, out: str, camera: str | None = None, ref_images: str | None = None,
             background: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
             overlap: int | None = None, hand_model: str = "mano", mano_dir: str | None = None, fps: int = 8,
             device: str | None = None, log=print, motion: str | None = None, object_mesh: str | None = None,
             render_conditions=None) -> dict:
    """Generate the video of ``sequence`` (a sequence folder) or of ``motion`` (a MANO .npz, with
    ``object_mesh``; ``trainer.motion_input``); returns the inputs.json content.

    ``render_conditions(folder, camera, resolution, hand_model, mano_dir, log) -> (sample, used)``
    renders the contract sample of the whole sequence: the HOI pipeline's
    ``pipeline.hoi.sequence_conditions.render_conditions``, which ``cli.py`` passes in (the trainer
    does not import a job folder)."""
    import imageio.v2 as imageio

    from trainer.checkpoint import load_any
    from trainer.inference import condition_images, sample_clips

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not Path(checkpoint).exists():
        raise UserError(f"checkpoint {checkpoint} does not exist")
    for p, opt in ((ref_images, "--ref-images"), (background, "--background")):
        if p and not Path(p).exists():
            raise UserError(f"{opt} {p} does not exist")
    if (sequence is None) == (motion is None):
        raise UserError("give exactly one of --sequence (a sequence folder) or --motion (a MANO .npz)")
    if motion is not None:
        from trainer.motion_input import sequence_from_motion

        if object_mesh is None:
            raise UserError("--motion needs --object-mesh (the object's mesh, metres)")
        sequence = str(sequence_from_motion(Path(motion), Path(object_mesh), Path(out) / "motion_sequence",
                                            Path(background) if background else None))
        log(f"wrote the motion as a sequence folder: {sequence}")
    if render_conditions is None:
        raise TypeError("generate() needs render_conditions (pipeline.hoi.sequence_conditions.render_conditions)")
    model, cfg, stage = load_any(checkpoint)
    model.to(dev).eval()
    sample, used = render_conditions(Path(sequence), camera, cfg.resolution, hand_model, mano_dir, log)
    R = cfg.resolution
    refs = user_references(Path(ref_images), R) if ref_images else sample["ref_views"]
    bg = _image(Path(background), R) if background else sample["background"]
    item = item_from_sample(sample, refs, bg, cfg.ref_first_frame)
    steps = steps or cfg.sample_steps
    n = sample["rgb"].shape[0]
    log(f"sampling {n} frames with the {stage} model ({steps} DDIM steps, window {cfg.frames}) on {dev}")
    res = sample_clips(model, [item], cfg, dev, steps, guidance, seeds=[seed], window=cfg.frames, overlap=overlap)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    video = _u8(res["video"][0])
    normals = _u8(condition_images(res["cond"], cfg)[0])
    d = res["cond"]["D"][0].amax(dim=1, keepdim=True).expand(-1, 3, -1, -1).cpu()      # F, 3, R, R
    truth = _u8(res["truth"][0])
    _write_video(out_dir / "video.mp4", video, fps)
    _write_video(out_dir / "side.mp4", np.concatenate([normals, _u8(d), video, truth], axis=2), fps)
    imageio.imwrite(out_dir / "inputs.png", np.concatenate(list(refs) + [bg], axis=1))
    info = {**used, "checkpoint": str(Path(checkpoint).resolve()), "stage": stage, "steps": steps,
            "guidance": cfg.guidance_scale if guidance is None else guidance, "seed": seed, "window": cfg.frames,
            "windows": [list(w) for w in res["windows"]], "resolution": R,
            "references": str(Path(ref_images).resolve()) if ref_images else "rendered from the object mesh",
            "background": str(Path(background).resolve()) if background else "the sequence's background, cropped",
            "outputs": ["video.mp4", "side.mp4 (normals | D | generated | sequence frames)", "inputs.png"]}
    (out_dir / "inputs.json").write_text(json.dumps(info, indent=2))
    log(f"wrote {out_dir / 'video.mp4'} ({n} frames, {len(res['windows'])} windows), side.mp4, inputs.png, inputs.json")
    return info
