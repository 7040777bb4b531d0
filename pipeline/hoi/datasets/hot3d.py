"""HOT3D adapter (Banerjee et al., CVPR 2025), its HOT3D-Clips release: egocentric bimanual
manipulation seen by a moving headset (Aria: one RGB and two grey cameras; Quest 3: two grey).

Read exactly as the official code reads it -- facebookresearch/hot3d @ e814021
(``hot3d/clips/clip_util.py``, ``hot3d/clips/vis_clips.py``, ``hot3d/clips/README.md``,
``hot3d/clips/bop_format_converters/hot3d_clips_to_bop_scenewise.py``) and the toolkit it uses,
facebookresearch/hand_tracking_toolkit @ ffb20d0 (``camera.py``, ``camera_distortion.py``,
``dataset.py``, ``hand_models/mano_hand_model.py``, ``math_utils.py``)::

    <root>/train_aria/clip-<id:06d>.tar, train_quest3/..., test_aria/..., test_quest3/...
    <root>/object_models/obj_<bop id:06d>.glb     (or object_models_eval/: simplified, untextured)

    clip-<id>.tar: <frame:06d>.image_<stream>.jpg   (Aria: 214-1 RGB, 1201-1 / 1201-2 grey)
                   <frame:06d>.cameras.json   {stream: {calibration: {...}, T_world_from_camera}}
                   <frame:06d>.hands.json     {left|right: {mano_pose: {thetas, wrist_xform}, umetrack_pose}}
                   <frame:06d>.objects.json   {bop id: [{object_bop_id, T_world_from_object, ...}]}
                   <frame:06d>.info.json, <frame:06d>.hand_crops.json, __hand_shapes.json__ {mano: [10], umetrack}

Conventions, each pinned in ``tests/pipeline/hoi/test_hot3d.py`` from the official formulas:
  * frames: ``<frame:06d>`` (``vis_clips.py`` L69), the count is the largest ``.info.json``
    number + 1 (``clip_util.py`` L38-53); 30 fps, 150 frames a clip;
  * poses: ``{quaternion_wxyz, translation_xyz}`` -> [4,4] (``clip_util.py se3_from_dict``
    L308-321, ``math_utils.quat_trans_to_matrix``: w first); ``T_world_from_camera`` per frame
    and stream (the headset moves: every frame has its own camera pose), ``T_world_from_object``
    maps the model (``object_models/obj_<bop id:06d>.glb``, ``vis_clips.py`` L262-271) to the world
    (L129-137); metres everywhere (``subdivide_mesh``'s max edge "in meters", L253-266; the BOP
    converter ``hot3d_models_to_bop.py`` L64 multiplies the GLB vertices by 1000 to get BOP's mm);
  * cameras: ``FISHEYE624`` fisheye images (``hot3d_camera``); each frame is undistorted to the
    pinhole camera with the stream's own size, focal and centre (``convert_to_pinhole_camera``,
    ``warp_image``: what ``vis_clips.py --undistort`` does, L109-117) -- the pinhole K is the
    item's first frame's, so every window shares it -- and turned upright, 90 degrees clockwise
    (``np.rot90(k=3)``, L184-185). The distorted fisheye images themselves are never used;
  * MANO (``mano_hand_model.py`` L101-127, L146-165): ``smplx.create(..., "mano", use_pca=True,
    num_pca_comps=15)`` with smplx's default ``flat_hand_mean=False``: ``thetas`` are 15 PCA
    coefficients, finger pose = ``thetas @ hands_components[:15] + hands_mean``
    (smplx ``MANO.forward``); ``wrist_xform`` = global axis-angle (3) + smplx ``transl`` (3),
    world frame, metres; one ``betas`` [10] for both hands (``__hand_shapes.json__`` ``mano``);
    MANO_LEFT's shapedirs are fixed (x negated when they equal the right hand's, smplx issue
    48, L117-127): ``fix_left_shapedirs`` True;
  * a hand is annotated in a frame when ``hands.json`` holds it with ``mano_pose`` -- the code
    reads ``mano_pose`` only where ``umetrack_pose`` is present (``dataset.py decode_hand_pose``
    L142-149), and so does this adapter -- and the clip has ``__hand_shapes.json__`` (no shape,
    no mesh: ``vis_clips.py`` L87). The README's ``umetrack_pose.wrist_xform`` (4x4) is
    ``T_world_from_wrist`` in the code (L131-139); UmeTrack is not read here;
  * HOT3D ships no 3D joint labels (no joint check).

Object layer: the objects that move during the clip (``scene_objects``); the largest is the
primary one. Selection: ``--split train`` (``train_aria`` + ``train_quest3``; the default): test
clips ship no ``hands.json``/``objects.json`` (README) and are refused; ``--sequences`` clip
names (``clip-001849``, ``1849``, ``train_aria/clip-001849``); ``--cameras`` stream ids (default:
the RGB streams, whose calibration label holds "rgb", as ``dataset.py`` L290 decides; Quest 3
clips have none, so they need ``--cameras 1201-1``; grey frames become 3 equal channels).
``--subjects`` is refused (no official code reads participants). One item = (clip, stream);
key ``<split folder>/clip-<id>/<stream>``. Background: every view moves, so each window gets its
own reference (``ClipData.background``); ``background()`` (used by ``export-sequence``) is the
masked median over frames spread over the clip (blurred by the motion).
Not read: the full VRS-based HOT3D (needs projectaria_tools), UmeTrack hands, masks, 2D boxes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pipeline.assets.mesh_io import read_mesh_arrays
from pipeline.clips.windows import frame_windows
from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.model import transform_mano
from pipeline.hoi.adapter import ClipData, HandClip, ObjectPart
from pipeline.hoi.background import coverage_mask, median_reference, window_reference
from pipeline.hoi.datasets.hot3d_camera import R_UPRIGHT, pinhole_K, undistort_upright, upright_K
from pipeline.hoi.datasets.hot3d_clip import N_PCA, Clip, open_clip
from pipeline.hoi.datasets.scene_objects import box_corners, choose_objects

SPLITS = {"train": ("train_aria", "train_quest3"), "test": ("test_aria", "test_quest3")}   # bop converter L52-63
MODEL_DIRS = ("object_models", "object_models_eval")
BACKGROUND_FRAMES = 9
HAND_RADIUS_M = 0.2         # background(): discs around both wrist guesses (no hand model there)
MANO_WRIST = {"right": np.array([0.0957, 0.0064, 0.0062]), "left": np.array([-0.0957, 0.0064, 0.0062])}


def mano_pose(thetas: np.ndarray, wrist_xform: np.ndarray, model) -> tuple[np.ndarray, np.ndarray]:
    """HOT3D's MANO parameters [N,15] PCA + [N,6] wrist -> (absolute pose [N,48], smplx trans [N,3])
    for ``model`` (``use_pca=True, num_pca_comps=15, flat_hand_mean=False``)."""
    fingers = np.asarray(thetas, np.float64) @ model.hands_components[:N_PCA] + model.hands_mean
    wx = np.asarray(wrist_xform, np.float64)
    return np.concatenate([wx[:, :3], fingers], axis=1), wx[:, 3:].copy()


@functools.lru_cache(maxsize=16)
def read_model(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V,3] m, faces [F,3]) of an object model, the GLB's nodes applied."""
    return read_mesh_arrays(path)


