"""From raw store arrays to the model's conditions: layer zero-fill, D, flip, jitter, zeroing.

The DataLoader moves *compact* items (uint8 images, float16 depth, only the layers a store
holds): a 24-frame 512 px clip with all 13 layers is ~1.6 GB as float32, so expansion to the
13-layer order, decoding, D and the augmentations (flip, jitter) happen on the training device
in ``prepare_batch``; the loader only reads and decides (the flags below).

Raw item (numpy, one sample; F = 1 in stage 1, T in stage 2; Ls = stored layers; V = 7 or 8):
    rgb        uint8   [F, R, R, 3]      target frames
    normal     uint8   [F, Ls, R, R, 3]  (n + 1) / 2 * 255, all-zero bytes where the layer is absent
    depth      float16 [F, Ls, R, R]     camera z-depth, 0 where absent
    layer_idx  int64   [Ls]              position of each stored layer in LAYER_NAMES (-1 = padding)
    refs       uint8   [V, R, R, 3]      6 object views (REF_VIEW_NAMES), background (+ first frame)
    points     float32 [2048, 6]         canonical points and their normals
    source     int64   []                SOURCES index
    ref_keep   float32 []                0 = references dropped (classifier-free guidance)
    jitter     float32 [3]               brightness, contrast, saturation factors (1 = unchanged)
    flip       bool    []                mirror horizontally (see ``flip_batch``); never for human items
    person_mask bool   [F, R, R]         human items: the store's person mask (else all false)
    valid      bool    [F, R, R]         the pixel comes from the camera image (the store's ``valid``; all
                                         true when the store has none: Objaverse renders every pixel);
                                         the compact loader sends it as ``valid_bits`` (np.packbits on x)
    skeleton   uint8   [F, R, R, 3]      human items: skeleton map S (else zeros); only with use_skeleton

Human items (paper §3.3) keep only the reference person O_B (the background slot) and, with
``use_skeleton``, the skeleton S: ``prepare_batch`` zeroes their hand and object layers, D, the
object views, the first-frame reference and the points. They are never flipped: S's colours
say which limb is left and which is right.

The training loader sends the layer maps compactly (``trainer.compact``: per-(frame, layer)
bounding-box crops instead of dense "normal"/"depth"); ``prepare_batch`` takes either form.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from schemas.occlusion import occlusion_confidence
from schemas.store import LAYER_NAMES, N_LAYERS, REF_VIEW_NAMES
from trainer.compact import compact_item, expand_compact, unpack_bits

SOURCES = ("objaverse", "hoi", "human")
N_VIEWS = len(REF_VIEW_NAMES)  # the first 6 reference images are object views; then background
# Horizontal flip mirrors the scene: the left hand becomes a right hand.
FLIP_LAYER = np.array([LAYER_NAMES.index(n.replace("left_", "@").replace("right_", "left_").replace("@", "right_"))
                       for n in LAYER_NAMES], dtype=np.int64)
# Mirroring the object in x swaps its left/right views; every view is also mirrored in the image.
FLIP_VIEW = [REF_VIEW_NAMES.index({"left": "right", "right": "left"}.get(n, n)) for n in REF_VIEW_NAMES]


def source_of(kind: str, layers: tuple[str, ...]) -> str:
    """Which data source a store feeds: the store kind (objaverse, hoi, human; schemas.store)."""
    if kind not in SOURCES:
        raise ValueError(f"unknown store kind {kind!r}")
    return kind


def flip_batch(c: dict, flags: torch.Tensor) -> dict:
    """Horizontal flip of the samples where ``flags`` [B] is true, on decoded conditions
    (float tensors, 13-layer order): images mirrored, left/right hand layers swapped, normals'
    x negated (exact in float), the object mirrored in x (left/right views swapped and mirrored,
    points' and point normals' x negated). Keys: target, refs, normal [B,F,13,3,R,R], depth."""
    if not bool(flags.any()):
        return c
    out = dict(c)

    def pick(flipped: torch.Tensor, key: str) -> torch.Tensor:
        return torch.where(flags.view(-1, *([1] * (flipped.dim() - 1))), flipped, c[key])

    out["target"] = pick(c["target"].flip(-1), "target")
    views = c["refs"].flip(-1)
    out["refs"] = pick(torch.cat([views[:, FLIP_VIEW], views[:, N_VIEWS:]], dim=1), "refs")
    swap = torch.as_tensor(FLIP_LAYER, device=flags.device)
    negate_x = c["normal"].new_tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
    out["normal"] = pick(c["normal"][:, :, swap].flip(-1) * negate_x, "normal")
    out["depth"] = pick(c["depth"][:, :, swap].flip(-1), "depth")
    sign = torch.where(flags.view(-1, 1, 1), c["points"].new_tensor([-1.0, 1, 1, -1, 1, 1]), 1.0)
    out["points"] = c["points"] * sign
    return out


def collate(items: list[dict]) -> dict:
    """Stack raw items into a batch; the layer axis is padded to the batch's widest store (idx -1)."""
    width = max(len(it["layer_idx"]) for it in items)
    out = {}
    for key in items[0]:
        arrs = [np.asarray(it[key]) for it in items]
        if key in ("normal", "depth", "layer_idx"):
            padded = []
            for a in arrs:
                pad = width - (a.shape[0] if key == "layer_idx" else a.shape[1])
                if pad:
                    shape = list(a.shape)
                    axis = 0 if key == "layer_idx" else 1
                    shape[axis] = pad
                    fill = np.full(shape, -1 if key == "layer_idx" else 0, dtype=a.dtype)
                    a = np.concatenate([a, fill], axis=axis)
                padded.append(a)
            arrs = padded
        # a batch of one (stage 2) is a view, not a copy: clips are hundreds of MB
        out[key] = torch.from_numpy(np.ascontiguousarray(arrs[0][None]) if len(arrs) == 1 else np.stack(arrs))
    return out


