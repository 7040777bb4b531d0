"""One HOT3D-Clips clip tar as the official code reads it (facebookresearch/hot3d @ e814021
``hot3d/clips/clip_util.py``, ``vis_clips.py``; facebookresearch/hand_tracking_toolkit @ ffb20d0
``dataset.py decode_hand_pose``, ``math_utils.quat_trans_to_matrix``): members, per-frame JSON,
images, cameras, MANO hand parameters and object poses. Conventions: ``pipeline.hoi.datasets.hot3d``.
"""

from __future__ import annotations

import functools
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from pipeline.errors import StepFailed
from pipeline.hoi.datasets.hot3d_camera import Fisheye624

SHAPES = "__hand_shapes.json__"
N_PCA = 15                  # mano_hand_model.py num_pose_coeffs


def se3(d: dict) -> np.ndarray:
    """``{quaternion_wxyz, translation_xyz}`` -> [4,4] (``se3_from_dict``)."""
    w, x, y, z = (float(a) for a in d["quaternion_wxyz"])
    M = np.eye(4)
    M[:3, :3] = Rotation.from_quat([x, y, z, w]).as_matrix()
    M[:3, 3] = [float(a) for a in d["translation_xyz"]]
    return M


class Clip:
    """One clip tar, opened once per worker: its members, JSON files and images."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.tar = tarfile.open(self.path, "r")
            self.members = {m.name: m for m in self.tar.getmembers()}
        except (OSError, tarfile.TarError) as e:
            raise StepFailed("load", f"{self.path.name}: not a readable tar ({type(e).__name__})") from None
        ids = [int(n[:-len(".info.json")]) for n in self.members if re.fullmatch(r"\d+\.info\.json", n)]
        self.n_frames = max(ids) + 1 if ids else 0

    def close(self) -> None:
        self.tar.close()

    def read(self, name: str) -> bytes | None:
        m = self.members.get(name)
        return None if m is None else self.tar.extractfile(m).read()

    def json(self, name: str):
        b = self.read(name)
        if b is None:
            return None
        try:
            return json.loads(b)
        except ValueError:
            raise StepFailed("load", f"{self.path.name}: {name} is not valid JSON") from None

    def frame(self, fid: int, kind: str):
        return self.json(f"{fid:06d}.{kind}.json")

    def image(self, fid: int, stream: str) -> np.ndarray:
        name = f"{fid:06d}.image_{stream}.jpg"
        b = self.read(name)
        if b is None:
            raise StepFailed("load", f"{self.path.name}: {name} is missing")
        try:
            with Image.open(io.BytesIO(b)) as im:
                return np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001
            raise StepFailed("load", f"{self.path.name}: {name} is unreadable ({type(e).__name__})") from None

    def streams(self) -> dict[str, str]:
        """stream id -> calibration label, from frame 0's cameras.json (sorted as vis_clips.py L75)."""
        cams = self.frame(0, "cameras") or {}
        return {s: str(cams[s].get("calibration", {}).get("label", ""))
                for s in sorted(cams, key=lambda x: int(x.split("-")[0]) if x.split("-")[0].isdigit() else 0)}

    def camera(self, fid: int, stream: str) -> tuple[Fisheye624, np.ndarray]:
        """(fisheye model, T_world_from_camera [4,4]) of ``stream`` at ``fid``."""
        cams = self.frame(fid, "cameras") or {}
        try:
            c = cams[stream]
            return Fisheye624.from_calibration(c["calibration"]), se3(c["T_world_from_camera"])
        except (KeyError, TypeError, ValueError) as e:
            raise StepFailed("load", f"{self.path.name}: frame {fid} has no usable camera {stream} "
                             f"({type(e).__name__}: {str(e)[:80]})") from None

    @functools.cached_property
    def betas(self) -> np.ndarray | None:
        shapes = self.json(SHAPES)
        if not isinstance(shapes, dict) or "mano" not in shapes:
            return None
        return np.asarray(shapes["mano"], np.float64).reshape(10)

    @functools.cached_property
    def hands(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """side -> (thetas [N,15], wrist_xform [N,6], valid [N]) over the clip's frames."""
        N = self.n_frames
        out = {s: (np.zeros((N, N_PCA)), np.zeros((N, 6)), np.zeros(N, bool)) for s in ("left", "right")}
        for f in range(N):
            j = self.frame(f, "hands") or {}
            for side, (th, wx, ok) in out.items():
                h = j.get(side)
                if not isinstance(h, dict) or "umetrack_pose" not in h or "mano_pose" not in h:
                    continue      # decode_hand_pose: MANO only where UmeTrack is present
                try:
                    th[f] = np.asarray(h["mano_pose"]["thetas"], np.float64).reshape(N_PCA)
                    wx[f] = np.asarray(h["mano_pose"]["wrist_xform"], np.float64).reshape(6)
                except (KeyError, TypeError, ValueError):
                    raise StepFailed("load", f"{self.path.name}: frame {f} {side} mano_pose needs thetas (15) and "
                                     "wrist_xform (6)") from None
                ok[f] = np.isfinite(th[f]).all() and np.isfinite(wx[f]).all() and self.betas is not None
        return out

    def hand_valid(self) -> np.ndarray:
        return self.hands["left"][2] | self.hands["right"][2]

    @functools.cached_property
    def objects(self) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
        """name ("obj_<bop id:06d>", "#k" for a second instance) -> (bop id, object -> world [N,4,4], valid [N])."""
        out: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        for f in range(self.n_frames):
            j = self.frame(f, "objects") or {}
            for key, instances in j.items():
                for k, inst in enumerate(instances if isinstance(instances, list) else []):
                    try:
                        bop = int(inst.get("object_bop_id", key))
                        M = se3(inst["T_world_from_object"])
                    except (KeyError, TypeError, ValueError):
                        raise StepFailed("load", f"{self.path.name}: frame {f} object {key} has no usable "
                                         "T_world_from_object") from None
                    name = f"obj_{bop:06d}" + (f"#{k}" if k else "")
                    if name not in out:
                        out[name] = (bop, np.tile(np.eye(4), (self.n_frames, 1, 1)), np.zeros(self.n_frames, bool))
                    out[name][1][f], out[name][2][f] = M, True
        return out


@functools.lru_cache(maxsize=2)
def _clip(path: str, stamp: int) -> Clip:
    return Clip(Path(path))


def open_clip(path: Path) -> Clip:
    """The worker-cached ``Clip`` (re-opened when the file changes)."""
    try:
        return _clip(str(path), Path(path).stat().st_mtime_ns)
    except FileNotFoundError:
        raise StepFailed("load", f"{path} is missing") from None
