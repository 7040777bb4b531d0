"""Preview of human stores: the reference, frames, skeleton maps and the skeleton over the frame.

Per sample, one row: O_B (background) | for the first, middle and last frame: RGB, skeleton S,
S blended over the RGB with the person mask's outline (when the store has masks).
The optional GIF shows RGB | skeleton over RGB per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.inspection.preview import save_gif, save_sheet

THUMB = 128


def blend(rgb: np.ndarray, skeleton: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """uint8 [R, R, 3]: the skeleton's drawn pixels over a dimmed frame; mask outline in white."""
    out = (rgb.astype(np.float32) * 0.6).astype(np.uint8)
    drawn = skeleton.any(axis=-1)
    out[drawn] = skeleton[drawn]
    if mask is not None and mask.any():
        inner = np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
        edge = mask & ~inner
        out[edge] = 255
    return out


def _thumb(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img).resize((THUMB, THUMB), Image.NEAREST)


def _row(reader, i: int) -> list[tuple[Image.Image, str]]:
    s = reader.read(i, names=["rgb", "background", "skeleton", "person_mask"])
    has_mask = bool(reader.attrs(i).get("has_person_mask"))
    T = s["rgb"].shape[0]
    tiles = [(_thumb(s["background"]), f"O_B (frame {reader.attrs(i).get('reference_frame', '?')})")]
    for t in sorted({0, T // 2, T - 1}):
        m = s["person_mask"][t] if has_mask else None
        tiles += [(_thumb(s["rgb"][t]), f"rgb t={t}"), (_thumb(s["skeleton"][t]), f"S t={t}"),
                  (_thumb(blend(s["rgb"][t], s["skeleton"][t], m)),
                   "S over rgb" + (" +mask" if has_mask else ""))]
    return tiles


def preview_human(reader, out_png: Path, n_samples: int = 3, gif: Path | None = None) -> list[Path]:
    """Write the human contact sheet (and an optional GIF); returns the paths written."""
    idx = np.linspace(0, len(reader) - 1, min(n_samples, len(reader))).round().astype(int)
    blocks = [(f"sample {i}: {reader.key(int(i))}", [_row(reader, int(i))]) for i in idx]
    written = [save_sheet(blocks, out_png)]
    if gif is not None:
        clips = [reader.read(int(i), names=["rgb", "skeleton"]) for i in idx]
        frames = [np.concatenate([np.concatenate([np.asarray(_thumb(c["rgb"][t])),
                                                  np.asarray(_thumb(blend(c["rgb"][t], c["skeleton"][t])))], axis=1)
                                  for c in clips], axis=0) for t in range(reader.layout.frames)]
        written.append(save_gif(frames, gif))
    return written
