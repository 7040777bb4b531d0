"""OakInk2 adapter (Zhan et al., CVPR 2024): bimanual complex tasks over many object parts.

Read exactly as the official toolkit reads it -- github.com/oakink/OakInk2 @ 63365c6
(``src/oakink2_toolkit/dataset.py``, ``src/oakink2_preview/dataset/stream_preview.py``,
``src/oakink2_preview/launch/viz/seg_3d.py``, ``src/oakink2_preview/util/vis_pyrender_util.py``,
``src/oakink2_preview/transform/transform_np.py``) and its MANO layer, the pinned submodule
lixiny/manotorch @ 933be97 (``manotorch/manolayer.py``, ``manotorch/utils/geometry.py``)::

    <root>/data/<seq_token>/<serial>/<frame_id:06d>.png     colour frames (30 fps)
    <root>/anno_preview/<seq_token>.pkl                     annotation (the README also calls it anno/)
    <root>/object_raw/align_ds/<obj_id>/<one .obj or .ply>  object-part models (metres)
    <root>/object_raw/obj_desc.json, <root>/program/...     task structure (not read here)

``<seq_token>`` is the sequence key with '/' written as '++' (``dataset.py`` L292), e.g.
``scene_03__A004++seq__0a3e...__2023-04-24-15-20-34``.

The annotation pickle (plain ``pickle`` of a dict; torch tensors inside ``raw_mano`` /
``raw_smplx``; read with ``LazyTensorUnpickler``: no ``pickle.load``, no ``torch.load``)::

    cam_def {serial: name}, cam_selection [name], frame_id_list [image frame id],
    cam_intr {name: {frame id: [3,3]}}, cam_extr {name: {frame id: [4,4] world -> camera}},
    mocap_frame_id_list, obj_list [obj_id], obj_transf {obj_id: {frame id: [4,4] object -> world}},
    raw_mano {frame id: {"rh__pose_coeffs": [1,16,4], "rh__tsl": [1,3], "rh__betas": [1,10], "lh__...": ...}}

Conventions, each pinned in ``tests/pipeline/hoi/test_oakink2.py`` from the toolkit's formulas:
  * frames: image frames are ``frame_id_list``; image frame ids and mocap frame ids share one
    numbering (120 Hz), so a frame's hands, objects and cameras are all looked up by the image
    frame id (``stream_preview.py`` L73-96 indexes ``cam_extr``, ``obj_transf``, ``raw_smplx`` with
    it); image ``data/<token>/<serial>/<frame_id:06d>.png`` (``stream_preview.py`` L78-80,
    ``seg_3d.py`` L253-256). The README writes ``<frame id>.jpg``: the code reads ``.png``, so
    ``.png`` is read, and ``.jpg`` only where no ``.png`` exists;
  * cameras: names ``allocentric_top|left|right`` and ``egocentric`` (``stream_preview.py``
    L17-22), per-frame ``cam_intr``/``cam_extr``; ``cam_extr`` maps world to camera
    (``seg_3d.py`` L192-193, ``transf_point_array_np`` = R p + t, ``transform_np.py`` L36-53), and
    the camera frame is OpenCV's (x right, y down, z forward: ``vis_pyrender_util.py`` L153-161
    flips y and z to render it with pyrender). Projection is ``K p / z`` with pixel i's centre at
    i (``project_point_array_np``, ``transform_np.py`` L56-72); the preview renderer passes the
    same cx, cy to pyrender (half a pixel off from that projection): the projection is followed.
    No distortion model anywhere. The egocentric camera moves: it is read frame by frame
    (per-frame ``cam_extr``), with each window's own scene reference (``ClipData.background``);
  * MANO: ``ManoLayer(rot_mode="quat", center_idx=0, use_pca=False, flat_hand_mean=True)``
    (``seg_3d.py`` L127-143): ``pose_coeffs`` are 16 quaternions **w, x, y, z** (root first),
    absolute -- quat mode adds no ``hands_mean`` (``manolayer.py`` L87-91, L119-126) -- and
    normalised by the layer (``geometry.py`` L225-253: ``2 / |q|^2``); ``center_idx=0``
    subtracts the posed wrist, and the caller adds ``tsl`` (``seg_3d.py`` L187-189): the wrist
    sits at ``tsl``, so smplx's ``trans = tsl - j0(betas)`` (``HandModel.rest_root``). Metres
    (manotorch has no x1000). MANO_LEFT is loaded as shipped (``ready_arguments``, no shapedirs
    fix): ``fix_left_shapedirs`` False. ``betas`` are stored per frame; the window's first
    annotated frame's are used;
  * objects: ``obj_transf`` maps the part's model (``load_obj``: the one .obj/.ply in its
    folder, ``dataset.py`` L24-34) to the world; camera pose = ``cam_extr @ obj_transf``
    (``seg_3d.py`` L239); metres (drawn with the hands in one scene). An articulated object is
    several parts, each with its own pose;
  * hands are annotated in every mocap frame (``_collect_mano``, ``dataset.py`` L257-274,
    indexes every frame); a frame without a ``raw_mano`` entry or with a non-finite or zero
    quaternion is not valid. OakInk2 ships no 3D joint labels (no joint check).

Object layer: the object parts that move during the sequence (``scene_objects``), each a rigid
``ObjectPart``; the most moved is the primary one (references, points, ``obj_rot``/``obj_trans``).

Selection: ``sequences`` (token, sequence key with '/', or a suffix), ``cameras`` (names or
serials). OakInk2 has no subjects, and its toolkit defines no split: ``subjects``/``split`` are
refused. One item = (sequence, camera); key ``<seq_token>/<camera name>``.
Background: static cameras: per-pixel median over ``BACKGROUND_FRAMES`` frames spread over the
sequence, masking discs around both wrists and the moving parts' projected hulls; the moving
egocentric camera: the same over the window's frames, masking the hands' own vertices.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from pipeline.assets.images import read_rgb
from pipeline.assets.mesh_io import read_mesh_arrays
from pipeline.clips.windows import frame_windows
from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.model import transform_mano
from pipeline.hoi.adapter import ClipData, HandClip, ObjectPart
from pipeline.hoi.adapter import pick_names as _pick
from pipeline.hoi.background import coverage_mask, median_reference, window_reference
from pipeline.hoi.datasets.scene_objects import box_corners, choose_objects
from pipeline.hoi.torch_pickle import LazyTensorUnpickler

ANNO_DIRS = ("anno_preview", "anno")     # dataset.py L100 (anno_offset default); the README's name
DATA_DIR, OBJ_DIR, MODELS_DIR = "data", "object_raw", "align_ds"
IMAGE_EXTS = (".png", ".jpg")            # the code's, then the README's
SIDES = {"left": "lh", "right": "rh"}    # meta.py HAND_SIDE
BACKGROUND_FRAMES = 9
HAND_RADIUS_M = 0.12       # static-camera background: disc around each wrist (tsl is the wrist)
OBJECT_PAD_M = 0.005


def _fail(msg: str, error=UserError):
    return UserError(msg) if error is UserError else StepFailed("load", msg)


def anno_dir(root: Path) -> Path | None:
    for d in ANNO_DIRS:
        if (Path(root) / d).is_dir():
            return Path(root) / d
    return None


@functools.lru_cache(maxsize=2)
def _read_anno(path: str, stamp: int) -> dict:
    with open(path, "rb") as f:
        return LazyTensorUnpickler(f).load()


def read_anno(path: Path, error=StepFailed) -> dict:
    """The annotation dict of one sequence (tensors still ``LazyTensor``; cached per file)."""
    try:
        data = _read_anno(str(path), Path(path).stat().st_mtime_ns)
    except FileNotFoundError:
        raise _fail(f"{path} is missing", error) from None
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{Path(path).name}: unreadable annotation ({type(e).__name__}: {str(e)[:100]})", error) from None
    missing = [k for k in ("cam_def", "cam_selection", "frame_id_list", "cam_intr", "cam_extr", "obj_list",
                           "obj_transf", "raw_mano") if k not in data] if isinstance(data, dict) else ["all keys"]
    if missing:
        raise _fail(f"{Path(path).name}: not an OakInk2 annotation (no {', '.join(missing)})", error)
    return data


def _arr(x, shape: tuple, what: str) -> np.ndarray:
    try:
        return np.asarray(x, np.float64).reshape(shape)
    except Exception as e:  # noqa: BLE001
        raise StepFailed("load", f"{what}: expected {shape} ({type(e).__name__})") from None


def quat_pose(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """manotorch quat mode: [N,16,4] quaternions (w, x, y, z; any norm) -> (axis-angle [N,48],
    valid [N]: every quaternion finite and non-zero)."""
    q = np.asarray(q, np.float64)
    ok = np.isfinite(q).all(axis=(1, 2)) & (np.linalg.norm(q, axis=-1) > 1e-12).all(axis=1)
    out = np.zeros((len(q), 48))
    if ok.any():
        xyzw = q[ok][..., [1, 2, 3, 0]].reshape(-1, 4)
        out[ok] = Rotation.from_quat(xyzw).as_rotvec().reshape(-1, 48)
    return out, ok


@functools.lru_cache(maxsize=16)
def read_part(folder: str) -> tuple[str, np.ndarray, np.ndarray]:
    """(mesh path, vertices [V,3] m, faces [F,3]) of one object part: the single .obj/.ply of its
    folder, loaded as ``load_obj`` does (process=False, materials skipped for .obj)."""
    d = Path(folder)
    found = sorted(p for p in d.iterdir() if p.suffix in (".obj", ".ply")) if d.is_dir() else []
    if len(found) != 1:
        raise StepFailed("load", f"{d}: expected one .obj or .ply model, found {len(found)}")
    kw = {"skip_materials": True} if found[0].suffix == ".obj" else {}
    return (str(found[0]), *read_mesh_arrays(found[0], **kw))


class Sequence:
    """One sequence's annotation as arrays over its image frames (``frame_id_list`` order)."""

    def __init__(self, root: Path, token: str, error=StepFailed):
        folder = anno_dir(root)
        if folder is None:
            raise _fail(f"{root}: no {' or '.join(ANNO_DIRS)}/ folder", error)
        a = read_anno(folder / f"{token}.pkl", error)
        self.root, self.token, self.anno = Path(root), token, a
        self.frames = [int(f) for f in a["frame_id_list"]]
        self.index = {f: i for i, f in enumerate(self.frames)}
        self.serial = {str(name): str(s) for s, name in a["cam_def"].items()}   # name -> serial
        self.cameras = [str(c) for c in a["cam_selection"] if str(c) in self.serial]

    def hand_present(self) -> np.ndarray:
        """[N] bool: some hand has a ``raw_mano`` entry in the frame (no tensor decoded)."""
        raw = self.anno["raw_mano"]
        return np.array([f in raw for f in self.frames], bool)

    def image(self, cam: str, fid: int) -> Path:
        folder = self.root / DATA_DIR / self.token / self.serial[cam]
        for ext in IMAGE_EXTS:
            if (folder / f"{fid:06d}{ext}").is_file():
                return folder / f"{fid:06d}{ext}"
        return folder / f"{fid:06d}{IMAGE_EXTS[0]}"

    def camera(self, cam: str, fids) -> tuple[np.ndarray, np.ndarray]:
        """(K [T,3,3], world -> camera [T,4,4]) of ``cam`` at frames ``fids``."""
        try:
            K = np.stack([_arr(self.anno["cam_intr"][cam][f], (3, 3), "cam_intr") for f in fids])
            E = np.stack([_arr(self.anno["cam_extr"][cam][f], (4, 4), "cam_extr") for f in fids])
        except KeyError as e:
            raise StepFailed("load", f"{self.token}: camera {cam} has no intrinsics/extrinsics for frame {e}") from None
        return K, E

    def hand(self, side: str, fids) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pose [T,48] absolute axis-angle, tsl [T,3] wrist, betas [T,10], valid [T]), world frame."""
        raw, p = self.anno["raw_mano"], SIDES[side]
        q, tsl, betas, present = np.zeros((len(fids), 16, 4)), np.zeros((len(fids), 3)), np.zeros((len(fids), 10)), []
        for k, f in enumerate(fids):
            d = raw.get(f)
            ok = isinstance(d, dict) and all(f"{p}__{n}" in d for n in ("pose_coeffs", "tsl", "betas"))
            if ok:
                q[k] = _arr(d[f"{p}__pose_coeffs"], (16, 4), "pose_coeffs")
                tsl[k] = _arr(d[f"{p}__tsl"], (3,), "tsl")
                betas[k] = _arr(d[f"{p}__betas"], (10,), "betas")
            present.append(ok)
        pose, valid = quat_pose(q)
        valid &= np.array(present, bool) & np.isfinite(tsl).all(axis=1) & np.isfinite(betas).all(axis=1)
        return pose, np.where(valid[:, None], tsl, 0.0), np.where(valid[:, None], betas, 0.0), valid

    def object_poses(self, obj: str, fids) -> tuple[np.ndarray, np.ndarray]:
        """(object -> world [T,4,4] (identity where missing), valid [T])."""
        table = self.anno["obj_transf"].get(obj, {})
        P, ok = np.tile(np.eye(4), (len(fids), 1, 1)), np.zeros(len(fids), bool)
        for k, f in enumerate(fids):
            if f in table:
                M = _arr(table[f], (4, 4), f"obj_transf {obj}")
                if np.isfinite(M).all():
                    P[k], ok[k] = M, True
        return P, ok

    def part_folder(self, obj: str) -> Path:
        return self.root / OBJ_DIR / MODELS_DIR / obj

    @functools.cached_property
    def layer_objects(self) -> list[str]:
        """The object parts of the layer, primary first (``scene_objects.choose_objects`` over the
        whole sequence, hands' wrists for the fallback)."""
        objs = [str(o) for o in self.anno["obj_list"]]
        corners, poses, valid = {}, {}, {}
        for o in objs:
            corners[o] = box_corners(read_part(str(self.part_folder(o)))[1])
            poses[o], valid[o] = self.object_poses(o, self.frames)
        wrists = []
        for side in SIDES:
            _, tsl, _, ok = self.hand(side, self.frames)
            wrists.append(np.where(ok[:, None], tsl, np.nan))
        return choose_objects(corners, poses, valid, np.stack(wrists, axis=1))

    @functools.cached_property
    def moving(self) -> dict[str, bool]:
        """camera name -> its extrinsics change over the sequence (the egocentric camera)."""
        out = {}
        for cam in self.cameras:
            E = np.stack([_arr(e, (4, 4), "cam_extr") for e in self.anno["cam_extr"].get(cam, {}).values()] or [np.eye(4)])
            out[cam] = bool(np.abs(E - E[0]).max() > 1e-6)
        return out


@functools.lru_cache(maxsize=2)
def _sequence(root: str, token: str, stamp: int) -> Sequence:
    return Sequence(Path(root), token)


def sequence(root: Path, token: str, error=StepFailed) -> Sequence:
    """The (worker-cached) ``Sequence`` of ``token``."""
    folder = anno_dir(root)
    path = folder / f"{token}.pkl" if folder is not None else None
    if path is None or not path.is_file():
        raise _fail(f"{root}: no annotation {token}.pkl in {' or '.join(ANNO_DIRS)}/", error)
    if error is UserError:
        return Sequence(Path(root), token, UserError)
    return _sequence(str(root), token, path.stat().st_mtime_ns)


class OakInk2Adapter:
    name = "oakink2"
    fix_left_shapedirs = False     # manotorch's ready_arguments loads MANO_LEFT.pkl as shipped

    def __init__(self):
        self.skipped_windows = 0

    # -- driver side ---------------------------------------------------------------------
    def list_items(self, root: Path, selection: dict) -> list[WorkItem]:
        root = Path(root)
        folder = anno_dir(root)
        if not root.is_dir() or folder is None or not (root / DATA_DIR).is_dir():
            raise UserError(f"--root {root} is not an OakInk2 root (expected data/ and anno_preview/ or anno/)")
        if selection.get("subjects"):
            raise UserError("OakInk2 has no subjects; select with --sequences (sequence token or key)")
        if selection.get("split"):
            raise UserError("OakInk2's toolkit defines no official split; leave --split out "
                            "(the store still holds out 3% of samples by key for evaluation)")
        tokens = sorted(p.stem for p in folder.glob("*.pkl") if (root / DATA_DIR / p.stem).is_dir())
        if not tokens:
            raise UserError(f"--root {root}: no sequence has both {folder.name}/<token>.pkl and data/<token>/")
        wanted = selection.get("sequences")
        chosen = [t for t in tokens if not wanted or any(
            t == w or t.endswith(w) or t.replace("++", "/") == w or t.replace("++", "/").endswith(w) for w in wanted)]
        if not chosen:
            raise UserError(f"--sequences {wanted} matches none of {tokens[:3]}")
        T, stride = int(selection["frames"]), int(selection["stride"])
        min_valid = float(selection.get("min_valid_frames") or 0.0)
        items, self.skipped_windows = [], 0
        for token in chosen:
            seq = sequence(root, token, UserError)
            cams = [c for c in seq.cameras if _pick([c], selection.get("cameras")) or
                    _pick([seq.serial[c]], selection.get("cameras"))]
            for cam in cams:
                wins = self._windows(seq, cam, T, stride, min_valid)
                self.skipped_windows += len(self._windows(seq, cam, T, stride, 0.0)) - len(wins)
                if wins:
                    key = f"{token}/{cam}"
                    items.append(WorkItem(key=key, locator=key, n_samples=len(wins)))
        if not items:
            raise UserError("the selection (sequences/cameras, --frames, --stride, --min-valid-frames) gives no clips "
                            "(a window needs every one of its images)")
        return items

    @staticmethod
    def _windows(seq: Sequence, cam: str, T: int, stride: int, min_valid: float) -> list[list[int]]:
        """Windows of image frame ids whose images all exist; ``min_valid`` on "some hand annotated"."""
        folder = seq.root / DATA_DIR / seq.token / seq.serial[cam]
        have = {p.stem for p in folder.iterdir() if p.suffix in IMAGE_EXTS} if folder.is_dir() else set()
        ok = np.array([f"{f:06d}" in have for f in seq.frames], bool)
        wins = frame_windows(len(seq.frames), T, stride, seq.hand_present(), min_valid)
        return [[seq.frames[i] for i in w] for w in wins if ok[w].all()]

    def windows(self, root: Path, item: WorkItem, selection: dict) -> list[list[int]]:
        token, cam = item.locator.rsplit("/", 1)
        seq = sequence(Path(root), token)
        if cam not in seq.serial:
            raise StepFailed("load", f"{token}: no camera {cam!r} in cam_def")
        return self._windows(seq, cam, int(selection["frames"]), int(selection["stride"]),
                             float(selection.get("min_valid_frames") or 0.0))

    # -- worker side ---------------------------------------------------------------------
    def load_clip(self, root: Path, item: WorkItem, frame_ids: list[int], hand_models: dict) -> ClipData:
        token, cam = item.locator.rsplit("/", 1)
        seq = sequence(Path(root), token)
        fids = [int(f) for f in frame_ids]
        K, E = seq.camera(cam, fids)
        if np.abs(K - K[0]).max() > 1e-9:
            raise StepFailed("load", f"{token}: camera {cam} intrinsics change within frames {fids[0]}..{fids[-1]}")
        images = np.stack([read_rgb(seq.image(cam, f)) for f in fids])
        hands = {}
        for side in SIDES:
            pose, tsl, betas, valid = seq.hand(side, fids)
            model = hand_models[side]
            b = betas[np.flatnonzero(valid)[0]] if valid.any() else np.zeros(10)
            trans = tsl - model.rest_root(b)                          # center_idx=0: wrist at tsl
            for t in np.flatnonzero(valid):
                pose[t:t + 1], trans[t:t + 1] = transform_mano(model, pose[t:t + 1], trans[t:t + 1], b, E[t])
            pose[~valid], trans[~valid] = 0.0, 0.0
            hands[side] = HandClip(pose=pose, betas=b, trans=trans, valid=valid)
        parts, obj_valid = [], np.ones(len(fids), bool)
        for obj in seq.layer_objects:
            P, ok = seq.object_poses(obj, fids)
            obj_valid &= ok
            _, v, f = read_part(str(seq.part_folder(obj)))
            parts.append(ObjectPart(name=obj, vertices=v, faces=f, poses=E @ P))
        mesh = Path(read_part(str(seq.part_folder(parts[0].name)))[0]) if parts else None
        clip = ClipData(key=item.key, frame_ids=fids, images=images, K=K[0].copy(), hands=hands, object_mesh=mesh,
                        object_poses=parts[0].poses if parts else np.tile(np.eye(4), (len(fids), 1, 1)),
                        object_valid=obj_valid & bool(parts), object_parts=parts or None,
                        object_uid=parts[0].name if parts else None,
                        extras={"sequence": token, "camera": cam, "objects": [p.name for p in parts]})
        if seq.moving.get(cam):
            clip.background = window_reference(clip, hand_models)
        return clip

    def background(self, root: Path, item: WorkItem) -> np.ndarray:
        """Masked median over ``BACKGROUND_FRAMES`` frames spread over the sequence: discs of
        ``HAND_RADIUS_M`` around each wrist and the layer objects' projected hulls are masked."""
        token, cam = item.locator.rsplit("/", 1)
        seq = sequence(Path(root), token)
        n = len(seq.frames)
        fids = [seq.frames[int(i)] for i in np.unique(np.linspace(0, n - 1, min(n, BACKGROUND_FRAMES)).round())]
        fids = [f for f in fids if seq.image(cam, f).is_file()] or fids[:1]
        imgs = np.stack([read_rgb(seq.image(cam, f)) for f in fids])
        H, W = imgs.shape[1:3]
        K, E = seq.camera(cam, fids)
        keep = np.ones(imgs.shape[:3], bool)
        objs = {o: (read_part(str(seq.part_folder(o)))[1], seq.object_poses(o, fids)) for o in seq.layer_objects}
        wrists = [seq.hand(side, fids) for side in SIDES]
        for k in range(len(fids)):
            groups = []
            for v, (P, ok) in objs.values():
                if ok[k]:
                    M = E[k] @ P[k]
                    groups.append((v[:: max(1, len(v) // 500)] @ M[:3, :3].T + M[:3, 3], OBJECT_PAD_M))
            for _, tsl, _, ok in wrists:
                if ok[k]:
                    groups.append(((E[k][:3, :3] @ tsl[k] + E[k][:3, 3])[None], HAND_RADIUS_M))
            keep[k] = ~coverage_mask(groups, K[k], W, H)
        return median_reference(imgs, keep)

