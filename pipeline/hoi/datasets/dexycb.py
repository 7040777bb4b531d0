"""DexYCB adapter: reads the official on-disk layout (as dex-ycb-toolkit reads it).

``<root>/<subject>/<sequence>/meta.yml`` (serials, num_frames, ycb_ids, ycb_grasp_ind,
mano_sides, mano_calib), ``<serial>/color_%06d.jpg`` (640x480), ``labels_%06d.npz``
(seg, pose_y [n_obj,3,4] and pose_m [n_hands,51] in that camera's frame),
``<root>/calibration/intrinsics/<serial>_640x480.yml`` (color: fx, fy, ppx, ppy),
``<root>/calibration/mano_<calib>/mano.yml`` (betas), ``<root>/models/<class>/textured_simple.obj``.

One item = one (subject, sequence, camera serial); key and locator
``<subject>/<sequence>/<serial>``. Per frame the hand parameters come from the camera's
labels file (pose_m: 3 global axis-angle + 45 PCA + 3 translation, metres; all zero =
not annotated). The ``object`` layer is the grasped object ``ycb_ids[ycb_grasp_ind]``;
the other objects of the scene are in the RGB frames only (the MLO has one object slot).

Background reference: the per-pixel median over up to ``BACKGROUND_FRAMES`` frames spread
over the whole sequence, taking at each pixel only frames whose ``seg`` is neither a hand
(255) nor the grasped object's YCB id; static, non-grasped objects stay in the background
(they are in the target RGB too). Pixels covered in every sampled frame copy the nearest
pixel that was uncovered (nearest-neighbour fill). DexYCB cameras are static, so this is the
scene without the hands and the grasped object as far as the sequence ever shows it.

Joint labels: ``labels_*.npz`` ``joint_3d`` [n_hands,21,3] (metres, this camera's frame,
manopth's 21-joint order; all -1 = none) fills ``ClipData.joints_label`` (NaN = none); the
job compares it with our MANO joints (``--max-joint-error-mm``).

Selection: ``split`` (official s0..s3 train/val/test, ``dexycb_splits``), then ``subjects``,
``sequences``, ``cameras`` (names or suffixes) narrow it; ``min_valid_frames``: windows where
fewer than that fraction of frames have an annotated hand (``pose.npz`` ``pose_m`` not all
zero) are skipped. Principal point: ``ppx``/``ppy`` are RealSense pixel coordinates where
pixel i's centre is at i -- the OpenCV convention ``ClipData.K`` uses, taken as is.

Conventions and where they come from (github.com/NVlabs/dex-ycb-toolkit at 64551b0, file Lline;
pinned by tests/pipeline/hoi/test_dexycb.py against the toolkit's formulas):
  * MANO: ``ManoLayer(flat_hand_mean=False, ncomps=45, use_pca=True)`` (``layers/mano_layer.py``
    L27-31): ``pose_m[:48]`` = 3 global axis-angle + 45 PCA coefficients, absolute finger pose =
    ``hands_mean + pca @ hands_components`` (manopth ``manolayer.py`` L152-164); ``pose_m[48:51]``
    = translation in metres (``layers/mano_group_layer.py`` L87-90), manopth's millimetres divided
    by 1000 (mano_layer.py L54-56); all-zero ``pose_m`` = no hand (``sequence_loader.py`` L211,
    L268); side = ``meta.yml`` ``mano_sides``, betas = ``calibration/mano_<calib>/mano.yml``
    (``dex_ycb.py`` L227-233); MANO_LEFT as manopth loads it (``fix_left_shapedirs`` False);
    joints: manopth's 21 (tips 745, 317, 444 | 445 left, 556, 673; manolayer.py L271-281);
  * units: metres (YCB ``textured_simple.obj``, ``pose_y`` translations, MANO after /1000), depth
    in mm (``sequence_loader.py`` L319);
  * image numbering: ``color_{:06d}.jpg`` / ``labels_{:06d}.npz``, frames 0..num_frames-1
    (``dex_ycb.py`` L115-117, L218; ``sequence_loader.py`` L251-252, L295-296);
  * cameras: labels' ``pose_y`` [n,3,4] and ``pose_m`` are in the camera's OpenCV frame (the
    toolkit flips rows 1-2 to draw them in OpenGL: ``examples/render_sequence.py`` L156-158); K =
    ``[[fx,0,ppx],[0,fy,ppy],[0,0,1]]`` (``sequence_loader.py`` L69-82), pixel i's centre at i
    (the toolkit deprojects the integer pixel grid, L110-119; its pyrender demo
    ``render_sequence.py`` L82-87 passes ppx to pyrender unchanged, a half-pixel shift of a
    visualisation, not followed); no distortion model anywhere (640x480 aligned color).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from pipeline.assets.images import read_rgb
from pipeline.clips.windows import frame_windows
from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hoi.adapter import ClipData, HandClip
from pipeline.hoi.adapter import pick_names as _pick
from pipeline.hoi.background import median_reference
from pipeline.hoi.datasets.dexycb_splits import SEQUENCES_PER_SUBJECT, Split, split

YCB_CLASSES = (
    "002_master_chef_can", "003_cracker_box", "004_sugar_box", "005_tomato_soup_can", "006_mustard_bottle",
    "007_tuna_fish_can", "008_pudding_box", "009_gelatin_box", "010_potted_meat_can", "011_banana",
    "019_pitcher_base", "021_bleach_cleanser", "024_bowl", "025_mug", "035_power_drill", "036_wood_block",
    "037_scissors", "040_large_marker", "051_large_clamp", "052_extra_large_clamp", "061_foam_brick",
)  # ycb id i (1-based, as in meta.yml / seg) is YCB_CLASSES[i - 1]
HAND_SEG = 255
BACKGROUND_FRAMES = 9


def read_yaml(path: Path, what: str, error=UserError) -> dict:
    """A YAML mapping; a missing/bad file raises ``UserError`` (driver) or ``StepFailed("load")`` (worker)."""
    def fail(msg):
        return UserError(f"DexYCB layout: {msg}") if error is UserError else StepFailed("load", msg)

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise fail(f"{what} {path} is missing") from None
    except yaml.YAMLError as e:
        raise fail(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise fail(f"{what} {path} is not a YAML mapping")
    return data


def _split(name: str | None) -> Split | None:
    if name is None:
        return None
    try:
        return split(name)
    except ValueError as e:
        raise UserError(f"--split: {e}") from None


def _hand_valid(seq_dir: Path, n_frames: int) -> np.ndarray:
    """bool [n_frames]: a hand is annotated in frame i, read from the sequence's ``pose.npz``
    (``pose_m`` [F, n_hands, 51] float32; a hand is annotated where its 51 numbers are not all
    zero -- dex-ycb-toolkit sequence_loader.py: ``np.any(mano_pose != 0.0, axis=2)``)."""
    path = seq_dir / "pose.npz"
    try:
        with np.load(path) as z:
            pose_m = np.asarray(z["pose_m"])
    except FileNotFoundError:
        raise UserError(f"DexYCB layout: {path} is missing (needed by --min-valid-frames; "
                        "--min-valid-frames 0 skips the check)") from None
    except Exception as e:  # noqa: BLE001
        raise UserError(f"DexYCB layout: {path} has no readable pose_m ({type(e).__name__})") from None
    if pose_m.ndim != 3 or pose_m.shape[0] != n_frames or pose_m.shape[2] != 51:
        raise UserError(f"DexYCB layout: {path} pose_m has shape {pose_m.shape}, expected [{n_frames}, n_hands, 51]")
    return np.any(pose_m != 0.0, axis=2).any(axis=1)


class DexYCBAdapter:
    name = "dexycb"
    fix_left_shapedirs = False  # DexYCB was annotated with MANO_LEFT as shipped (manopth, no #48 fix)

    def __init__(self):
        self.skipped_windows = 0

    # -- driver side ---------------------------------------------------------------------
    def list_items(self, root: Path, selection: dict) -> list[WorkItem]:
        """Items of the selection: ``split`` (official, see ``dexycb_splits``) first, then
        ``subjects``/``sequences``/``cameras`` (names or suffixes) narrow it further; windows with
        fewer than ``min_valid_frames`` of their frames annotated (``pose.npz``) are dropped and
        counted in ``self.skipped_windows``."""
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"--root {root} is not a folder (expected the DexYCB root with calibration/ and models/)")
        for sub in ("calibration", "models"):
            if not (root / sub).is_dir():
                raise UserError(f"--root {root} is not a DexYCB root: {sub}/ is missing")
        subjects = sorted(p.name for p in root.iterdir() if p.is_dir() and "subject" in p.name)
        if not subjects:
            raise UserError(f"--root {root} has no subject folders (like 20200709-subject-01)")
        chosen = _pick(subjects, selection.get("subjects"))
        if not chosen:
            raise UserError(f"--subjects {selection.get('subjects')} matches none of {subjects[:5]}...")
        sp = _split(selection.get("split"))
        if sp is not None:
            chosen = [s for s in chosen if s in sp.subject_names]
            if not chosen:
                raise UserError(f"--split {sp.name} uses subjects {', '.join(sp.subject_names)}; none is under "
                                f"{root} (with the other selection options)")
        T, stride = int(selection["frames"]), int(selection["stride"])
        min_valid = float(selection.get("min_valid_frames") or 0.0)
        items, self.skipped_windows = [], 0
        for subject in chosen:
            seqs = sorted(p.name for p in (root / subject).iterdir() if (p / "meta.yml").is_file())
            if sp is not None and sp.indexes_sequences:
                if len(seqs) != SEQUENCES_PER_SUBJECT:
                    raise UserError(f"--split {sp.name} picks sequences by their index among a subject's "
                                    f"{SEQUENCES_PER_SUBJECT} (as dex-ycb-toolkit does); {subject} has {len(seqs)}")
                seqs = [seqs[i] for i in sp.sequences]
            for seq in _pick(seqs, selection.get("sequences")):
                meta = read_yaml(root / subject / seq / "meta.yml", "meta file")
                n_frames = int(meta.get("num_frames", 0))
                valid = _hand_valid(root / subject / seq, n_frames) if min_valid > 0 else None
                n_all = len(frame_windows(n_frames, T, stride))
                n = len(frame_windows(n_frames, T, stride, valid, min_valid))
                serials = [str(s) for s in meta.get("serials", [])]
                if sp is not None:
                    serials = [c for c in serials if c in sp.serial_names]
                for serial in _pick(serials, selection.get("cameras")):
                    self.skipped_windows += n_all - n
                    if n > 0:
                        key = f"{subject}/{seq}/{serial}"
                        items.append(WorkItem(key=key, locator=key, n_samples=n))
        if not items:
            raise UserError("the selection (split/subjects/sequences/cameras, --frames, --stride, --min-valid-frames) "
                            f"gives no clips ({self.skipped_windows} windows skipped for too few annotated frames)")
        return items

    def windows(self, root: Path, item: WorkItem, selection: dict) -> list[list[int]]:
        subject, seq, _ = item.locator.split("/")
        n = int(self._meta(root, item)["num_frames"])
        min_valid = float(selection.get("min_valid_frames") or 0.0)
        valid = None
        if min_valid > 0:
            try:
                valid = _hand_valid(Path(root) / subject / seq, n)
            except UserError as e:
                raise StepFailed("load", str(e)) from None
        return frame_windows(n, int(selection["frames"]), int(selection["stride"]), valid, min_valid)

    # -- worker side ---------------------------------------------------------------------
    def _meta(self, root: Path, item: WorkItem) -> dict:
        subject, seq, _ = item.locator.split("/")
        meta = read_yaml(Path(root) / subject / seq / "meta.yml", "meta file", StepFailed)
        for k in ("serials", "num_frames", "ycb_ids", "ycb_grasp_ind", "mano_sides", "mano_calib"):
            if k not in meta:
                raise StepFailed("load", f"meta.yml has no {k!r}")
        return meta

    def intrinsics(self, root: Path, serial: str) -> np.ndarray:
        path = Path(root) / "calibration" / "intrinsics" / f"{serial}_640x480.yml"
        c = read_yaml(path, "intrinsics", StepFailed).get("color", {})
        try:
            return np.array([[c["fx"], 0, c["ppx"]], [0, c["fy"], c["ppy"]], [0, 0, 1]], np.float64)
        except KeyError as e:
            raise StepFailed("load", f"{path}: color intrinsics lack {e}") from None

    def _labels(self, folder: Path, i: int) -> dict:
        path = folder / f"labels_{i:06d}.npz"
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise StepFailed("load", f"{path.name} missing in {folder}") from None
        except Exception as e:  # noqa: BLE001
            raise StepFailed("load", f"{path.name}: unreadable ({type(e).__name__})") from None

    def _image(self, folder: Path, i: int) -> np.ndarray:
        return read_rgb(folder / f"color_{i:06d}.jpg")

    def load_clip(self, root: Path, item: WorkItem, frame_ids: list[int], hand_models: dict) -> ClipData:
        root = Path(root)
        subject, seq, serial = item.locator.split("/")
        meta = self._meta(root, item)
        folder = root / subject / seq / serial
        grasp = int(meta["ycb_grasp_ind"])
        ycb_id = int(meta["ycb_ids"][grasp])
        mesh = root / "models" / YCB_CLASSES[ycb_id - 1] / "textured_simple.obj"
        if not mesh.is_file():
            raise StepFailed("load", f"object model {mesh} is missing")
        images, obj_poses, obj_valid = [], [], []
        sides = [str(s) for s in meta["mano_sides"]]
        raw = {s: [] for s in sides}
        joints = {s: np.full((len(frame_ids), 21, 3), np.nan) for s in sides}
        for t, i in enumerate(frame_ids):
            images.append(self._image(folder, i))
            lab = self._labels(folder, i)
            pose_y = np.asarray(lab["pose_y"], np.float64).reshape(-1, 3, 4)
            m = np.eye(4)
            if grasp < len(pose_y):
                m[:3] = pose_y[grasp]
            obj_poses.append(m)
            obj_valid.append(grasp < len(pose_y) and bool(np.abs(pose_y[grasp]).sum() > 0))
            pose_m = np.asarray(lab["pose_m"], np.float64).reshape(-1, 51)
            for h, s in enumerate(sides):
                raw[s].append(pose_m[h] if h < len(pose_m) else np.zeros(51))
            if "joint_3d" in lab:  # [n_hands,21,3] m, camera frame; all -1 = no label
                j3 = np.asarray(lab["joint_3d"], np.float64).reshape(-1, 21, 3)
                for h, s in enumerate(sides):
                    if h < len(j3) and not np.all(j3[h] == -1):
                        joints[s][t] = j3[h]
        hands = {}
        for h, side in enumerate(sides):
            calib = read_yaml(root / "calibration" / f"mano_{meta['mano_calib'][h]}" / "mano.yml", "MANO calibration",
                              StepFailed)
            betas = np.asarray(calib.get("betas", np.zeros(10)), np.float64)[:10]
            p = np.stack(raw[side])
            valid = np.abs(p).sum(axis=1) > 0
            pose = hand_models[side].pca_to_pose(p[:, :3], p[:, 3:48])
            pose[~valid] = 0
            hands[side] = HandClip(pose=pose, betas=betas, trans=p[:, 48:51].copy(), valid=valid)
        return ClipData(key=item.key, frame_ids=list(frame_ids), images=np.stack(images), K=self.intrinsics(root, serial),
                        hands=hands, object_mesh=mesh, object_poses=np.stack(obj_poses), object_valid=np.array(obj_valid),
                        extras={"ycb_id": ycb_id, "ycb_class": YCB_CLASSES[ycb_id - 1]}, joints_label=joints,
                        object_uid=YCB_CLASSES[ycb_id - 1])

    def background(self, root: Path, item: WorkItem) -> np.ndarray:
        root = Path(root)
        subject, seq, serial = item.locator.split("/")
        n = int(self._meta(root, item)["num_frames"])
        folder = root / subject / seq / serial
        ids = np.unique(np.linspace(0, n - 1, min(n, BACKGROUND_FRAMES)).round().astype(int))
        meta = self._meta(root, item)
        moving = [HAND_SEG, int(meta["ycb_ids"][int(meta["ycb_grasp_ind"])])]  # the hands and the grasped object
        imgs = np.stack([self._image(folder, int(i)) for i in ids])
        keep = np.stack([~np.isin(self._labels(folder, int(i))["seg"], moving) for i in ids])
        return median_reference(imgs, keep)

