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

from pipeline.inspect_store import open_reader

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
    rows = [(_row(reader, int(i)), reader.key(int(i))) for i in idx]
    n_cols = max(len(r[0][0]) for r in rows)
    label_h = 14
    sheet = Image.new("RGB", (n_cols * THUMB, len(rows) * (THUMB + 2 * label_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, ((tiles, labels), key) in enumerate(rows):
        y = r * (THUMB + 2 * label_h)
        draw.text((4, y + 1), f"sample {idx[r]}: {key}", fill=(255, 255, 160))
        for c, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
            sheet.paste(tile, (c * THUMB, y + label_h))
            draw.text((c * THUMB + 3, y + label_h + THUMB + 1), label, fill=(220, 220, 220))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    written = [out]
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
        frames.append(Image.fromarray(np.concatenate(rows, axis=0)))
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=80, loop=0)
    return out
