"""TACO adapter (Liu et al., CVPR 2024): bimanual tool use, a tool and a target object.

Read exactly as the official toolkit reads it (github.com/leolyliu/TACO-Instructions:
``README.md`` "Data Organization", ``dataset_utils/hand_pose_loader.py``
``read_hand_shape`` / ``mano_params_to_hand_info``, ``dataset_utils/visualization.py``
``process``, ``dataset_utils/visualize_world_coordinate_system.py``,
``dataset_utils/video_utils.py`` ``mp42imgs``, and its copy of manopth,
``dataset_utils/manopth/manopth/manolayer.py`` ``ManoLayer``)::

    <root>/Hand_Poses/<triplet>/<seq>/{left,right}_hand.pkl        per-frame MANO
                                     /{left,right}_hand_shape.pkl  {"hand_shape": tensor (1,10)}
    <root>/Object_Poses/<triplet>/<seq>/tool_<id>.npy, target_<id>.npy   [N,4,4] object -> world, m
    <root>/Object_Models/<id>_cm.obj                                  meshes in centimetres
    <root>/Allocentric_Camera_Parameters/<triplet>/<seq>/calibration.json
                                     {serial: {"K": 3x3, "R": 3x3, "T": 3, "imgSize": [w, h]}}
    <root>/Allocentric_RGB_Videos/<triplet>/<seq>/<serial>.mp4        (12 static views)
    <root>/Marker_Removed_Allocentric_RGB_Videos/<triplet>/<seq>/<serial>.mp4  (used when present)

``<triplet>`` is a folder like ``(stir, spoon, bowl)``, ``<seq>`` like ``20231105_019``.

Conventions (each converted here into ClipData's: OpenCV camera frame, metres, absolute pose):
  * hand files: a pickle ``{frame_key: {"hand_pose": tensor (48,), "hand_trans": tensor (3,)}}``;
    the toolkit sorts the keys ("00001", ...) and the i-th key is frame i of the videos and
    object poses (``mano_params_to_hand_info``). Values are *pickled torch tensors*: read
    with ``pipeline.hoi.torch_pickle.TensorUnpickler``, a restricted unpickler that decodes
    torch's tensor/storage records itself (numpy out, never ``torch.load``) and refuses every
    other global; no plain ``pickle.load``;
  * pose: 48 axis-angle numbers, no PCA (``ManoLayer(use_pca=False, ncomps=45)``) with
    manopth's default ``flat_hand_mean=True`` -- absolute already, used as is;
  * translation is *wrist-centred*: ``ManoLayer(center_idx=0)`` subtracts joint 0 (the
    wrist) and the loader adds ``hand_trans``, so the wrist sits at ``hand_trans`` (metres;
    manopth's millimetres are divided by 1000 again). smplx places the wrist at
    ``j0(betas) + trans``, hence ``trans = hand_trans - j0(betas)`` (``HandModel.rest_root``);
  * left hand: manopth loads MANO_LEFT.pkl as shipped, so ``fix_left_shapedirs = False``;
  * world -> camera: ``x_cam = R x_world + T`` (``visualize_world_coordinate_system.py``);
    K is for the video's resolution (``imgSize``); no distortion model is used by the
    toolkit and none is applied here;
  * objects: poses map the mesh in metres (``vertices *= 0.01`` after loading ``<id>_cm.obj``);
  * every frame is annotated (both hands, both objects); TACO ships no 3D joint labels,
    so ``joints_label`` is None. Non-finite values mark a frame not valid.

Where each convention comes from (github.com/leolyliu/TACO-Instructions at c06f82c, file Lline;
pinned by tests/pipeline/hoi/test_taco.py against the toolkit's formulas and a port of its manopth):
  * MANO: ``ManoLayer(use_pca=False, ncomps=45, side, center_idx=0)``
    (``dataset_utils/hand_pose_loader.py`` L33) with manopth's default ``flat_hand_mean=True``
    (``manopth/manolayer.py`` L21, L105-106): the 48 numbers are absolute; called without
    ``th_trans`` (L61), so joints and vertices are centred on the wrist (manolayer.py L283-287),
    then /1000 and ``+ hand_trans`` (L62-65); betas from ``<side>_hand_shape.pkl``, zeros when
    absent (L10-16); MANO_LEFT as manopth loads it;
  * frame numbering: the pickle's keys sorted (L41-45), the i-th key = frame i of the object poses
    and of the videos read in order (``video_utils.py`` L25-40 ``mp42imgs``);
  * units: ``<id>_cm.obj`` in centimetres, ``vertices *= 0.01`` (``visualization.py`` L91-94);
    object poses [N,4,4] and hand translations in metres;
  * cameras: ``calibration.json`` ``K``, ``R``, ``T`` with ``x_cam = R x + T`` and pixels
    ``K x_cam / z``, OpenCV frame, no half-pixel term, no distortion model
    (``visualize_world_coordinate_system.py`` L25-29, L37-39).

Object layer (see ``schemas/store.py``): both manipulated objects, one rigid ``ObjectPart``
each (``tool_<id>``, ``target_<id>``); ``object_mesh`` / ``object_poses`` (reference views,
points, obj_rot/obj_trans/obj_scale) are the *tool*. ``object_poses`` carry the mesh unit
(cm -> m) as a uniform scale.

Selection: ``sequences`` (sequence name, triplet, or ``triplet/seq``; exact or suffix),
``cameras`` (allocentric serials), ``split`` (the toolkit's ``train``, ``test_1`` .. ``test_4``
from ``data_lists/v1_overall_data_train_test_split.txt``, copied to the root or
``<root>/data_lists/``); TACO has no subjects. One item = (triplet, sequence, serial).
Background: per-pixel median over frames spread over the video, pixels near the
annotated hands and objects masked out. Not read: egocentric videos and cameras, depth.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from pipeline.assets.mesh_io import read_mesh_arrays
from pipeline.clips.windows import frame_windows
from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.model import transform_mano
from pipeline.hoi.adapter import ClipData, HandClip, ObjectPart
from pipeline.hoi.adapter import pick_names as _pick
from pipeline.hoi.background import median_reference
from pipeline.hoi.torch_pickle import TensorUnpickler

HANDS_DIR, OBJ_DIR, MODELS_DIR = "Hand_Poses", "Object_Poses", "Object_Models"
CALIB_DIR = "Allocentric_Camera_Parameters"
VIDEO_DIRS = ("Marker_Removed_Allocentric_RGB_Videos", "Allocentric_RGB_Videos")  # first found wins
SPLIT_FILE = "v1_overall_data_train_test_split.txt"
SPLITS = ("train", "test_1", "test_2", "test_3", "test_4")
MESH_UNIT_M = 0.01          # Object_Models/<id>_cm.obj are in centimetres
BACKGROUND_FRAMES = 9
HAND_RADIUS_M = 0.12        # background: pixels within this of a wrist are masked

def read_pickle(path: Path):
    """A TACO pickle through the restricted ``TensorUnpickler``; ``StepFailed("load")`` if missing/unreadable."""
    try:
        with open(path, "rb") as f:
            return TensorUnpickler(f).load()
    except FileNotFoundError:
        raise StepFailed("load", f"{path} is missing") from None
    except Exception as e:  # noqa: BLE001
        raise StepFailed("load", f"{path.name}: unreadable ({type(e).__name__}: {str(e)[:100]})") from None


@functools.lru_cache(maxsize=8)
def read_hand_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``<side>_hand.pkl`` -> (hand_pose [N,48], hand_trans [N,3]) float64, frames in sorted key order."""
    data = read_pickle(Path(path))
    if not isinstance(data, dict) or not data:
        raise StepFailed("load", f"{Path(path).name}: not a dict of frames")
    try:
        keys = sorted(data)
        pose = np.stack([np.asarray(data[k]["hand_pose"], np.float64).reshape(48) for k in keys])
        trans = np.stack([np.asarray(data[k]["hand_trans"], np.float64).reshape(3) for k in keys])
    except (KeyError, TypeError, ValueError) as e:
        raise StepFailed("load", f"{Path(path).name}: frame entries need hand_pose (48) and hand_trans (3): "
                         f"{type(e).__name__} {str(e)[:60]}") from None
    return pose, trans


