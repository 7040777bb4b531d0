"""Contact sheets and animations of a store, to check the data by eye.

Per sample, one row: the six reference views, the background, then for three frames
(first, middle, last) the RGB frame, the object layer's normal map and its depth map.
HOI stores get the per-layer view of ``pipeline.hoi.preview_hoi`` when it is available; human
stores the reference / frame / skeleton view of ``pipeline.human.preview_human``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.inspection.inspect_store import open_reader

THUMB = 160


def depth_to_gray(depth: np.ndarray) -> np.ndarray:
    """uint8 [...,H,W,3] from depth [...,H,W] (0 = absent -> black; near = bright)."""
    d = depth.astype(np.float32)
    present = d > 0
    if not present.any():
        return np.zeros((*d.shape, 3), np.uint8)
    lo, hi = d[present].min(), d[present].max()
    g = np.where(present, 1.0 - 0.8 * (d - lo) / max(hi - lo, 1e-6), 0.0)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _thumb(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img).resize((THUMB, THUMB), Image.BILINEAR)


def _row(reader, i: int) -> tuple[list[Image.Image], list[str]]:
    s = reader.read(i, names=["rgb", "mlo_normal", "mlo_depth", "ref_views", "background"])
    T = s["rgb"].shape[0]
    tiles = [_thumb(v) for v in s["ref_views"]] + [_thumb(s["background"])]
    labels = ["front", "back", "left", "right", "top", "bottom", "background"]
    for t in sorted({0, T // 2, T - 1}):
        tiles += [_thumb(s["rgb"][t]), _thumb(s["mlo_normal"][t, 0]), _thumb(depth_to_gray(s["mlo_depth"][t, 0]))]
        labels += [f"rgb t={t}", f"normal t={t}", f"depth t={t}"]
    return tiles, labels


LABEL_H = 14


def save_sheet(blocks: list[tuple[str, list[list[tuple[Image.Image, str]]]]], out: Path) -> Path:
    """A contact sheet PNG: per block a title line, then rows of (square thumbnail, label) tiles,
    each tile with its label under it. Shared by every store kind's preview."""
    thumb = max((t.size[0] for _, rows in blocks for row in rows for t, _ in row), default=THUMB)
    n_cols = max((len(row) for _, rows in blocks for row in rows), default=1)
    height = sum(LABEL_H + len(rows) * (thumb + LABEL_H) for _, rows in blocks)
    sheet = Image.new("RGB", (n_cols * thumb, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, rows in blocks:
        draw.text((4, y + 1), title, fill=(255, 255, 160))
        y += LABEL_H
        for row in rows:
            for c, (tile, label) in enumerate(row):
                sheet.paste(tile, (c * thumb, y))
                draw.text((c * thumb + 3, y + thumb + 1), label, fill=(220, 220, 220))
            y += thumb + LABEL_H
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def save_gif(frames: list[np.ndarray], out: Path, ms_per_frame: int = 100) -> Path:
    """An animated GIF of uint8 [H,W,3] frames, looping."""
    images = [Image.fromarray(f) for f in frames]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return out


def write_preview(store: Path, out: Path, n_samples: int = 3, gif: Path | None = None,
                  by_kind: dict | None = None) -> list[Path]:
    """Write the contact sheet PNG (and an optional GIF); returns the paths written.
    ``by_kind``: store kind -> ``fn(reader, out, n_samples, gif)`` drawing that kind's own sheet
    (the jobs' previews: ``cli.py`` passes them, shared code imports no job folder); other kinds
    get the object sheet below."""
    reader = open_reader(store)
    if len(reader) == 0:
        from pipeline.errors import UserError

        raise UserError(f"{store} has no valid samples to preview")
    own = (by_kind or {}).get(reader.layout.kind)
    if own is not None:
        return own(reader, Path(out), n_samples, gif)
    idx = np.linspace(0, len(reader) - 1, min(n_samples, len(reader))).round().astype(int)
    blocks = []
    for i in idx:
        tiles, labels = _row(reader, int(i))
        blocks.append((f"sample {i}: {reader.key(int(i))}", [list(zip(tiles, labels, strict=True))]))
    written = [save_sheet(blocks, out)]
    if gif is not None:
        written.append(write_gif(reader, [int(i) for i in idx], Path(gif)))
    return written


def write_gif(reader, indices: list[int], out: Path) -> Path:
    """Animated GIF: per frame, for each sample, RGB | normal | depth side by side."""
    clips = [reader.read(i, names=["rgb", "mlo_normal", "mlo_depth"]) for i in indices]
    frames = []
    for t in range(reader.layout.frames):
        rows = [np.concatenate([np.asarray(_thumb(c["rgb"][t])), np.asarray(_thumb(c["mlo_normal"][t, 0])),
                                np.asarray(_thumb(depth_to_gray(c["mlo_depth"][t, 0])))], axis=1) for c in clips]
        frames.append(np.concatenate(rows, axis=0))
    return save_gif(frames, out, 80)
