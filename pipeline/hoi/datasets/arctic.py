"""ARCTIC adapter: reads the official on-disk layout as the toolkit (github.com/zc-alexfan/arctic) reads it.

``--root`` is ``arctic_data/data`` (the folder holding ``raw_seqs/``, ``meta/``, ``images/``):
  * ``raw_seqs/<sid>/<seq>.mano.npy``: pickled dict per side ``right``/``left``: ``rot`` [F,3]
    global axis-angle, ``pose`` [F,45] axis-angle *relative to hands_mean* (the toolkit's
    ``common/body_models.py build_mano_aa``: ``smplx.MANO(use_pca=False, flat_hand_mean=False)``
    called with ``global_orient=rot, hand_pose=pose, betas=shape, transl=trans`` in
    ``src/arctic/processing.py forward_gt_world``), ``trans`` [F,3] metres, ``shape`` [10]
    (one per sequence: ``preprocess_dataset.construct_loader`` repeats it over frames);
    world frame = the mocap world. Absolute pose here = ``rot ++ (pose + hands_mean)``.
  * ``raw_seqs/<sid>/<seq>.object.npy`` [F,7]: articulation (radians), global axis-angle (3),
    translation (3) in **millimetres** (``processing.forward_gt_world`` divides by 1000).
  * ``meta/object_vtemplates/<obj>/mesh.obj`` (vertices in **millimetres**; ``object_tensors.py
    construct_obj_tensors`` divides by 1000) + ``parts.json`` (per vertex; the toolkit's code
    articulates the vertices whose value is **0**, its docs say "1 for top": the code is followed,
    see ``arctic_object.py``); ``<obj>`` = the sequence name up to the first ``_``. The toolkit's
    object model (``common/object_tensors.py ObjectTensors.forward_7d_batch``): the articulated
    ("top") vertices turned by ``axis_angle(z_axis * arti)`` with ``z_axis = [0, 0, -1]`` -- i.e.
    about **-z** of the object frame, through its origin -- then every vertex by the global
    rotation, plus the translation. ``mesh_tex.obj`` (textured, same canonical space) is used for reference views
    and points when present (millimetres; the unit rides in ``object_poses`` as a uniform scale), else ``mesh.obj``.
  * ``meta/misc.json`` per subject: ``world2cam`` [8,4,4] (metres) and ``intris_mat`` [8,3,3]
    for the allocentric views 1..8 (index ``view - 1``), ``image_size`` [9,2] (width, height;
    index 0 = egocentric), ``ioi_offset``: image number = mocap frame + ioi_offset
    (``src/mesh_loaders/arctic.py construct_meshes``; ``src/datasets/arctic_dataset.py``:
    ``vidx = image_idx - ioi_offset``).
  * ``images/<sid>/<seq>/<view>/<image:05d>.jpg``: full-resolution images. Allocentric views are
    projected with ``intris_mat`` alone (``processing.forward_project2d``), i.e. undistorted
    pinhole; pixel centres at integer coordinates (no +0.5 anywhere in the toolkit), which is
    ``ClipData.K``'s OpenCV convention, taken as is. Without ``images/`` for a view,
    ``cropped_images/`` (same names) are read: ``scripts_data/crop_images.py`` cut each frame to
    the square ``bbox`` of ``processed_seqs`` (cx, cy, scale x 1.5 x 200 px, PIL crop) and resized
    it to 1000 x 1000; each crop is put back in its full frame (black outside, ``K`` unchanged).
  * ``splits_json/protocol_<p>.json`` (``src/arctic/split.py``): ``--split p1-train|p1-val|
    p1-test`` picks the sequences (train = listed train minus val/test), views 1..8 and, as
    ``glob_fnames`` does, image numbers 10 .. n_frames-11 (the first/last 10 may be black);
    ``p2-*`` (egocentric view 0) is not supported yet. Without a split every image is used.
  * optional joint labels: ``processed_seqs/<sid>/<seq>.npy`` -- the output of the toolkit's
    ``scripts_data/process_seqs.py`` (``outputs/processed/seqs``): ``cam_coord`` ``joints.right``
    / ``joints.left`` [F,10,21,3] metres per view (0 ego, 1..8 allocentric, 9 ego distorted),
    21 joints = smplx's MANO order (16 skeleton joints + tips at smplx's vertices 744, 320, 443,
    554, 671 for thumb, index, middle, ring, pinky). Reordered to DexYCB order for
    ``ClipData.joints_label``; the five tips are NaN (manopth takes other tip vertices: 745,
    317, 444/445, 556, 673), so the check compares the 16 skeleton joints.

One item = (subject, sequence, allocentric view 1..8), key/locator ``<sid>/<seq>/<view>``. Not
supported yet: the egocentric view 0 (moving ``egocam.dist.npy`` camera, distorted images).
Frames = mocap frames; a window needs all its images. Both hands are fitted in every frame
(``valid`` all True). ``fix_left_shapedirs`` False: build_mano_aa loads MANO_LEFT as shipped.

Object layer (``ClipData.object_parts``): the whole articulated object, the ``bottom`` and
``top`` parts of ``mesh.obj`` posed per frame; ``object_mesh``/``object_poses`` = the object at
rest (articulation 0), for reference views, points and obj_rot/obj_trans.

Background: per-pixel median over ``BACKGROUND_FRAMES`` frames spread over the sequence, at each
pixel only frames where neither the object (hull of each projected part) nor a hand covers it
(the hull of its ``processed_seqs`` joints grown by ``HAND_PAD``; without them, discs of
``HAND_RADIUS`` around both wrist guesses ``trans`` and ``trans`` + MANO's rest wrist); pixels
covered in all copy the nearest uncovered one. ARCTIC ships no segmentation (its undocumented
``images/backgrounds`` archive is not read); the subject's body stays, as in the targets.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.engine.shard_task import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.parts import JOINT21_ORDER
from pipeline.hoi.adapter import ClipData, HandClip, ObjectPart
from pipeline.hoi.adapter import pick_names as _pick
from pipeline.hoi.background import coverage_mask, median_reference
from pipeline.hoi.datasets.arctic_object import MM, object_model, object_pose, split_parts, top_rotation
from pipeline.images import read_rgb
from pipeline.windows import frame_windows

VIEWS = tuple(range(1, 9))        # allocentric views (0 = egocentric, not supported)
BACKGROUND_FRAMES = 9
HAND_RADIUS = 0.2                  # m, background mask around each wrist guess (no joints)
HAND_PAD, OBJECT_PAD = 0.03, 0.005  # m, background mask around the hand joints / the object
MANO_WRIST = {"right": np.array([0.0957, 0.0064, 0.0062]), "left": np.array([-0.0957, 0.0064, 0.0062])}
TIP_POSITIONS = (4, 8, 12, 16, 20)  # fingertips in the DexYCB 21-joint order
EDGE_IMAGES = 10                   # split.py: the first/last 10 images "may be entirely black"
CROP_PX = 1000                     # crop_images.py: allocentric crops are resized to 1000 x 1000


def _fail(msg: str, error=UserError):
    return UserError(f"ARCTIC layout: {msg}") if error is UserError else StepFailed("load", msg)


def _npy(path: Path, error=UserError):
    """A .npy file (pickled dicts allowed, as the toolkit writes them)."""
    try:
        data = np.load(path, allow_pickle=True)
    except FileNotFoundError:
        raise _fail(f"{path} is missing", error) from None
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{path} is unreadable ({type(e).__name__})", error) from None
    return data.item() if data.dtype == object and data.shape == () else data


@functools.lru_cache(maxsize=4)
def read_misc(root: str) -> dict:
    path = Path(root) / "meta" / "misc.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise _fail(f"{path} is missing") from None
    except ValueError as e:
        raise _fail(f"{path} is not valid JSON ({e})") from None


def camera(misc: dict, sid: str, view: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int], int]:
    """(world2cam [4,4] m, K [3,3], (width, height), ioi_offset) of allocentric ``view`` (1..8)."""
    try:
        m = misc[sid]
        return (np.asarray(m["world2cam"], np.float64)[view - 1], np.asarray(m["intris_mat"], np.float64)[view - 1],
                tuple(int(x) for x in m["image_size"][view]), int(m["ioi_offset"]))
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise StepFailed("load", f"meta/misc.json has no usable camera {view} for {sid} ({type(e).__name__}: {e})") from None


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


@functools.lru_cache(maxsize=4)
def _sequence(folder: str, seq: str) -> tuple[dict, np.ndarray]:
    """(mano dict, object params [F,7] float64) of one raw sequence (cached: windows of an item)."""
    mano = _npy(Path(folder) / f"{seq}.mano.npy", StepFailed)
    obj = np.asarray(_npy(Path(folder) / f"{seq}.object.npy", StepFailed), np.float64)
    if not isinstance(mano, dict) or not {"left", "right"} <= set(mano):
        raise StepFailed("load", f"{seq}.mano.npy is not a dict with 'right' and 'left'")
    if obj.ndim != 2 or obj.shape[1] != 7:
        raise StepFailed("load", f"{seq}.object.npy has shape {obj.shape}, expected [F, 7]")
    for side in ("left", "right"):
        for k in ("rot", "pose", "trans", "shape"):
            if k not in mano[side]:
                raise StepFailed("load", f"{seq}.mano.npy: {side} hand has no {k!r}")
        if len(mano[side]["rot"]) != len(obj):
            raise StepFailed("load", f"{seq}: {len(mano[side]['rot'])} MANO frames but {len(obj)} object frames")
    return mano, obj


@functools.lru_cache(maxsize=2)
def _processed(path: str) -> dict[str, np.ndarray]:
    """A processed sequence: side -> [F,10,21,3] float32 camera-frame joints; "bbox" [F,9,3] (cached)."""
    data = _npy(Path(path), StepFailed)
    cam = data.get("cam_coord", {})
    try:
        out = {s: np.asarray(cam[f"joints.{s}"], np.float32) for s in ("left", "right")}
    except KeyError as e:
        raise StepFailed("load", f"{path}: cam_coord has no {e}") from None
    if "bbox" in data:
        out["bbox"] = np.asarray(data["bbox"], np.float64)
    return out


def _split(root: Path, name: str | None) -> set[str] | None:
    """Sequences ("s01/box_grab_01") of an official split ``p1-train`` etc. (src/arctic/split.py)."""
    if name is None:
        return None
    proto, _, part = name.replace("_", "-").partition("-")
    if proto not in ("p1", "p1a", "p2", "p2a") or part not in ("train", "val", "test"):
        raise UserError(f"--split must be p1-train, p1-val, p1-test (or p1a-*), got {name!r}")
    if proto.startswith("p2"):
        raise UserError(f"--split {name}: protocol 2 uses the egocentric view 0, which is not supported yet")
    path = root / "splits_json" / f"protocol_{proto}.json"
    try:
        js = json.loads(path.read_text())
        val, test = list(js["val"]), list(js["test"])
        seqs = {"train": [s for s in js["train"] if s not in set(val + test)], "val": val, "test": test}[part]
    except FileNotFoundError:
        raise UserError(f"--split {name}: {path} is missing") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"--split {name}: {path} is not a train/val/test JSON ({type(e).__name__})") from None
    return set(seqs)


class ArcticAdapter:
    name = "arctic"
    fix_left_shapedirs = False  # build_mano_aa: smplx.MANO loads MANO_LEFT as shipped

    def __init__(self):
        self.skipped_windows = 0

    # -- driver side ---------------------------------------------------------------------
    def list_items(self, root: Path, selection: dict) -> list[WorkItem]:
        """Items of the selection: ``split`` first, then ``subjects`` (s01..), ``sequences``
        (box_grab_01 or a suffix), ``cameras`` (views "1".."8") narrow it."""
        root = Path(root)
        if not (root / "raw_seqs").is_dir() or not (root / "meta").is_dir():
            raise UserError(f"--root {root} is not an ARCTIC root (arctic_data/data with raw_seqs/, meta/, images/)")
        misc = read_misc(str(root))
        cams = selection.get("cameras")
        if cams and any(str(c) == "0" for c in cams):
            raise UserError("--cameras 0: the egocentric view is not supported yet (allocentric views 1..8)")
        in_split = _split(root, selection.get("split"))
        subjects = _pick(sorted(p.name for p in (root / "raw_seqs").iterdir() if p.is_dir()), selection.get("subjects"))
        if not subjects:
            raise UserError(f"--subjects {selection.get('subjects')} matches no folder of {root / 'raw_seqs'}")
        T, stride = int(selection["frames"]), int(selection["stride"])
        items, self.skipped_windows = [], 0
        for sid in subjects:
            if sid not in misc:
                raise UserError(f"ARCTIC layout: {root / 'meta/misc.json'} has no entry for subject {sid}")
            seqs = sorted(p.name[: -len(".mano.npy")] for p in (root / "raw_seqs" / sid).glob("*.mano.npy"))
            if in_split is not None:
                seqs = [s for s in seqs if f"{sid}/{s}" in in_split]
            for seq in _pick(seqs, selection.get("sequences")):
                views = [str(v) for v in VIEWS if image_folder(root, sid, seq, v)]
                for view in _pick(views, cams):
                    n = len(self._windows(root, sid, seq, int(view), T, stride, in_split is not None, UserError))
                    if n:
                        key = f"{sid}/{seq}/{view}"
                        items.append(WorkItem(key=key, locator=key, n_samples=n))
        if not items:
            raise UserError(f"the selection (split/subjects/sequences/cameras, --frames {T}, --stride {stride}) gives "
                            f"no clips under {root} (a window needs raw_seqs and every image of its frames)")
        return items

    def _windows(self, root: Path, sid: str, seq: str, view: int, T: int, stride: int, in_split: bool,
                 error=StepFailed) -> list[list[int]]:
        """Windows over the mocap frames whose images all exist; with a split, only image numbers
        in [EDGE_IMAGES, n_frames - EDGE_IMAGES), as split.py glob_fnames takes them."""
        n = len(_npy(root / "raw_seqs" / sid / f"{seq}.object.npy", error))
        try:
            off = int(read_misc(str(root))[sid]["ioi_offset"])
        except (KeyError, TypeError, ValueError):
            raise _fail(f"meta/misc.json has no integer ioi_offset for {sid}", error) from None
        source = image_folder(root, sid, seq, view)
        if source == "cropped_images" and not (root / "processed_seqs" / sid / f"{seq}.npy").is_file():
            raise _fail(f"{sid}/{seq} view {view} has only cropped_images: their crop boxes are in "
                        f"processed_seqs/{sid}/{seq}.npy (scripts_data/process_seqs.py), which is missing", error)
        folder = root / str(source) / sid / seq / str(view)
        have = {p.name for p in folder.glob("*.jpg")} if source else set()
        lo, hi = (EDGE_IMAGES, n - EDGE_IMAGES) if in_split else (-np.inf, np.inf)
        ok = np.array([f"{f + off:05d}.jpg" in have and lo <= f + off < hi for f in range(n)], bool)
        return [w for w in frame_windows(n, T, stride) if ok[w].all()]

    def windows(self, root: Path, item: WorkItem, selection: dict) -> list[list[int]]:
        sid, seq, view = item.locator.split("/")
        return self._windows(Path(root), sid, seq, int(view), int(selection["frames"]), int(selection["stride"]),
                             selection.get("split") is not None)

    # -- worker side ---------------------------------------------------------------------
    def _sequence(self, root: Path, sid: str, seq: str) -> tuple[dict, np.ndarray]:
        return _sequence(str(root / "raw_seqs" / sid), seq)

    def _frame(self, root: Path, sid: str, seq: str, view: int, f: int, off: int, W: int, H: int):
        """(uint8 [H,W,3] full frame, inside bool [H,W]: pixels the file covers) of mocap frame f."""
        source = image_folder(root, sid, seq, view)
        img = self._image(image_path(root, sid, seq, view, f, off, source or "images"))
        if source != "cropped_images":
            if img.shape[:2] != (H, W):
                raise StepFailed("load", f"images are {img.shape[1]}x{img.shape[0]}, misc.json says {W}x{H}")
            return img, np.ones((H, W), bool)
        bbox = _processed(str(root / "processed_seqs" / sid / f"{seq}.npy")).get("bbox")
        if bbox is None:
            raise StepFailed("load", f"processed_seqs/{sid}/{seq}.npy has no bbox (needed by cropped_images)")
        return uncrop(img, crop_box(bbox[f, view]), W, H)

    def _image(self, path: Path) -> np.ndarray:
        return read_rgb(path)

    def load_clip(self, root: Path, item: WorkItem, frame_ids: list[int], hand_models: dict) -> ClipData:
        from pipeline.hands.model import transform_mano

        root = Path(root)
        sid, seq, view = item.locator.split("/")
        world2cam, K, (W, H), off = camera(read_misc(str(root)), sid, int(view))
        mano, obj = self._sequence(root, sid, seq)
        ids = np.asarray(frame_ids)
        images = np.stack([self._frame(root, sid, seq, int(view), int(f), off, W, H)[0] for f in ids])
        hands = {}
        for side in ("left", "right"):
            d, model = mano[side], hand_models[side]
            betas = np.asarray(d["shape"], np.float64).reshape(-1, 10)[0]
            pose = np.concatenate([np.asarray(d["rot"], np.float64)[ids],
                                   np.asarray(d["pose"], np.float64)[ids] + model.hands_mean], axis=1)
            pose, trans = transform_mano(model, pose, np.asarray(d["trans"], np.float64)[ids], betas, world2cam)
            hands[side] = HandClip(pose=pose, betas=betas, trans=trans, valid=np.ones(len(ids), bool))
        P, arti = object_pose(obj[ids])
        rest = world2cam @ P                                             # object -> camera at rest
        folder = root / "meta" / "object_vtemplates" / seq.split("_")[0]
        v, f, top = object_model(str(folder))
        parts = []
        for name, (pv, pf) in split_parts(v, f, top).items():
            poses = rest if name == "bottom" else np.stack([R @ top_rotation(a) for R, a in zip(rest, arti, strict=True)])
            parts.append(ObjectPart(name=name, vertices=pv, faces=pf, poses=poses))
        tex = folder / "mesh_tex.obj"
        # the template file is in millimetres: its poses carry the unit as a uniform scale
        # (adapter.py: ``object_poses`` may scale; ``obj_scale`` is then metres per canonical unit)
        file_to_cam = rest @ np.diag([1 / MM, 1 / MM, 1 / MM, 1.0])
        return ClipData(key=item.key, frame_ids=[int(i) for i in ids], images=images, K=K, hands=hands,
                        object_mesh=tex if tex.is_file() else folder / "mesh.obj", object_poses=file_to_cam,
                        object_valid=np.ones(len(ids), bool), object_uid=folder.name,
                        extras={"object": folder.name, "articulation": arti}, object_parts=parts,
                        joints_label=self._joints(root, sid, seq, int(view), ids))

    def _joints(self, root: Path, sid: str, seq: str, view: int, ids: np.ndarray) -> dict | None:
        """side -> [T,21,3] DexYCB-ordered labels from processed_seqs (tips NaN); None without the file."""
        path = root / "processed_seqs" / sid / f"{seq}.npy"
        if not path.is_file():
            return None
        out = {}
        joints = _processed(str(path))
        for side in ("left", "right"):
            j = np.asarray(joints[side][ids, view], np.float64)[:, list(JOINT21_ORDER)]
            j[:, list(TIP_POSITIONS)] = np.nan
            out[side] = j
        return out

    def background(self, root: Path, item: WorkItem) -> np.ndarray:
        root = Path(root)
        sid, seq, view = item.locator.split("/")
        world2cam, K, (W, H), off = camera(read_misc(str(root)), sid, int(view))
        mano, obj = self._sequence(root, sid, seq)
        source = image_folder(root, sid, seq, int(view)) or "images"
        have = [f for f in range(len(obj)) if image_path(root, sid, seq, int(view), f, off, source).is_file()]
        if not have:
            raise StepFailed("load", f"no images for {item.key}")
        pick = np.unique(np.linspace(0, len(have) - 1, min(len(have), BACKGROUND_FRAMES)).round().astype(int))
        ids = [have[i] for i in pick]
        imgs, inside = (np.stack(x) for x in zip(*(self._frame(root, sid, seq, int(view), f, off, W, H) for f in ids),
                                                  strict=True))
        v, _, top = object_model(str(root / "meta" / "object_vtemplates" / seq.split("_")[0]))
        P, arti = object_pose(obj[ids])
        labels = root / "processed_seqs" / sid / f"{seq}.npy"
        labels = _processed(str(labels)) if labels.is_file() else None
        keep = []
        for k, fr in enumerate(ids):
            rest = world2cam @ P[k]
            groups = [(v[sel] @ M[:3, :3].T + M[:3, 3], OBJECT_PAD)
                      for sel, M in ((~top, rest), (top, rest @ top_rotation(arti[k])))]
            for side in ("left", "right"):
                if labels is not None:  # the hand's own joints (processed_seqs), padded
                    groups.append((np.asarray(labels[side][fr, int(view)], np.float64), HAND_PAD))
                    continue
                t = np.asarray(mano[side]["trans"], np.float64)[fr]
                for c in (t, t + MANO_WRIST[side]):  # both wrist guesses, a hand's reach around each
                    groups.append(((world2cam[:3, :3] @ c + world2cam[:3, 3])[None], HAND_RADIUS))
            keep.append(inside[k] & ~coverage_mask(groups, K, W, H))
        keep = np.stack(keep)
        return median_reference(imgs, keep)