def read_hand_shape(path: Path) -> np.ndarray:
    """``<side>_hand_shape.pkl`` -> betas [10] (zeros when the file is absent, as the toolkit's
    ``read_hand_shape``)."""
    if not path.is_file():
        return np.zeros(10)
    data = read_pickle(path)
    try:
        return np.asarray(data["hand_shape"], np.float64).reshape(10)
    except (KeyError, TypeError, ValueError):
        raise StepFailed("load", f"{path.name}: no 'hand_shape' of 10 numbers") from None


@functools.lru_cache(maxsize=8)
def read_mesh_m(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``<id>_cm.obj`` -> (vertices [V,3] metres, faces [F,3])."""
    return read_mesh_arrays(path, unit=MESH_UNIT_M)


class _VideoCursor:
    """One open decoder (an ffmpeg process) kept between calls: windows asked for in order
    continue where the last one stopped, so an item's video is decoded about once."""

    path, gen, next_id, size = None, None, 0, (0, 0)

    @classmethod
    def frames(cls, path: Path, want: set[int]) -> dict[int, np.ndarray]:
        import imageio_ffmpeg

        if cls.path != str(path) or cls.gen is None or min(want) < cls.next_id:
            if cls.gen is not None:
                cls.gen.close()
            cls.path, cls.gen, cls.next_id = str(path), imageio_ffmpeg.read_frames(str(path)), 0
            cls.size = next(cls.gen)["size"]
        out, (w, h) = {}, cls.size
        while cls.next_id <= max(want):
            buf = next(cls.gen, None)
            if buf is None:
                cls.gen = None
                break
            if cls.next_id in want:
                out[cls.next_id] = np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy()
            cls.next_id += 1
        return out


def read_video_frames(path: Path, frame_ids: list[int]) -> dict[int, np.ndarray]:
    """Frames ``frame_ids`` (0-based decode order, as ``mp42imgs``) -> uint8 [H,W,3] RGB."""
    want = set(int(i) for i in frame_ids)
    try:
        out = _VideoCursor.frames(Path(path), want)
    except Exception as e:  # noqa: BLE001
        _VideoCursor.gen = None
        raise StepFailed("load", f"{Path(path).name}: cannot decode ({type(e).__name__})") from None
    if len(out) != len(want):
        raise StepFailed("load", f"{Path(path).name} has fewer frames than the annotation ({max(want) + 1} needed)")
    return out


class TacoAdapter:
    name = "taco"
    fix_left_shapedirs = False     # manopth reads MANO_LEFT.pkl as shipped
    skipped_windows = 0

    # -- driver side ---------------------------------------------------------------------
    def _split(self, root: Path, split: str) -> set[str]:
        if split not in SPLITS:
            raise UserError(f"--split {split!r} is not a TACO split; choose one of {', '.join(SPLITS)}")
        for path in (root / SPLIT_FILE, root / "data_lists" / SPLIT_FILE):
            if path.is_file():
                rows = [ln.strip().split(",") for ln in path.read_text().splitlines() if ln.strip()]
                return {r[0].strip() for r in rows if len(r) == 2 and r[1].strip() == split}
        raise UserError(f"--split needs {SPLIT_FILE} (TACO-Instructions data_lists/) in {root} or {root / 'data_lists'}")

    def list_items(self, root: Path, selection: dict) -> list[WorkItem]:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"--root {root} is not a folder (expected the TACO root with {HANDS_DIR}/, {OBJ_DIR}/ ...)")
        for sub in (HANDS_DIR, OBJ_DIR, MODELS_DIR, CALIB_DIR):
            if not (root / sub).is_dir():
                raise UserError(f"--root {root} is not a TACO root: {sub}/ is missing")
        if not any((root / d).is_dir() for d in VIDEO_DIRS):
            raise UserError(f"--root {root} is not a TACO root: {VIDEO_DIRS[1]}/ is missing")
        if selection.get("subjects"):
            raise UserError("TACO has no subjects; select with --sequences (sequence, triplet or triplet/sequence)")
        seqs = sorted(f"{t.name}/{s.name}" for t in (root / HANDS_DIR).iterdir() if t.is_dir()
                      for s in t.iterdir() if s.is_dir())
        if not seqs:
            raise UserError(f"--root {root}: {HANDS_DIR}/ holds no <triplet>/<sequence> folders")
        wanted = selection.get("sequences")
        chosen = [s for s in seqs if not wanted or any(s == w or s.endswith(w) or s.split("/")[0] == w for w in wanted)]
        if selection.get("split"):
            names = self._split(root, selection["split"])
            chosen = [s for s in chosen if s.split("/")[1] in names]
        if not chosen:
            raise UserError(f"the selection (--sequences/--split) matches none of {seqs[:3]}...")
        T, stride = int(selection["frames"]), int(selection["stride"])
        self.skipped_windows = 0     # every TACO frame is annotated: min_valid_frames drops nothing
        items = []
        for seq in chosen:
            try:
                n = self._n_frames(root, seq)
                calib = self._calibration(root, seq, UserError)
            except UserError:
                continue     # incomplete sequence (no object poses / calibration): not an item
            wins = len(frame_windows(n, T, stride))
            for serial in _pick(sorted(calib), selection.get("cameras")):
                if wins > 0 and self._video(root, seq, serial) is not None:
                    key = f"{seq}/{serial}"
                    items.append(WorkItem(key=key, locator=key, n_samples=wins))
        if not items:
            raise UserError("the selection (sequences/cameras/split, --frames, --stride) gives no clips "
                            "(each needs object poses, calibration.json and the camera's video)")
        return items

    def windows(self, root: Path, item: WorkItem, selection: dict) -> list[list[int]]:
        seq = item.locator.rsplit("/", 1)[0]
        return frame_windows(self._n_frames(Path(root), seq, StepFailed), int(selection["frames"]),
                             int(selection["stride"]))

    # -- files ----------------------------------------------------------------------------
    def _object_files(self, root: Path, seq: str, error=UserError) -> dict[str, tuple[str, Path]]:
        """{"tool": (id, npy), "target": (id, npy)} as ``visualization.process`` finds them."""
        folder = root / OBJ_DIR / seq
        found = {}
        for p in sorted(folder.glob("*.npy")) if folder.is_dir() else []:
            role = p.stem.split("_")[0]
            if role in ("tool", "target"):
                found[role] = (p.stem.split("_")[-1], p)
        if len(found) != 2:
            msg = f"{folder} lacks tool_<id>.npy and target_<id>.npy"
            raise UserError(msg) if error is UserError else StepFailed("load", msg)
        return found

    def _n_frames(self, root: Path, seq: str, error=UserError) -> int:
        path = self._object_files(root, seq, error)["tool"][1]
        try:
            return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
        except Exception as e:  # noqa: BLE001
            msg = f"{path}: unreadable object poses ({type(e).__name__})"
            raise UserError(msg) if error is UserError else StepFailed("load", msg) from None

    def _calibration(self, root: Path, seq: str, error=StepFailed) -> dict:
        path = root / CALIB_DIR / seq / "calibration.json"
        try:
            data = json.loads(path.read_text())
            assert isinstance(data, dict)
        except Exception as e:  # noqa: BLE001
            msg = f"{path}: missing or not a JSON object ({type(e).__name__})"
            raise UserError(msg) if error is UserError else StepFailed("load", msg) from None
        return data

    def camera(self, root: Path, seq: str, serial: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """(K [3,3], world -> camera [4,4], (W, H)) of ``serial`` (OpenCV, metres)."""
        c = self._calibration(root, seq).get(serial)
        try:
            K = np.asarray(c["K"], np.float64).reshape(3, 3)
            E = np.eye(4)
            E[:3, :3] = np.asarray(c["R"], np.float64).reshape(3, 3)
            E[:3, 3] = np.asarray(c["T"], np.float64).reshape(3)
            size = tuple(int(x) for x in c["imgSize"])
        except (KeyError, TypeError, ValueError):
            raise StepFailed("load", f"calibration.json: camera {serial} needs K, R, T, imgSize") from None
        return K, E, size

    def _video(self, root: Path, seq: str, serial: str) -> Path | None:
        for d in VIDEO_DIRS:
            if (root / d / seq / f"{serial}.mp4").is_file():
                return root / d / seq / f"{serial}.mp4"
        return None

    def world_poses(self, root: Path, seq: str) -> dict:
        """Everything of a sequence in the world frame: {"hands": side -> (pose [N,48],
        trans [N,3] wrist, betas [10]), "objects": role -> (id, poses [N,4,4])}."""
        folder = root / HANDS_DIR / seq
        hands = {}
        for side in ("left", "right"):
            pose, trans = read_hand_file(str(folder / f"{side}_hand.pkl"))
            hands[side] = (pose, trans, read_hand_shape(folder / f"{side}_hand_shape.pkl"))
        objects = {}
        for role, (oid, path) in self._object_files(root, seq, StepFailed).items():
            P = np.load(path, allow_pickle=False).astype(np.float64)
            if P.ndim != 3 or P.shape[1:] != (4, 4):
                raise StepFailed("load", f"{path.name}: object poses have shape {P.shape}, expected [N,4,4]")
            objects[role] = (oid, P)
        n = len(objects["tool"][1])
        for what, arr in [*((f"{s}_hand.pkl", h[0]) for s, h in hands.items()), ("target poses", objects["target"][1])]:
            if len(arr) != n:
                raise StepFailed("load", f"{seq}: {what} has {len(arr)} frames, the tool poses {n}")
        return {"hands": hands, "objects": objects}

    # -- worker side ---------------------------------------------------------------------
    def load_clip(self, root: Path, item: WorkItem, frame_ids: list[int], hand_models: dict) -> ClipData:
        root = Path(root)
        seq, serial = item.locator.rsplit("/", 1)
        K, E, (W, H) = self.camera(root, seq, serial)
        video = self._video(root, seq, serial)
        if video is None:
            raise StepFailed("load", f"no video {serial}.mp4 for {seq}")
        frames = read_video_frames(video, list(frame_ids))
        images = np.stack([frames[i] for i in frame_ids])
        if images.shape[1:3] != (H, W):
            raise StepFailed("load", f"{video.name} is {images.shape[2]}x{images.shape[1]}, calibration imgSize {W}x{H}")
        world = self.world_poses(root, seq)
        ids = np.asarray(frame_ids)
        hands = {}
        for side, (pose, trans, betas) in world["hands"].items():
            p, t = pose[ids], trans[ids]
            valid = np.isfinite(p).all(axis=1) & np.isfinite(t).all(axis=1)
            p, t = np.where(valid[:, None], p, 0.0), np.where(valid[:, None], t, 0.0)
            model = hand_models[side]
            p, t = transform_mano(model, p, t - model.rest_root(betas), betas, E)
            hands[side] = HandClip(pose=p, betas=betas, trans=t, valid=valid)
        parts, valid = [], np.ones(len(ids), bool)
        for role in ("tool", "target"):
            oid, P = world["objects"][role]
            P = P[ids]
            ok = np.isfinite(P).all(axis=(1, 2))
            valid &= ok
            P = np.where(ok[:, None, None], P, np.eye(4))
            v, f = read_mesh_m(str(self.mesh_path(root, oid)))
            parts.append(ObjectPart(name=f"{role}_{oid}", vertices=v, faces=f, poses=E @ P))
        tool_id = world["objects"]["tool"][0]
        unit = np.diag([MESH_UNIT_M] * 3 + [1.0])
        return ClipData(key=item.key, frame_ids=list(frame_ids), images=images, K=K, hands=hands,
                        object_mesh=self.mesh_path(root, tool_id), object_poses=parts[0].poses @ unit,
                        object_valid=valid, object_parts=parts,
                        extras={"triplet": seq.split("/")[0], "tool": tool_id,
                                "target": world["objects"]["target"][0]})

    def mesh_path(self, root: Path, oid: str) -> Path:
        path = Path(root) / MODELS_DIR / f"{oid}_cm.obj"
        if not path.is_file():
            raise StepFailed("load", f"object model {path} is missing")
        return path

    def background(self, root: Path, item: WorkItem) -> np.ndarray:
        """Median of ``BACKGROUND_FRAMES`` frames spread over the video, each pixel taken
        only from frames where it is away from the annotated objects (their projected
        vertices' boxes) and hands (``HAND_RADIUS_M`` around the wrist)."""
        root = Path(root)
        seq, serial = item.locator.rsplit("/", 1)
        K, E, _ = self.camera(root, seq, serial)
        world = self.world_poses(root, seq)
        n = len(world["objects"]["tool"][1])
        ids = [int(i) for i in np.unique(np.linspace(0, n - 1, min(n, BACKGROUND_FRAMES)).round())]
        frames = read_video_frames(self._video(root, seq, serial), ids)
        imgs = np.stack([frames[i] for i in ids])
        H, W = imgs.shape[1:3]
        keep = np.ones(imgs.shape[:3], bool)
        for k, i in enumerate(ids):
            boxes = []
            for oid, P in world["objects"].values():
                if np.isfinite(P[i]).all():
                    v = read_mesh_m(str(self.mesh_path(root, oid)))[0]
                    boxes.append(_box(_project(K, E, v @ P[i][:3, :3].T + P[i][:3, 3]), 8))
            for _, trans, _ in world["hands"].values():
                c = (E[:3, :3] @ trans[i] + E[:3, 3]) if np.isfinite(trans[i]).all() else None
                if c is not None and c[2] > 1e-3:
                    r = K[0, 0] * HAND_RADIUS_M / c[2]
                    u, w = _project(K, E, trans[i][None])[0]
                    boxes.append((u - r, w - r, u + r, w + r))
            for x0, y0, x1, y1 in (b for b in boxes if b is not None):
                keep[k, max(int(y0), 0):max(int(y1) + 1, 0), max(int(x0), 0):max(int(x1) + 1, 0)] = False
        return median_reference(imgs, keep)


def _project(K: np.ndarray, E: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """World points [N,3] -> pixels [N,2] (OpenCV; points behind the camera dropped)."""
    c = pts @ E[:3, :3].T + E[:3, 3]
    c = c[c[:, 2] > 1e-3]
    return np.stack([K[0, 0] * c[:, 0] / c[:, 2] + K[0, 2], K[1, 1] * c[:, 1] / c[:, 2] + K[1, 2]], axis=1)


def _box(uv: np.ndarray, margin: float):
    if len(uv) == 0:
        return None
    (x0, y0), (x1, y1) = uv.min(axis=0) - margin, uv.max(axis=0) + margin
    return (x0, y0, x1, y1)
