"""Preview of human stores: the reference, frames, skeleton maps and the skeleton over the frame.

Per sample, one row: O_B (background) | for the first, middle and last frame: RGB, skeleton S,
S blended over the RGB with the person mask's outline (when the store has masks).
The optional GIF shows RGB | skeleton over RGB per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

THUMB = 128
LABEL_H = 14


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
    rows = [(int(i), _row(reader, int(i))) for i in idx]
    n_cols = max(len(r) for _, r in rows)
    row_h = THUMB + 2 * LABEL_H
    sheet = Image.new("RGB", (n_cols * THUMB, len(rows) * row_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (i, tiles) in enumerate(rows):
        y = r * row_h
        draw.text((4, y + 1), f"sample {i}: {reader.key(i)}", fill=(255, 255, 160))
        for c, (tile, label) in enumerate(tiles):
            sheet.paste(tile, (c * THUMB, y + LABEL_H))
            draw.text((c * THUMB + 3, y + LABEL_H + THUMB + 1), label, fill=(220, 220, 220))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    written = [out_png]
    if gif is not None:
        clips = [reader.read(int(i), names=["rgb", "skeleton"]) for i in idx]
        frames = []
        for t in range(reader.layout.frames):
            rows_img = [np.concatenate([np.asarray(_thumb(c["rgb"][t])),
                                        np.asarray(_thumb(blend(c["rgb"][t], c["skeleton"][t])))], axis=1)
                        for c in clips]
            frames.append(Image.fromarray(np.concatenate(rows_img, axis=0)))
        gif = Path(gif)
        gif.parent.mkdir(parents=True, exist_ok=True)
        frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
        written.append(gif)
    return written
