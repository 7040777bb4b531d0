"""ARCTIC's cameras and frames, as the toolkit (github.com/zc-alexfan/arctic at 49f3eb4) defines
them: which camera sees a view, where its image files are, and how a frame becomes a full pinhole
image with the pixels the camera saw. Line numbers are of the toolkit's files.

Views (``src/arctic/processing.py`` L238-263 ``forward_world2cam``: "[ego, 8 views, distort ego]"):
  * 1..8 allocentric, static: ``meta/misc.json`` ``world2cam[view - 1]`` (metres; points map by
    ``world2cam @ [p, 1]``, ``common/transforms.py`` L288-313) and ``intris_mat[view - 1]``
    (``processing.py`` L274-280 projects with it alone: undistorted pinhole; ``transforms.py``
    L316-329 ``project2d_batch`` = ``K p / z``, no +0.5: OpenCV pixel centres at integers);
  * 0 egocentric, moving: ``raw_seqs/<sid>/<seq>.egocam.dist.npy`` ``R_k_cam_np`` [F,3,3] and
    ``T_k_cam_np`` [F,3,1] give world2ego per mocap frame, ``intrinsics`` [3,3] its K, ``dist8``
    [8] its lens (``src/arctic/preprocess_dataset.py`` L108-119). Its image files are recorded
    through the lens: the toolkit's undistorted view 0 projects with ``K_ego`` alone (L271) and
    its view 9 moves points by ``distort_pts3d_all`` (``transforms.py`` L82-111: OpenCV's
    rational model, coefficients k1, k2, p1, p2, k3, k4, k5, k6) "such that the 2d projection can
    match the pixels"; ``src/datasets/arctic_dataset.py`` L62-66: "kp2d, kp3d are in undistorted
    space". Read here: each frame undistorted to the pinhole camera ``K_ego`` with that same model
    (``pipeline.clips.lens``); pixels whose ray the recording does not hold are not valid;
  * image size: ``misc.json`` ``image_size[view]`` (width, height; index 0 = ego;
    ``arctic_dataset.py`` L86);
  * image number = mocap frame + ``ioi_offset`` (``src/mesh_loaders/arctic.py`` L105-110;
    ``arctic_dataset.py`` L40 ``vidx = image_idx - ioi_offset``):
    ``images/<sid>/<seq>/<view>/<number:05d>.jpg``;
  * ``cropped_images/`` (same names), when a view has no ``images/``: ``scripts_data/crop_images.py``
    L26-32 cut allocentric frames to the ``processed_seqs`` ``bbox`` (cx, cy, scale x 1.5 x 200 px,
    PIL crop) resized to 1000 x 1000 (L54), put back here in the full frame (pixels outside the
    crop not valid); the egocentric frame was only scaled by ``EGO_IMAGE_SCALE`` 0.3 (L17, L56-59),
    scaled back here.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.assets.images import read_rgb
from pipeline.clips.lens import undistort
from pipeline.errors import StepFailed, UserError

EGO_VIEW = 0
ALLO_VIEWS = tuple(range(1, 9))
CROP_PX = 1000                     # crop_images.py L54: allocentric crops are resized to 1000 x 1000
EGO_IMAGE_SCALE = 0.3              # crop_images.py L17: the egocentric cropped_images are the frame x 0.3


def fail(msg: str, error=UserError):
    return UserError(f"ARCTIC layout: {msg}") if error is UserError else StepFailed("load", msg)


def read_npy(path: Path, error=UserError):
    """A .npy file (pickled dicts allowed, as the toolkit writes them)."""
    try:
        data = np.load(path, allow_pickle=True)
    except FileNotFoundError:
        raise fail(f"{path} is missing", error) from None
    except Exception as e:  # noqa: BLE001
        raise fail(f"{path} is unreadable ({type(e).__name__})", error) from None
    return data.item() if data.dtype == object and data.shape == () else data


@functools.lru_cache(maxsize=4)
def read_misc(root: str) -> dict:
    path = Path(root) / "meta" / "misc.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise fail(f"{path} is missing") from None
    except ValueError as e:
        raise fail(f"{path} is not valid JSON ({e})") from None


@dataclass(frozen=True)
class ViewCamera:
    """One view of one sequence. world2cam [F,4,4] metres per mocap frame (allocentric: the same
    matrix every frame); K [3,3] OpenCV pixel convention; size (width, height); ioi_offset;
    dist8 [8] of a lens to undistort (None: a pinhole image already)."""

    world2cam: np.ndarray
    K: np.ndarray
    size: tuple[int, int]
    ioi_offset: int
    dist8: np.ndarray | None = None


def camera(misc: dict, sid: str, view: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int], int]:
    """(world2cam [4,4] m, K [3,3], (width, height), ioi_offset) of allocentric ``view`` (1..8)."""
    try:
        m = misc[sid]
        return (np.asarray(m["world2cam"], np.float64)[view - 1], np.asarray(m["intris_mat"], np.float64)[view - 1],
                tuple(int(x) for x in m["image_size"][view]), int(m["ioi_offset"]))
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise StepFailed("load", f"meta/misc.json has no usable camera {view} for {sid} ({type(e).__name__}: {e})") from None


@functools.lru_cache(maxsize=4)
def _egocam(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(world2ego [F,4,4], K [3,3], dist8 [8]) of an ``egocam.dist.npy`` (preprocess_dataset.py L108-119)."""
    d = read_npy(Path(path), StepFailed)
    try:
        R = np.asarray(d["R_k_cam_np"], np.float64).reshape(-1, 3, 3)
        T = np.asarray(d["T_k_cam_np"], np.float64).reshape(len(R), 3)
        K = np.asarray(d["intrinsics"], np.float64).reshape(3, 3)
        dist = np.asarray(d["dist8"], np.float64).reshape(8)
    except (KeyError, TypeError, ValueError) as e:
        raise StepFailed("load", f"{Path(path).name} has no usable egocentric camera ({type(e).__name__}: {e})") from None
    P = np.tile(np.eye(4), (len(R), 1, 1))
    P[:, :3, :3], P[:, :3, 3] = R, T
    return P, K, dist