def collate_compact(items: list[dict]) -> dict:
    """Like ``collate``, but the layer maps travel as boxes (``trainer.compact``).
    Items may hold dense "normal"/"depth" (compacted here, in the worker) or be compact already."""
    boxes, npx, dpx, rest = [], [], [], []
    for b, it in enumerate(items):
        if "boxes" not in it:
            it = compact_item(it)
        bx = np.asarray(it["boxes"], np.int32)
        boxes.append(np.concatenate([np.full((len(bx), 1), b, np.int32), bx], axis=1))
        npx.append(it["normal_px"])
        dpx.append(it["depth_px"])
        rest.append({k: v for k, v in it.items() if k not in ("boxes", "normal_px", "depth_px")})
    out = collate(rest)
    out["boxes"] = torch.from_numpy(np.concatenate(boxes))
    out["normal_px"] = torch.from_numpy(np.concatenate(npx))
    out["depth_px"] = torch.from_numpy(np.concatenate(dpx))
    return out


def expand_layers(x: torch.Tensor, layer_idx: torch.Tensor) -> torch.Tensor:
    """Scatter stored layers into the fixed 13-layer order; layers not stored stay zero.

    x: [B, F, Ls, ...]; layer_idx: [B, Ls] int (-1 = padding). Returns [B, F, 13, ...].
    """
    b, f, ls = x.shape[:3]
    out = x.new_zeros((b, f, N_LAYERS + 1) + tuple(x.shape[3:]))  # slot 13 swallows padding
    idx = torch.where(layer_idx >= 0, layer_idx, N_LAYERS).to(x.device)
    for i in range(b):  # B is small; an index_copy per sample keeps it simple
        out[i].index_copy_(1, idx[i], x[i])
    return out[:, :, :N_LAYERS]


