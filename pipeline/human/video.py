"""Person videos on disk: the layouts ``render-human`` reads, frame counts and frame reading.

Two layouts under ``--root`` (searched recursively, sorted by path):

* a **frame folder** (the TikTok dataset's layout): ``<video>/images/*.png|jpg`` (frames in
  name order), with ``<video>/masks/*`` (person masks, same names or order) when present and
  OpenPose JSON keypoints in ``<video>/openpose/*_keypoints.json`` when present;
* a **video file** ``<name>.mp4|webm|mov|mkv|avi``, decoded with imageio-ffmpeg (FFmpeg), with
  OpenPose keypoints in ``<name>_openpose/`` beside it when present (what ``openpose --video
  <name>.mp4 --write_json <name>_openpose/`` writes).

Optional intrinsics: ``<video>/intrinsics.json`` or ``<name>.intrinsics.json`` holding
``{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}`` (OpenCV convention, source pixels).
Frames are uint8 [H, W, 3] RGB; masks bool [H, W].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import StepFailed
from pipeline.sequence_format.read import natural_key

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class VideoSource:
    """Where one video's frames, masks, keypoints and intrinsics are (paths may be None)."""

    key: str                 # path relative to the root, without extension
    path: Path               # the video file, or the folder holding images/
    is_file: bool
    keypoints: Path | None   # folder of OpenPose JSON files
    masks: Path | None
    intrinsics: Path | None

    def to_locator(self) -> str:
        return json.dumps({"path": str(self.path), "is_file": self.is_file,
                           "keypoints": str(self.keypoints) if self.keypoints else None,
                           "masks": str(self.masks) if self.masks else None,
                           "intrinsics": str(self.intrinsics) if self.intrinsics else None})

    @classmethod
    def from_locator(cls, key: str, locator: str) -> VideoSource:
        d = json.loads(locator)
        opt = {k: Path(d[k]) if d[k] else None for k in ("keypoints", "masks", "intrinsics")}
        return cls(key=key, path=Path(d["path"]), is_file=d["is_file"], **opt)


def _images(folder: Path) -> list[Path]:
    """Frame (or mask) images of ``folder`` in natural name order ("f_2" before "f_10")."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=lambda p: natural_key(p.name))


def find_videos(root: Path) -> list[VideoSource]:
    """Every video under ``root`` in either layout (see module doc), sorted by key."""
    root = Path(root)
    found = []
    for images in sorted(root.rglob("images")):
        if images.is_dir() and _images(images):
            d = images.parent
            kp, intr = d / "openpose", d / "intrinsics.json"
            found.append(VideoSource(key=str(d.relative_to(root)), path=d, is_file=False,
                                     keypoints=kp if kp.is_dir() else None,
                                     masks=d / "masks" if _images(d / "masks") else None,
                                     intrinsics=intr if intr.is_file() else None))
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix.lower() in VIDEO_EXTS:
            kp = f.with_name(f.stem + "_openpose")
            intr = f.with_name(f.stem + ".intrinsics.json")
            found.append(VideoSource(key=str(f.relative_to(root).with_suffix("")), path=f, is_file=True,
                                     keypoints=kp if kp.is_dir() else None, masks=None,
                                     intrinsics=intr if intr.is_file() else None))
    return sorted(found, key=lambda v: v.key)


def count_frames(src: VideoSource) -> int:
    """Number of frames (FFmpeg stream copy for files: no decoding). Raises StepFailed("decode")."""
    if not src.is_file:
        return len(_images(src.path / "images"))
    import imageio_ffmpeg

    try:
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(src.path))
    except Exception as e:  # noqa: BLE001  (FFmpeg's error text for a broken file)
        raise StepFailed("decode", f"cannot read video {src.path.name}: {_first_line(e)}") from None
    return int(n)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:160]


def read_frames(src: VideoSource, ids: list[int]) -> dict[int, np.ndarray]:
    """{frame id: uint8 [H, W, 3]} for the wanted ids (decoding a file once, front to back).
    Raises StepFailed("decode") when a frame cannot be read or the video is shorter."""
    want = sorted(set(int(i) for i in ids))
    out: dict[int, np.ndarray] = {}
    if not src.is_file:
        files = _images(src.path / "images")
        for i in want:
            try:
                out[i] = np.asarray(Image.open(files[i]).convert("RGB"))
            except (OSError, IndexError) as e:
                raise StepFailed("decode", f"frame {i}: {_first_line(e)}") from None
        return out
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(src.path), pix_fmt="rgb24")
        meta = next(gen)
        w, h = meta["size"]
        wanted = set(want)
        for i, buf in enumerate(gen):
            if i in wanted:
                out[i] = np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy()
            if i >= want[-1]:
                break
        gen.close()
    except Exception as e:  # noqa: BLE001
        raise StepFailed("decode", f"cannot decode {src.path.name}: {_first_line(e)}") from None
    missing = [i for i in want if i not in out]
    if missing:
        raise StepFailed("decode", f"{src.path.name} ended before frame {missing[0]}")
    return out


def read_masks(src: VideoSource, ids: list[int]) -> dict[int, np.ndarray] | None:
    """{frame id: bool [H, W]} (mask value > 127) or None when the video has no masks."""
    if src.masks is None:
        return None
    files = _images(src.masks)
    n_frames = len(_images(src.path / "images"))
    if len(files) != n_frames:  # masks pair with frames by order: a missing one would shift every later mask
        raise StepFailed("load", f"{src.masks.name}/ holds {len(files)} masks for {n_frames} frames")
    try:
        return {i: np.asarray(Image.open(files[i]).convert("L")) > 127 for i in sorted(set(ids))}
    except (OSError, IndexError) as e:
        raise StepFailed("load", f"mask of frame {sorted(ids)[-1]}: {_first_line(e)}") from None


def read_intrinsics(src: VideoSource) -> np.ndarray | None:
    """OpenCV K [3, 3] float64, or None when the video's camera is unknown."""
    if src.intrinsics is None:
        return None
    try:
        K = np.asarray(json.loads(src.intrinsics.read_text())["K"], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StepFailed("load", f"{src.intrinsics.name}: {_first_line(e)}") from None
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise StepFailed("load", f"{src.intrinsics.name}: K must be a finite 3x3 matrix")
    return K