def view_camera(root: Path, sid: str, seq: str, view: int, n_frames: int) -> ViewCamera:
    """The camera of ``view`` over the ``n_frames`` mocap frames of ``sid/seq`` (module doc)."""
    misc = read_misc(str(root))
    if view != EGO_VIEW:
        w2c, K, size, off = camera(misc, sid, view)
        return ViewCamera(np.broadcast_to(w2c, (n_frames, 4, 4)), K, size, off)
    w2e, K, dist = _egocam(str(Path(root) / "raw_seqs" / sid / f"{seq}.egocam.dist.npy"))
    if len(w2e) != n_frames:
        raise StepFailed("load", f"{seq}.egocam.dist.npy has {len(w2e)} frames, the sequence {n_frames}")
    try:
        size, off = tuple(int(x) for x in misc[sid]["image_size"][EGO_VIEW]), int(misc[sid]["ioi_offset"])
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise StepFailed("load", f"meta/misc.json has no egocentric image size for {sid} ({type(e).__name__})") from None
    return ViewCamera(w2e, K, size, off, dist if np.any(dist != 0) else None)


def image_path(root: Path, sid: str, seq: str, view: int, frame: int, ioi_offset: int, folder="images") -> Path:
    """The image of mocap ``frame``: number = frame + ioi_offset (mesh_loaders/arctic.py);
    ``folder`` "images" (full frames) or "cropped_images" (same names)."""
    return Path(root) / folder / sid / seq / str(view) / f"{frame + ioi_offset:05d}.jpg"


def image_folder(root: Path, sid: str, seq: str, view: int) -> str | None:
    """"images" when the full frames of the view are there, else "cropped_images", else None."""
    for folder in ("images", "cropped_images"):
        if (Path(root) / folder / sid / seq / str(view)).is_dir():
            return folder
    return None


def crop_box(bbox: np.ndarray) -> tuple[int, int, int, int]:
    """scripts_data/crop_images.py: processed ``bbox`` (cx, cy, scale) -> the PIL crop box of the
    cropped image (scale x 1.5 x 200 px square, corners rounded as PIL's crop does); the crop is
    then resized to ``CROP_PX`` square."""
    cx, cy, dim = float(bbox[0]), float(bbox[1]), float(bbox[2]) * 1.5 * 200
    return tuple(int(round(x)) for x in (cx - dim / 2, cy - dim / 2, cx + dim / 2, cy + dim / 2))


def uncrop(crop: np.ndarray, box: tuple[int, int, int, int], W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """A cropped image put back in its full frame: (uint8 [H,W,3], inside bool [H,W]); black outside."""
    x0, y0, x1, y1 = box
    canvas, inside = Image.new("RGB", (W, H)), Image.new("L", (W, H))
    canvas.paste(Image.fromarray(crop).resize((x1 - x0, y1 - y0), Image.BICUBIC), (x0, y0))
    inside.paste(255, (x0, y0, x1, y1))
    return np.asarray(canvas), np.asarray(inside) > 0


@functools.lru_cache(maxsize=2)
def processed(path: str) -> dict[str, np.ndarray]:
    """A processed sequence: side -> [F,10,21,3] float32 camera-frame joints; "bbox" [F,9,3] (cached)."""
    data = read_npy(Path(path), StepFailed)
    cam = data.get("cam_coord", {})
    try:
        out = {s: np.asarray(cam[f"joints.{s}"], np.float32) for s in ("left", "right")}
    except KeyError as e:
        raise StepFailed("load", f"{path}: cam_coord has no {e}") from None
    if "bbox" in data:
        out["bbox"] = np.asarray(data["bbox"], np.float64)
    return out


def read_frame(root: Path, sid: str, seq: str, view: int, f: int, cam: ViewCamera) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [H,W,3] pinhole image of ``cam.K``, valid bool [H,W]: the pixels the camera saw) of
    mocap frame ``f`` (module doc: full frame or put back from cropped_images, undistorted)."""
    W, H = cam.size
    source = image_folder(root, sid, seq, view)
    img = read_rgb(image_path(root, sid, seq, view, f, cam.ioi_offset, source or "images"))
    if source == "cropped_images" and view != EGO_VIEW:
        bbox = processed(str(Path(root) / "processed_seqs" / sid / f"{seq}.npy")).get("bbox")
        if bbox is None:
            raise StepFailed("load", f"processed_seqs/{sid}/{seq}.npy has no bbox (needed by cropped_images)")
        img, valid = uncrop(img, crop_box(bbox[f, view]), W, H)
    else:
        if source == "cropped_images":  # the egocentric frame scaled by EGO_IMAGE_SCALE: scaled back
            img = np.asarray(Image.fromarray(img).resize((W, H), Image.BICUBIC))
        if img.shape[:2] != (H, W):
            raise StepFailed("load", f"images are {img.shape[1]}x{img.shape[0]}, misc.json says {W}x{H}")
        valid = np.ones((H, W), bool)
    if cam.dist8 is not None:
        img, seen = undistort(img, cam.K, cam.dist8)
        valid = valid & seen
    return img, valid
