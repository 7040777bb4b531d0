"""Preview of HOI stores: every MLO layer of a frame side by side, and the layers over the RGB.

Per sample (middle frame), three rows:
  1. RGB crop | hand overlay (each layer's front-most pixels tinted by part, 21 joints
     drawn, left = cool colours, right = warm) | background | object reference (front);
  2. the 13 layers' normal maps (object, left palm..pinky, right palm..pinky);
  3. the 13 layers' occlusion confidence D (white = in front, dark = hidden; black = absent).
The optional GIF shows RGB | overlay per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.inspection.preview import save_gif, save_sheet
from schemas import LAYER_NAMES
from schemas.occlusion import occlusion_confidence

THUMB = 128
# per layer: overlay colour (object grey-blue; left hand cool; right hand warm)
COLORS = np.array([(90, 140, 255)] + [(40, 200 - 25 * k, 255 - 20 * k) for k in range(6)]
                  + [(255, 60 + 30 * k, 40 + 10 * k) for k in range(6)], np.float32)


def overlay(rgb: np.ndarray, depth: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 [R,R,3]: ``rgb`` with each pixel's front-most layer (depth [L,R,R]) tinted."""
    far = np.where(depth > 0, depth.astype(np.float32), np.inf)
    front = far.argmin(axis=0)
    covered = np.isfinite(far.min(axis=0))
    out = rgb.astype(np.float32)
    out[covered] = (1 - alpha) * out[covered] + alpha * COLORS[front[covered]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _joints(img: Image.Image, joints_2d: np.ndarray, valid: np.ndarray, scale: float) -> None:
    draw = ImageDraw.Draw(img)
    for h in range(2):
        if not valid[h]:
            continue
        col = (60, 220, 255) if h == 0 else (255, 230, 60)
        p = joints_2d[h] * scale
        for f in range(5):  # wrist -> finger chains (DexYCB order: 1-4 thumb, 5-8 index, ...)
            chain = [0] + list(range(1 + 4 * f, 5 + 4 * f))
            draw.line([tuple(p[j]) for j in chain], fill=col, width=1)


def _thumb(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img).resize((THUMB, THUMB), Image.BILINEAR)


def _sample_rows(reader, i: int) -> list[list[tuple[Image.Image, str]]]:
    s = reader.read(i)
    t = s["rgb"].shape[0] // 2
    R = s["rgb"].shape[1]
    layers = list(reader.layout.layers)
    depth = np.zeros((len(LAYER_NAMES), R, R), np.float32)
    normal = np.zeros((len(LAYER_NAMES), R, R, 3), np.uint8)
    for k, name in enumerate(layers):
        depth[LAYER_NAMES.index(name)] = s["mlo_depth"][t, k]
        normal[LAYER_NAMES.index(name)] = s["mlo_normal"][t, k]
    ov = _thumb(overlay(s["rgb"][t], depth))
    _joints(ov, s["joints_2d"][t], s["hand_valid"][t], THUMB / R)
    D = occlusion_confidence(depth)
    row1 = [(_thumb(s["rgb"][t]), f"rgb t={t}"), (ov, "layers+joints"), (_thumb(s["background"]), "background"),
            (_thumb(s["ref_views"][0]), "ref front")]
    row2 = [(_thumb(normal[k]), n) for k, n in enumerate(LAYER_NAMES)]
    row3 = [(_thumb(np.repeat((D[k] * 255).astype(np.uint8)[..., None], 3, axis=-1)), f"D {n}")
            for k, n in enumerate(LAYER_NAMES)]
    return [row1, row2, row3]


def preview_hoi(reader, out_png: Path, n_samples: int = 3, gif: Path | None = None) -> list[Path]:
    """Write the HOI contact sheet (and an optional GIF); returns the paths written."""
    idx = np.linspace(0, len(reader) - 1, min(n_samples, len(reader))).round().astype(int)
    blocks = [(f"sample {i}: {reader.key(int(i))}", _sample_rows(reader, int(i))) for i in idx]
    written = [save_sheet(blocks, out_png)]
    if gif is not None:
        clips = [reader.read(int(i), names=["rgb", "mlo_depth"]) for i in idx]
        frames = [np.concatenate([np.concatenate([np.asarray(_thumb(c["rgb"][t])),
                                                  np.asarray(_thumb(overlay(c["rgb"][t], c["mlo_depth"][t])))], axis=1)
                                  for c in clips], axis=0) for t in range(reader.layout.frames)]
        written.append(save_gif(frames, gif))
    return written
