"""One video -> its T-frame windows and the contract samples of a human store.

Per window: the fixed person crop (``pipeline.human.crop``: shifted to stay inside the frame
when it fits), frames and masks cropped and resized to R x R, ``valid`` (the crop pixels inside
the video frame; a clip with more padding than ``max_padding`` raises ``crop.TooMuchPadding``), keypoints mapped into the crop, the skeleton map drawn from them, K adjusted
when the camera is known (else all zero), and the reference O_B: the frame of the same video
farthest in time from the window that shows the person, cropped around the person in that
frame (a frame of the window only when the whole video is the window: attrs say so).
"""

from __future__ import annotations

import numpy as np

from pipeline.clips.crop import check_padding, crop_image, crop_intrinsics, crop_valid
from pipeline.clips.windows import frame_windows
from pipeline.errors import StepFailed
from pipeline.human.config import HumanConfig
from pipeline.human.crop import has_person, keypoints_to_crop, person_box
from pipeline.human.skeleton import draw_clip

REF_CANDIDATES = 4  # frames tried (farthest first) for the reference


def windows(n_frames: int, cfg: HumanConfig) -> list[list[int]]:
    """Non-overlapping windows of T frames taken every ``stride`` frames (a short tail is dropped),
    at most ``max_clips_per_video`` of them (evenly spread) when that is set."""
    wins = frame_windows(n_frames, cfg.frames, cfg.stride)
    if cfg.max_clips_per_video and len(wins) > cfg.max_clips_per_video:
        pick = np.linspace(0, len(wins) - 1, cfg.max_clips_per_video).round().astype(int)
        wins = [wins[i] for i in pick]
    return wins


def reference_candidates(window: list[int], n_frames: int) -> list[int]:
    """Frames outside the window's span, farthest first (ties: the later frame); if there are
    none, the window's own frames farthest from its middle."""
    lo, hi = window[0], window[-1]
    outside = [i for i in range(n_frames) if i < lo or i > hi]
    if outside:
        return sorted(outside, key=lambda i: (-max(lo - i, i - hi), -i))[:REF_CANDIDATES]
    mid = (lo + hi) / 2
    return sorted(window, key=lambda i: (-abs(i - mid), -i))[:REF_CANDIDATES]


def require_person(window: list[int], kp: np.ndarray, cfg: HumanConfig) -> np.ndarray:
    """bool [T]: frames of the window with a person; StepFailed("keypoints") when too few have one."""
    present = np.array([has_person(k) for k in kp])
    if present.mean() < cfg.min_person_frames:
        raise StepFailed("keypoints", f"no person found in {int((~present).sum())} of {len(window)} frames "
                                      f"of the clip at frame {window[0]}")
    return present


def _crop_mask(mask: np.ndarray, box, resolution: int) -> np.ndarray:
    rgb = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=-1)
    return crop_image(rgb, box, resolution)[..., 0] > 127


def build_sample(window: list[int], frames: dict, keypoints, masks: dict | None, ref_id: int,
                 K_cv: np.ndarray | None, cfg: HumanConfig, source: str) -> dict:
    """Contract arrays of one window. ``frames``/``masks``: {id: array} holding the window and
    ``ref_id``; ``keypoints(id)`` -> float [67, 3] source pixels."""
    kp = np.stack([keypoints(i) for i in window])                                  # T, 67, 3
    present = require_person(window, kp, cfg)
    H, W = frames[window[0]].shape[:2]
    clip_masks = [masks[i] for i in window] if masks is not None else None
    R = cfg.resolution
    box = person_box(kp[present], W, H, cfg.crop_margin, cfg.min_crop_px, clip_masks)
    valid = np.repeat(crop_valid(box, R, W, H)[None], len(window), axis=0)
    padding = check_padding(valid, cfg.max_padding)  # crop.TooMuchPadding: the job skips the clip
    kp_crop = keypoints_to_crop(kp, box, R)
    ref_kp = keypoints(ref_id)
    ref_box = person_box(ref_kp[None], W, H, cfg.crop_margin, cfg.min_crop_px,
                         [masks[ref_id]] if masks is not None else None)
    sample = {
        "rgb": np.stack([crop_image(frames[i], box, R) for i in window]),
        "background": crop_image(frames[ref_id], ref_box, R),
        "skeleton": draw_clip(kp_crop, R),
        "keypoints": kp_crop,
        "person_mask": (np.stack([_crop_mask(m, box, R) for m in clip_masks]) if clip_masks is not None
                        else np.zeros((len(window), R, R), bool)),
        "K": (crop_intrinsics(K_cv, box, R) if K_cv is not None else np.zeros((3, 3))).astype(np.float32),
        "valid": valid,
        "attrs": {"source_frames": [int(i) for i in window], "reference_frame": int(ref_id),
                  "reference_in_clip": bool(window[0] <= ref_id <= window[-1]), "keypoint_source": source,
                  "has_person_mask": masks is not None, "person_frames": round(float(present.mean()), 4),
                  "crop_box": [int(v) for v in box], "camera_known": K_cv is not None,
                  "padding_max": round(float(padding.max()), 4), "padding_mean": round(float(padding.mean()), 4)},
    }
    return sample
