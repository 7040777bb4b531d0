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
  * cameras, image numbering and files, ``cropped_images/``, the egocentric view's lens: see
    ``arctic_views.py`` (``meta/misc.json`` ``world2cam``/``intris_mat`` for views 1..8,
    ``raw_seqs/<sid>/<seq>.egocam.dist.npy`` for the moving view 0, image number = mocap frame +
    ``ioi_offset``, pixel centres at integers: ``ClipData.K``'s OpenCV convention as is);
  * ``splits_json/protocol_<p>.json`` (``src/arctic/split.py``): ``--split p1-train|p1-val|
    p1-test`` picks the sequences (train = listed train minus val/test), views 1..8;
    ``p2-*`` the same sequences' egocentric view 0; and, as ``glob_fnames`` does, image numbers
    10 .. n_frames-11 (the first/last 10 may be black). Without a split every image is used.
  * optional joint labels: ``processed_seqs/<sid>/<seq>.npy`` -- the output of the toolkit's
    ``scripts_data/process_seqs.py`` (``outputs/processed/seqs``): ``cam_coord`` ``joints.right``
    / ``joints.left`` [F,10,21,3] metres per view (0 ego, 1..8 allocentric, 9 ego distorted),
    21 joints = smplx's MANO order (16 skeleton joints + tips at smplx's vertices 744, 320, 443,
    554, 671 for thumb, index, middle, ring, pinky). Reordered to DexYCB order for
    ``ClipData.joints_label``; the five tips are NaN (manopth takes other tip vertices: 745,
    317, 444/445, 556, 673), so the check compares the 16 skeleton joints.