def color_jitter(img: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """img [B, N, 3, H, W] in [0, 1]; jitter [B, 3] (brightness, contrast, saturation) -> same shape."""
    b, c, s = (jitter[:, i].view(-1, 1, 1, 1, 1).to(img) for i in range(3))
    img = img * b
    mean = img.mean(dim=(-3, -2, -1), keepdim=True)
    img = (img - mean) * c + mean
    gray = (img * img.new_tensor([0.299, 0.587, 0.114]).view(1, 1, 3, 1, 1)).sum(2, keepdim=True)
    return (gray + (img - gray) * s).clamp(0, 1)


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Resize the last two axes of [..., C, H, W] to size x size."""
    if x.shape[-1] == size:
        return x
    lead = x.shape[:-3]
    x = x.reshape((-1,) + tuple(x.shape[-3:]))
    kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    x = F.interpolate(x, size=(size, size), mode=mode, **kw)
    return x.reshape(lead + tuple(x.shape[-3:]))


def prepare_batch(batch: dict, mlo_mode: str = "full", tau: float = 0.02, resolution: int | None = None,
                  device: torch.device | str = "cpu") -> dict:
    """Raw collated batch -> model conditions on ``device`` (float32).

    Returns:
        target  [B, F, 3, R, R]  in [-1, 1], colour-jittered
        refs    [B, V, 3, R, R]  in [-1, 1], same jitter; zero where dropped or missing (human: views)
        H       [B, F, C_h, R, R] layer normals in [-1, 1] (C_h = 39), or 1-channel inverse depth
                                 in (0, 1] for mlo_mode "depth_only"; 0 where absent
        D       [B, F, 13, R, R] occlusion confidence in [0, 1] (zeros for "depth_only")
        H_o     [B, F, 3, R, R]  object-layer normals (every mlo_mode: E_N's input)
        points  [B, 2048, 6]     zero where dropped or missing (human)
        mask    [B, F, 1, R, R]  union of all layers (hand-object region); human: the person mask; {0, 1}
        valid   [B, F, 1, R, R]  1 where the target pixel comes from the camera image, 0 on padding; all 1
                                 when the batch has no ``valid`` (Objaverse); resized conservatively
        S       [B, F, 3, R, R]  skeleton map in [0, 1] (zeros but for human items); only if the batch has it
        ref_keep [B], source [B]
    Human items: H, D, H_o, object views, first-frame reference and points are zero (§3.3).
    """
    dev = torch.device(device)
    rgb = batch["rgb"].to(dev, non_blocking=True).permute(0, 1, 4, 2, 3).float() / 255.0
    refs = batch["refs"].to(dev, non_blocking=True).permute(0, 1, 4, 2, 3).float() / 255.0
    jitter = batch["jitter"].to(dev).float()
    source = batch["source"].to(dev)
    human = source == SOURCES.index("human")
    rgb, refs = color_jitter(rgb, jitter), color_jitter(refs, jitter)
    if "boxes" in batch:  # compact layers (collate_compact): boxes expanded here, on the device
        normal_u8, depth = expand_compact(batch["boxes"], batch["normal_px"].to(dev, non_blocking=True),
                                          batch["depth_px"].to(dev, non_blocking=True), *rgb.shape[:2],
                                          rgb.shape[-1])
    else:
        idx = batch["layer_idx"].to(dev)
        depth = expand_layers(batch["depth"].to(dev, non_blocking=True).float(), idx)       # B,F,13,R,R
        normal_u8 = expand_layers(batch["normal"].to(dev, non_blocking=True), idx)          # B,F,13,R,R,3
    present = (normal_u8 != 0).any(dim=-1, keepdim=True)
    normal = torch.where(present, normal_u8.float() / 255.0 * 2 - 1, 0.0).permute(0, 1, 2, 5, 3, 4)
    flipped = flip_batch({"target": rgb, "refs": refs, "normal": normal, "depth": depth,
                          "points": batch["points"].to(dev).float()},
                         (batch["flip"].to(dev) & ~human) if "flip" in batch else torch.zeros_like(human))
    rgb, refs, normal, depth = flipped["target"], flipped["refs"], flipped["normal"], flipped["depth"]
    b, f = normal.shape[:2]
    valid = batch_valid(batch, b, f, rgb.shape[-1], dev)
    if "flip" in batch:
        flip = (batch["flip"].to(dev) & ~human).view(-1, 1, 1, 1, 1)
        valid = torch.where(flip, valid.flip(-1), valid)
    mask = (depth > 0).any(dim=2, keepdim=True).float()
    H_o = normal[:, :, LAYER_NAMES.index("object")]
    if mlo_mode == "depth_only":
        # Table 2 "w/o MLO": the hand-object MLO (H and D) is replaced by one composite depth map, as a
        # depth camera would see it; the object's own geometry condition (H_o and P into E_N) stays.
        front = torch.where(depth > 0, depth, torch.inf).amin(dim=2, keepdim=True)
        near = front.flatten(1).amin(dim=1).view(b, 1, 1, 1, 1)
        inv = torch.where(torch.isfinite(front), near / front, 0.0)
        H, D = inv, torch.zeros_like(depth)
    else:
        H = normal.reshape(b, f, N_LAYERS * 3, *normal.shape[-2:])
        D = occlusion_confidence(depth, tau=tau, layer_axis=2)
    keep = batch["ref_keep"].to(dev).float()
    has_object = (~human).float()
    view_keep = (keep * has_object).view(b, 1, 1, 1, 1)
    refs = refs * 2 - 1
    # slot N_VIEWS is the background / reference person O_B; later slots (first frame) are not for humans
    refs = torch.cat([refs[:, :N_VIEWS] * view_keep, refs[:, N_VIEWS:N_VIEWS + 1] * keep.view(b, 1, 1, 1, 1),
                      refs[:, N_VIEWS + 1:] * view_keep], dim=1)
    points = flipped["points"] * (keep * has_object).view(b, 1, 1)
    # §3.3: every MLO condition of a human item is zero (its store has none; this also holds if it had)
    obj = has_object.view(b, 1, 1, 1, 1)
    H, D, H_o = H * obj, D * obj, H_o * obj
    if "person_mask" in batch:
        person = batch["person_mask"].to(dev).float().unsqueeze(2)                      # B,F,1,R,R
        mask = torch.where(human.view(b, 1, 1, 1, 1), person, mask)
    out = {"target": rgb * 2 - 1, "refs": refs, "H": H, "D": D, "H_o": H_o, "points": points, "mask": mask,
           "valid": valid, "ref_keep": keep, "source": source}
    if "skeleton" in batch:
        out["S"] = batch["skeleton"].to(dev, non_blocking=True).permute(0, 1, 4, 2, 3).float() / 255.0
    if resolution is not None:
        for k, mode in (("target", "bilinear"), ("refs", "bilinear"), ("H", "nearest"), ("D", "nearest"),
                        ("H_o", "nearest"), ("mask", "nearest"), ("S", "bilinear")):
            if k not in out:
                continue
            out[k] = _resize(out[k], resolution, mode)
        out["valid"] = shrink_valid(out["valid"], resolution)
    return out


def batch_valid(batch: dict, b: int, f: int, r: int, device: torch.device) -> torch.Tensor:
    """float {0, 1} [B, F, 1, R, R] from the batch's ``valid`` (bool [B, F, R, R]) or ``valid_bits`` (packed
    along x, ``trainer.compact``); all ones when it has neither."""
    if "valid_bits" in batch:
        return unpack_bits(batch["valid_bits"].to(device, non_blocking=True), r).float().unsqueeze(2)
    if "valid" in batch:
        return batch["valid"].to(device, non_blocking=True).float().unsqueeze(2)
    return torch.ones((b, f, 1, r, r), device=device)


def shrink_valid(valid: torch.Tensor, size: int) -> torch.Tensor:
    """valid [..., 1, R, R] in {0, 1} at ``size`` x ``size``, conservatively: smaller, a pixel is valid only
    when every pixel it covers is (a min-pool); larger, nearest."""
    if valid.shape[-1] == size:
        return valid
    lead = valid.shape[:-3]
    v = valid.reshape((-1,) + tuple(valid.shape[-3:]))
    if size < valid.shape[-1]:
        v = 1 - F.adaptive_max_pool2d(1 - v, size)
    else:
        v = F.interpolate(v, size=(size, size), mode="nearest")
    return v.reshape(lead + tuple(v.shape[-3:]))


def latent_valid(valid: torch.Tensor, size: int) -> torch.Tensor:
    """valid [B, F, 1, R, R] -> [B, F, 1, size, size] at the latent resolution, conservatively: a latent is
    valid when every pixel of its footprint (R / size square) and of its 8 neighbours' footprints is (the
    VAE encoder's convolutions reach past the footprint, so a latent next to padding has seen black)."""
    inv = 1 - shrink_valid(valid, size).flatten(0, 1)
    inv = F.max_pool2d(inv, 3, stride=1, padding=1)
    return (1 - inv).unflatten(0, tuple(valid.shape[:2]))


def masked_mse(err: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``err`` [B, F, C, h, w] over the elements where ``weight`` [B, F, 1, h, w] is 1
    (all of them when it is all ones); 0 for a sample with no valid element. Returns [B]."""
    w = weight.expand_as(err)
    return (err * w).sum(dim=(1, 2, 3, 4)) / w.sum(dim=(1, 2, 3, 4)).clamp(min=1)


def condition_channels(mlo_mode: str) -> tuple[int, int, int]:
    """(pose guider input C_h, E_F input C_h + C_d or 0 when E_F is off, E_N conv input C_o)."""
    if mlo_mode == "depth_only":
        return 1, 1, 3
    return N_LAYERS * 3, (N_LAYERS * 4 if mlo_mode == "full" else 0), 3