def world_to_upright(T_world_from_camera: np.ndarray) -> np.ndarray:
    """[4,4] world -> the upright (turned) camera of a stream (OpenCV axes)."""
    R = np.eye(4)
    R[:3, :3] = R_UPRIGHT
    return R @ np.linalg.inv(T_world_from_camera)


class Hot3DAdapter:
    name = "hot3d"
    fix_left_shapedirs = True       # mano_hand_model.py L117-127 negates MANO_LEFT's shapedirs x

    def __init__(self):
        self.skipped_windows = 0

    # -- driver side ---------------------------------------------------------------------
    def _split_dirs(self, root: Path, split: str | None) -> list[Path]:
        if split not in (None, "train"):
            if split in ("test", "test_ht_pose", "test_ht_shape", "test_bop", *SPLITS["test"]):
                raise UserError(f"--split {split}: HOT3D-Clips test clips ship no hands.json/objects.json "
                                "(not public, see hot3d/clips/README.md); only --split train can be converted")
            raise UserError(f"--split {split!r} is not a HOT3D-Clips split; use train")
        dirs = [root / d for d in SPLITS["train"] if (root / d).is_dir()]
        if not dirs:
            raise UserError(f"--root {root} is not a HOT3D-Clips root: no {' or '.join(SPLITS['train'])}/ "
                            f"(test clips, without annotations, cannot be converted)")
        return dirs

    def model_path(self, root: Path, bop: int) -> Path | None:
        for d in MODEL_DIRS:
            if (Path(root) / d / f"obj_{bop:06d}.glb").is_file():
                return Path(root) / d / f"obj_{bop:06d}.glb"
        return None

    def list_items(self, root: Path, selection: dict) -> list[WorkItem]:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"--root {root} is not a folder (expected the HOT3D-Clips root)")
        if selection.get("subjects"):
            raise UserError("HOT3D-Clips clips carry no subject ids; select with --sequences (clip names)")
        dirs = self._split_dirs(root, selection.get("split"))
        if not any((root / d).is_dir() for d in MODEL_DIRS):
            raise UserError(f"--root {root} is not a HOT3D-Clips root: {MODEL_DIRS[0]}/ is missing")
        clips = [p for d in dirs for p in sorted(d.glob("clip-*.tar"))]
        wanted = selection.get("sequences")
        if wanted:
            def match(p: Path, w: str) -> bool:      # clip-001849, train_aria/clip-001849, 001849, 1849
                num = p.stem.split("-", 1)[-1]
                if any(n == w or n.endswith(w) for n in (p.stem, f"{p.parent.name}/{p.stem}", num)):
                    return True
                return w.isdigit() and num.isdigit() and int(w) == int(num)
            clips = [p for p in clips if any(match(p, str(w)) for w in wanted)]
        if not clips:
            raise UserError(f"no clip-*.tar under {', '.join(d.name for d in dirs)} matches the selection")
        T, stride = int(selection["frames"]), int(selection["stride"])
        min_valid = float(selection.get("min_valid_frames") or 0.0)
        cams = selection.get("cameras")
        items, self.skipped_windows = [], 0
        for path in clips:
            try:
                clip = Clip(path)
            except StepFailed as e:
                raise UserError(f"HOT3D-Clips layout: {e.reason}") from None
            try:
                streams = clip.streams()
                chosen = [s for s in streams if (str(s) in {str(c) for c in cams} if cams else "rgb" in streams[s])]
                for stream in chosen:
                    wins = self._windows(clip, stream, T, stride, min_valid)
                    self.skipped_windows += len(self._windows(clip, stream, T, stride, 0.0)) - len(wins)
                    if wins:
                        key = f"{path.parent.name}/{path.stem}/{stream}"
                        items.append(WorkItem(key=key, locator=key, n_samples=len(wins)))
            except StepFailed as e:
                raise UserError(f"HOT3D-Clips layout: {e.reason}") from None
            finally:
                clip.close()
        if not items:
            raise UserError("the selection (split/sequences/cameras, --frames, --stride, --min-valid-frames) gives no "
                            "clips (default cameras: the RGB stream 214-1; Quest 3 clips need --cameras 1201-1)")
        return items

    @staticmethod
    def _windows(clip: Clip, stream: str, T: int, stride: int, min_valid: float) -> list[list[int]]:
        have = np.array([f"{f:06d}.image_{stream}.jpg" in clip.members for f in range(clip.n_frames)], bool)
        return [w for w in frame_windows(clip.n_frames, T, stride, clip.hand_valid(), min_valid) if have[w].all()]

    def _clip(self, root: Path, item: WorkItem) -> tuple[Clip, str]:
        folder, name, stream = item.locator.split("/")
        return open_clip(Path(root) / folder / f"{name}.tar"), stream

    def windows(self, root: Path, item: WorkItem, selection: dict) -> list[list[int]]:
        clip, stream = self._clip(root, item)
        return self._windows(clip, stream, int(selection["frames"]), int(selection["stride"]),
                             float(selection.get("min_valid_frames") or 0.0))

    # -- worker side ---------------------------------------------------------------------
    def _layer_objects(self, root: Path, clip: Clip) -> list[str]:
        """The clip's layer objects, primary first (cached on the clip)."""
        if "_layer" not in clip.__dict__:
            corners, poses, valid = {}, {}, {}
            for name, (bop, P, ok) in clip.objects.items():
                path = self.model_path(root, bop)
                if path is None:
                    raise StepFailed("load", f"object model obj_{bop:06d}.glb is in none of {', '.join(MODEL_DIRS)}/")
                corners[name], poses[name], valid[name] = box_corners(read_model(str(path))[0]), P, ok
            wrists = np.stack([np.where(ok[:, None], wx[:, 3:], np.nan) for _, wx, ok in clip.hands.values()], axis=1)
            clip.__dict__["_layer"] = choose_objects(corners, poses, valid, wrists)
        return clip.__dict__["_layer"]

    def load_clip(self, root: Path, item: WorkItem, frame_ids: list[int], hand_models: dict) -> ClipData:
        root = Path(root)
        clip, stream = self._clip(root, item)
        fids = [int(f) for f in frame_ids]
        cam0, _ = clip.camera(0, stream)
        K0 = pinhole_K(cam0)                                  # the item's pinhole camera (frame 0)
        images, E = [], []
        for f in fids:
            cam, T_wc = clip.camera(f, stream)
            img = clip.image(f, stream)
            if img.shape[:2] != (cam.size[1], cam.size[0]):
                raise StepFailed("load", f"{clip.path.name}: image {f} of {stream} is {img.shape[1]}x{img.shape[0]}, "
                                 f"its calibration says {cam.size[0]}x{cam.size[1]}")
            images.append(undistort_upright(img, cam, K0))
            E.append(world_to_upright(T_wc))
        E = np.stack(E)
        K = upright_K(K0, cam0.size[1])
        ids = np.asarray(fids)
        hands = {}
        betas = clip.betas if clip.betas is not None else np.zeros(10)
        for side, (th, wx, ok) in clip.hands.items():
            model = hand_models[side]
            valid = ok[ids].copy()
            pose, trans = mano_pose(th[ids], wx[ids], model)
            for t in np.flatnonzero(valid):
                pose[t:t + 1], trans[t:t + 1] = transform_mano(model, pose[t:t + 1], trans[t:t + 1], betas, E[t])
            pose[~valid], trans[~valid] = 0.0, 0.0
            hands[side] = HandClip(pose=pose, betas=betas.copy(), trans=trans, valid=valid)
        parts, obj_valid = [], np.ones(len(fids), bool)
        for name in self._layer_objects(root, clip):
            bop, P, ok = clip.objects[name]
            v, f = read_model(str(self.model_path(root, bop)))
            obj_valid &= ok[ids]
            parts.append(ObjectPart(name=name, vertices=v, faces=f, poses=E @ P[ids]))
        mesh = self.model_path(root, clip.objects[parts[0].name][0]) if parts else None
        data = ClipData(key=item.key, frame_ids=fids, images=np.stack(images), K=K, hands=hands, object_mesh=mesh,
                        object_poses=parts[0].poses if parts else np.tile(np.eye(4), (len(fids), 1, 1)),
                        object_valid=obj_valid & bool(parts), object_parts=parts or None,
                        object_uid=parts[0].name.split("#")[0] if parts else None,
                        extras={"clip": clip.path.stem, "stream": stream, "objects": [p.name for p in parts]})
        data.background = window_reference(data, hand_models)
        return data

    def background(self, root: Path, item: WorkItem) -> np.ndarray:
        """Masked median over ``BACKGROUND_FRAMES`` undistorted upright frames spread over the clip
        (the view moves, so it is blurred: only ``export-sequence`` uses it; the job takes each
        window's own); discs of ``HAND_RADIUS_M`` around both wrist guesses and the layer objects'
        projected hulls are masked."""
        root = Path(root)
        clip, stream = self._clip(root, item)
        n = clip.n_frames
        fids = [int(i) for i in np.unique(np.linspace(0, n - 1, min(n, BACKGROUND_FRAMES)).round())]
        cam0, _ = clip.camera(0, stream)
        K0 = pinhole_K(cam0)
        K = upright_K(K0, cam0.size[1])
        imgs, keep = [], []
        layer = self._layer_objects(root, clip)
        for f in fids:
            cam, T_wc = clip.camera(f, stream)
            imgs.append(undistort_upright(clip.image(f, stream), cam, K0))
            E = world_to_upright(T_wc)
            groups = []
            for name in layer:
                bop, P, ok = clip.objects[name]
                if ok[f]:
                    v = read_model(str(self.model_path(root, bop)))[0]
                    M = E @ P[f]
                    groups.append((v[:: max(1, len(v) // 500)] @ M[:3, :3].T + M[:3, 3], 0.005))
            for side, (_, wx, ok) in clip.hands.items():
                if ok[f]:
                    for c in (wx[f, 3:], wx[f, 3:] + MANO_WRIST[side]):    # transl, transl + MANO's rest wrist
                        groups.append(((E[:3, :3] @ c + E[:3, 3])[None], HAND_RADIUS_M))
            keep.append(~coverage_mask(groups, K, cam0.size[1], cam0.size[0]))
        return median_reference(np.stack(imgs), np.stack(keep))