One item = (subject, sequence, view 0..8), key/locator ``<sid>/<seq>/<view>``. View 0 is the
egocentric camera: its world -> camera pose changes every frame (the hands and the object are put
in each frame's camera) and its frames are undistorted (``arctic_views``); ``ClipData.image_valid``
marks the pixels a frame holds (undistorted corners the lens did not record; the outside of a
``cropped_images`` crop). Frames = mocap frames; a window needs all its images. Both hands are fitted in every frame
(``valid`` all True). ``fix_left_shapedirs`` False: build_mano_aa loads MANO_LEFT as shipped.

Object layer (``ClipData.object_parts``): the whole articulated object, the ``bottom`` and
``top`` parts of ``mesh.obj`` posed per frame; ``object_mesh``/``object_poses`` = the object at
rest (articulation 0), for reference views, points and obj_rot/obj_trans.

Conventions and where they come from (github.com/zc-alexfan/arctic at 49f3eb4, file Lline; the
code made the dataset, so where docs and code disagree the code is followed; pinned by
tests/pipeline/hoi/test_arctic.py and test_arctic_toolkit.py against the toolkit's own formulas):
  * articulation: the vertices whose ``parts.json`` value is 0 turn (``common/object_tensors.py``
    L172, L249, L102-104; the docs, ``docs/data/data_doc.md`` L53, say "1 for top": not followed),
    about the object's -z axis (L73, L292), before the global rotation (L88-99);
  * units: ``mesh.obj`` and ``.object.npy`` translations in mm (object_tensors.py L278,
    ``src/arctic/processing.py`` L215); MANO ``trans`` and ``misc.json`` ``world2cam`` in metres;
  * image numbering: image = mocap frame + ``ioi_offset`` (``src/mesh_loaders/arctic.py`` L105-110,
    ``src/datasets/arctic_dataset.py`` L40); splits keep images 10..n-11 (``src/arctic/split.py`` L83-87);
  * cameras: OpenCV frame, ``world2cam @ [p, 1]`` (``common/transforms.py`` L288-313), pixels
    ``K p / z`` with no half-pixel term (L316-329): principal point at pixel centres = integers;
    allocentric views undistorted pinhole (``processing.py`` L274-280); the egocentric view 0 moves
    (``egocam.dist.npy``, ``src/arctic/preprocess_dataset.py`` L108-119) and is recorded through an
    8-coefficient OpenCV rational lens (``transforms.py`` L82-111, "view 9" = distorted,
    ``processing.py`` L252-262): undistorted here (``arctic_views``, ``pipeline/clips/lens.py``);
  * MANO: ``smplx.MANO(use_pca=False, flat_hand_mean=False)`` (``common/body_models.py`` L128-135),
    called with ``global_orient=rot, hand_pose=pose, betas=shape, transl=trans``
    (``processing.py`` L176-190): ``pose`` is relative to ``hands_mean``, no PCA; one ``shape`` per
    sequence repeated over frames (``preprocess_dataset.py`` L92); MANO_LEFT as smplx loads it
    (``fix_left_shapedirs`` False); joint labels = smplx's 16 joints + tip vertices 744, 320,
    443, 554, 671 (``docs/faq.md`` L20-21: 21 joints after the setup's smplx change).

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

from pipeline.clips.windows import frame_windows
from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.parts import JOINT21_ORDER
from pipeline.hoi.adapter import ClipData, HandClip, ObjectPart
from pipeline.hoi.adapter import pick_names as _pick
from pipeline.hoi.background import coverage_mask, median_reference
from pipeline.hoi.datasets.arctic_object import MM, object_model, object_pose, split_parts, top_rotation
from pipeline.hoi.datasets.arctic_views import (  # noqa: F401  (crop_box, uncrop, image_path: the module's API)
    ALLO_VIEWS,
    EGO_VIEW,
    crop_box,
    fail,
    image_folder,
    image_path,
    processed,
    read_frame,
    read_misc,
    read_npy,
    uncrop,
    view_camera,
)

VIEWS = (EGO_VIEW,) + ALLO_VIEWS   # 0 = egocentric (moving, undistorted here), 1..8 allocentric
SPLIT_VIEWS = {"p1": ALLO_VIEWS, "p1a": ALLO_VIEWS, "p2": (EGO_VIEW,), "p2a": (EGO_VIEW,)}  # split.py L60-75
BACKGROUND_FRAMES = 9
HAND_RADIUS = 0.2                  # m, background mask around each wrist guess (no joints)
HAND_PAD, OBJECT_PAD = 0.03, 0.005  # m, background mask around the hand joints / the object
MANO_WRIST = {"right": np.array([0.0957, 0.0064, 0.0062]), "left": np.array([-0.0957, 0.0064, 0.0062])}
TIP_POSITIONS = (4, 8, 12, 16, 20)  # fingertips in the DexYCB 21-joint order
EDGE_IMAGES = 10                   # split.py: the first/last 10 images "may be entirely black"


@functools.lru_cache(maxsize=4)
def _sequence(folder: str, seq: str) -> tuple[dict, np.ndarray]:
    """(mano dict, object params [F,7] float64) of one raw sequence (cached: windows of an item)."""
    mano = read_npy(Path(folder) / f"{seq}.mano.npy", StepFailed)
    obj = np.asarray(read_npy(Path(folder) / f"{seq}.object.npy", StepFailed), np.float64)
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


def _split(root: Path, name: str | None) -> tuple[set[str], tuple[int, ...]] | None:
    """(sequences "s01/box_grab_01", views) of an official split ``p1-train`` etc. (src/arctic/split.py:
    train = every listed sequence not in val/test, L47; protocol 1 = views 1..8, protocol 2 = the
    egocentric view 0, L60-75)."""
    if name is None:
        return None
    proto, _, part = name.replace("_", "-").partition("-")
    if proto not in SPLIT_VIEWS or part not in ("train", "val", "test"):
        raise UserError(f"--split must be p1-train, p1-val, p1-test, p2-train, p2-val, p2-test (or p1a-*, p2a-*), "
                        f"got {name!r}")
    path = root / "splits_json" / f"protocol_{proto}.json"
    try:
        js = json.loads(path.read_text())
        val, test = list(js["val"]), list(js["test"])
        seqs = {"train": [s for s in js["train"] + val + test if s not in set(val + test)], "val": val,
                "test": test}[part]
    except FileNotFoundError:
        raise UserError(f"--split {name}: {path} is missing") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"--split {name}: {path} is not a train/val/test JSON ({type(e).__name__})") from None
    return set(seqs), SPLIT_VIEWS[proto]


class ArcticAdapter:
    name = "arctic"
    fix_left_shapedirs = False  # build_mano_aa (body_models.py L128-135): smplx.MANO loads MANO_LEFT as shipped

    def __init__(self):
        self.skipped_windows = 0

    # -- driver side ---------------------------------------------------------------------
    def list_items(self, root: Path, selection: dict) -> list[WorkItem]:
        """Items of the selection: ``split`` first (its sequences and views), then ``subjects``
        (s01..), ``sequences`` (box_grab_01 or a suffix), ``cameras`` (views "0".."8") narrow it."""
        root = Path(root)
        if not (root / "raw_seqs").is_dir() or not (root / "meta").is_dir():
            raise UserError(f"--root {root} is not an ARCTIC root (arctic_data/data with raw_seqs/, meta/, images/)")
        misc = read_misc(str(root))
        cams = selection.get("cameras")
        split = _split(root, selection.get("split"))
        in_split, split_views = split if split is not None else (None, VIEWS)
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
                views = [str(v) for v in split_views if image_folder(root, sid, seq, v)]
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
        n = len(read_npy(root / "raw_seqs" / sid / f"{seq}.object.npy", error))
        try:
            off = int(read_misc(str(root))[sid]["ioi_offset"])
        except (KeyError, TypeError, ValueError):
            raise fail(f"meta/misc.json has no integer ioi_offset for {sid}", error) from None
        source = image_folder(root, sid, seq, view)
        if source == "cropped_images" and view != EGO_VIEW and \
                not (root / "processed_seqs" / sid / f"{seq}.npy").is_file():
            raise fail(f"{sid}/{seq} view {view} has only cropped_images: their crop boxes are in "
                       f"processed_seqs/{sid}/{seq}.npy (scripts_data/process_seqs.py), which is missing", error)
        if view == EGO_VIEW and not (root / "raw_seqs" / sid / f"{seq}.egocam.dist.npy").is_file():
            raise fail(f"{sid}/{seq} view 0 (egocentric) needs raw_seqs/{sid}/{seq}.egocam.dist.npy, which is "
                       "missing (or leave out camera 0: --cameras 1 ... 8)", error)
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

    def load_clip(self, root: Path, item: WorkItem, frame_ids: list[int], hand_models: dict) -> ClipData:
        from pipeline.hands.model import transform_mano

        root = Path(root)
        sid, seq, view = item.locator.split("/")
        mano, obj = self._sequence(root, sid, seq)
        cam = view_camera(root, sid, seq, int(view), len(obj))
        ids = np.asarray(frame_ids)
        world2cam = cam.world2cam[ids]                                  # [T,4,4]: the ego camera moves
        frames = [read_frame(root, sid, seq, int(view), int(f), cam) for f in ids]
        images, seen = np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])
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
        return ClipData(key=item.key, frame_ids=[int(i) for i in ids], images=images, K=cam.K, hands=hands,
                        object_mesh=tex if tex.is_file() else folder / "mesh.obj", object_poses=file_to_cam,
                        object_valid=np.ones(len(ids), bool), object_uid=folder.name,
                        extras={"object": folder.name, "articulation": arti}, object_parts=parts,
                        joints_label=self._joints(root, sid, seq, int(view), ids),
                        image_valid=None if seen.all() else seen)

    def _joints(self, root: Path, sid: str, seq: str, view: int, ids: np.ndarray) -> dict | None:
        """side -> [T,21,3] DexYCB-ordered labels from processed_seqs (view 0: the undistorted ego
        camera, processing.py L242-244; tips NaN); None without the file."""
        path = root / "processed_seqs" / sid / f"{seq}.npy"
        if not path.is_file():
            return None
        out = {}
        joints = processed(str(path))
        for side in ("left", "right"):
            j = np.asarray(joints[side][ids, view], np.float64)[:, list(JOINT21_ORDER)]
            j[:, list(TIP_POSITIONS)] = np.nan
            out[side] = j
        return out

    def background(self, root: Path, item: WorkItem) -> np.ndarray:
        """Masked median of ``BACKGROUND_FRAMES`` frames (module doc); the moving egocentric camera
        sees a different picture each frame, so its reference is the one candidate frame with the
        least hand/object cover, covered pixels copying the nearest uncovered one."""
        root = Path(root)
        sid, seq, view = item.locator.split("/")
        mano, obj = self._sequence(root, sid, seq)
        cam = view_camera(root, sid, seq, int(view), len(obj))
        (W, H), K = cam.size, cam.K
        source = image_folder(root, sid, seq, int(view)) or "images"
        have = [f for f in range(len(obj)) if image_path(root, sid, seq, int(view), f, cam.ioi_offset, source).is_file()]
        if not have:
            raise StepFailed("load", f"no images for {item.key}")
        pick = np.unique(np.linspace(0, len(have) - 1, min(len(have), BACKGROUND_FRAMES)).round().astype(int))
        ids = [have[i] for i in pick]
        imgs, inside = (np.stack(x) for x in zip(*(read_frame(root, sid, seq, int(view), f, cam) for f in ids),
                                                  strict=True))
        v, _, top = object_model(str(root / "meta" / "object_vtemplates" / seq.split("_")[0]))
        P, arti = object_pose(obj[ids])
        labels = root / "processed_seqs" / sid / f"{seq}.npy"
        labels = processed(str(labels)) if labels.is_file() else None
        keep = []
        for k, fr in enumerate(ids):
            w2c = cam.world2cam[fr]
            rest = w2c @ P[k]
            groups = [(v[sel] @ M[:3, :3].T + M[:3, 3], OBJECT_PAD)
                      for sel, M in ((~top, rest), (top, rest @ top_rotation(arti[k])))]
            for side in ("left", "right"):
                if labels is not None:  # the hand's own joints (processed_seqs), padded
                    groups.append((np.asarray(labels[side][fr, int(view)], np.float64), HAND_PAD))
                    continue
                t = np.asarray(mano[side]["trans"], np.float64)[fr]
                for c in (t, t + MANO_WRIST[side]):  # both wrist guesses, a hand's reach around each
                    groups.append(((w2c[:3, :3] @ c + w2c[:3, 3])[None], HAND_RADIUS))
            keep.append(inside[k] & ~coverage_mask(groups, K, W, H))
        keep = np.stack(keep)
        if int(view) == EGO_VIEW:
            best = int(np.argmax(keep.reshape(len(keep), -1).sum(axis=1)))
            imgs, keep = imgs[best:best + 1], keep[best:best + 1]
        return median_reference(imgs, keep)
