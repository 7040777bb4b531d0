"""Layer maps moved compactly: per-(frame, layer) bounding-box crops out of the workers, expanded on the device.

Hand and object layers cover a few % of a frame (the 13-layer maps of a 24 x 512^2 HOI clip are
413 MB dense, ~4 % of it inside the layers' boxes), so the DataLoader workers send only the pixels
inside each (frame, layer)'s bounding box of non-zero pixels, and ``expand_compact`` scatters them
back into the dense zero-filled maps on the training device. The round trip is exact: every byte
outside a box is zero in both the normal and the depth map (the box is the union of both).

Compact batch (``trainer.conditions.collate_compact``; K boxes, P pixels over the whole batch):
    boxes      int32   [K, 7]   (b, f, layer, y0, x0, h, w): item, frame, layer in LAYER_NAMES order
                                (0..12), top-left pixel and size of the box; pixels follow box order
    normal_px  uint8   [P, 3]   the box pixels of the normal maps, row-major inside each box
    depth_px   float16 [P]      the same pixels of the depth maps
and every other key of ``trainer.conditions.collate`` (``layer_idx`` included); no "normal"/"depth".
"""

from __future__ import annotations

import numpy as np
import torch

from schemas.store import N_LAYERS

BOX_COLUMNS = ("b", "f", "layer", "y0", "x0", "h", "w")


def _row_or(x: np.ndarray) -> np.ndarray:
    """[..., n] any-non-zero over the last axis, OR-reducing 8 bytes at a time where the row allows."""
    x = np.ascontiguousarray(x)
    row_bytes = x.shape[-1] * x.itemsize
    if row_bytes % 8 == 0:
        x = x.view(np.uint64)
    elif x.dtype.kind == "f":
        x = x.view(np.dtype(f"u{x.itemsize}"))
    return np.bitwise_or.reduce(x, axis=-1) != 0


def _col_or(x: np.ndarray) -> np.ndarray:
    """[h, W, ...] contiguous -> bool [W]: any non-zero byte in column w (OR is bytewise, so the rows
    are OR-ed 8 bytes at a time where the row allows, then split back into pixels)."""
    h, w = x.shape[:2]
    flat = x.reshape(h, -1).view(np.uint8)
    if flat.shape[1] % 8 == 0:
        acc = np.bitwise_or.reduce(flat.view(np.uint64), axis=0).view(np.uint8)
    else:
        acc = np.bitwise_or.reduce(flat, axis=0)
    return acc.reshape(w, -1).any(-1)


def compact_layers(normal: np.ndarray, depth: np.ndarray, layer_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Dense stored layers of one item -> its boxes and box pixels.

    normal uint8 [F, Ls, R, R, 3], depth float16 [F, Ls, R, R] (0 = absent), layer_idx int [Ls]
    (position in LAYER_NAMES, -1 = padding: must be all zero). Returns boxes int32 [K, 6]
    (f, layer, y0, x0, h, w), normal_px uint8 [P, 3], depth_px float16 [P].
    """
    f_n, ls, r = depth.shape[:3]
    rows = _row_or(normal.reshape(f_n, ls, r, r * normal.shape[-1])) | _row_or(depth)        # [F, Ls, R]
    boxes, npx, dpx = [], [], []
    for f, s in zip(*np.nonzero(rows.any(-1)), strict=True):
        ys = np.flatnonzero(rows[f, s])
        y0, y1 = int(ys[0]), int(ys[-1]) + 1
        n, d = normal[f, s, y0:y1], depth[f, s, y0:y1]
        cols = _col_or(n) | _col_or(d)
        xs = np.flatnonzero(cols)
        x0, x1 = int(xs[0]), int(xs[-1]) + 1
        if layer_idx[s] < 0:
            raise ValueError("a padding layer (layer_idx -1) holds non-zero pixels")
        boxes.append((f, int(layer_idx[s]), y0, x0, y1 - y0, x1 - x0))
        npx.append(n[:, x0:x1].reshape(-1, normal.shape[-1]))
        dpx.append(d[:, x0:x1].reshape(-1))
    c = normal.shape[-1]
    return {"boxes": np.array(boxes, dtype=np.int32).reshape(-1, 6),
            "normal_px": np.concatenate(npx) if npx else np.zeros((0, c), normal.dtype),
            "depth_px": np.concatenate(dpx) if dpx else np.zeros((0,), depth.dtype)}


def compact_item(item: dict) -> dict:
    """A raw item (trainer.conditions) with dense "normal"/"depth" -> the same item with boxes instead
    (boxes [K, 6], normal_px, depth_px; the pixels are copies: the dense maps may be reused buffers);
    a "valid" mask bool [F, R, R] travels as "valid_bits" uint8 [F, R, R / 8] (np.packbits along x)."""
    rest = {k: v for k, v in item.items() if k not in ("normal", "depth", "valid")}
    if "valid" in item:
        rest["valid_bits"] = np.packbits(np.asarray(item["valid"], bool), axis=-1)
    return {**rest, **compact_layers(item["normal"], item["depth"], np.asarray(item["layer_idx"]))}


def unpack_bits(bits: torch.Tensor, width: int) -> torch.Tensor:
    """np.packbits(x, axis=-1) undone on the device: uint8 [..., ceil(W / 8)] -> bool [..., width]."""
    shifts = torch.arange(7, -1, -1, device=bits.device, dtype=torch.uint8)
    return ((bits.unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., :width].bool()


def expand_compact(boxes: torch.Tensor, normal_px: torch.Tensor, depth_px: torch.Tensor, batch: int,
                   frames: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes back to dense maps on the device of the pixel tensors, in the fixed 13-layer order.

    Returns normal uint8 [B, F, 13, R, R, C] and depth float32 [B, F, 13, R, R]; zero outside the boxes.
    One slice copy per box (K <= F x 13 per item: a few hundred small copies, cheap on CPU and GPU alike;
    a single index scatter measured ~10x slower on CPU, from the index arithmetic over every pixel).
    """
    dev, r = normal_px.device, resolution
    c = normal_px.shape[-1]
    normal = torch.zeros((batch, frames, N_LAYERS, r, r, c), dtype=normal_px.dtype, device=dev)
    depth = torch.zeros((batch, frames, N_LAYERS, r, r), dtype=torch.float32, device=dev)
    rows = boxes.tolist()
    total = sum(h * w for *_, h, w in rows)
    if total != len(normal_px) or len(depth_px) != total:
        raise ValueError(f"boxes cover {total} pixels, the batch carries {len(normal_px)} / {len(depth_px)}")
    o = 0
    for b, f, layer, y0, x0, h, w in rows:
        n = h * w
        normal[b, f, layer, y0:y0 + h, x0:x0 + w] = normal_px[o:o + n].view(h, w, c)
        depth[b, f, layer, y0:y0 + h, x0:x0 + w] = depth_px[o:o + n].view(h, w)
        o += n
    return normal, depth


def batch_bytes(batch: dict) -> int:
    """Bytes of all tensors of a (collated) batch: what a worker moves to the training process."""
    return sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))
