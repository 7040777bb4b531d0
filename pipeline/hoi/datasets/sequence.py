"""Adapter for the project's open sequence format (``render-hoi sequence --root DIR``).

``--root``: a folder of sequence folders (each with ``sequence.json``), or one sequence folder.
The format itself (files, fields, conventions, checks) is ``pipeline.sequence_format``.

One item = one (sequence, camera); key ``<sequence>/<camera>``, locator ``<folder>/<camera>``
(folder relative to the root, "." when the root is the sequence). Selection: ``sequences``
and ``cameras`` (names or name suffixes); ``subjects`` and ``split`` do not apply (UserError).
Windows: ``frame_windows`` over ``n_frames`` with ``valid`` = "some hand annotated"
(``--min-valid-frames``).

Per window (``load_clip``): world-frame arrays moved into the item camera's OpenCV frame
(``cam_to_world`` per frame: static or moving cameras); hand poses made absolute with the run's
hand model (``flat_hand_mean`` false: + ``hands_mean``) and moved with
``transform_mano`` (exact rotation about the model's rest wrist); frames with ``valid``
False are zero. Background: ``background/<camera>.png`` when given, else the per-pixel median
of up to 9 frames spread over the sequence (hands and object not masked: give a background
when the camera moves or the hands cover a spot throughout).

``fix_left_shapedirs`` is a property of each sequence (hands.npz); a MANO run whose left-hand
setting disagrees with it fails the item with a message naming the flag to pass.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.clips.windows import frame_windows
from pipeline.engine.items import WorkItem
from pipeline.errors import StepFailed, UserError
from pipeline.hands.model import transform_mano
from pipeline.hoi.adapter import ClipData, HandClip, ObjectPart
from pipeline.hoi.adapter import pick_names as _pick
from pipeline.sequence_format import Sequence, absolute_pose, read_frames, read_sequence
from pipeline.sequence_format.model import SIDES
from pipeline.sequence_format.read import check_frame_counts

BACKGROUND_FRAMES = 9


def sequence_folders(root: Path) -> dict[str, str]:
    """name -> folder relative to ``root`` ("." when ``root`` is itself a sequence folder)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root {root} is not a folder (expected sequence folders with sequence.json)")
    if (root / "sequence.json").is_file():
        return {root.resolve().name: "."}
    found = {p.name: p.name for p in sorted(root.iterdir()) if (p / "sequence.json").is_file()}
    if not found:
        raise UserError(f"--root {root} holds no sequence folder (a folder with sequence.json)")
    return found


@functools.lru_cache(maxsize=4)
def _read_cached(folder: str, stamp: tuple) -> Sequence:
    return read_sequence(folder)


def _worker_read(folder: Path) -> Sequence:
    """The sequence (re-read when one of its metadata/array files changes); StepFailed if broken."""
    stamp = tuple(p.stat().st_mtime_ns if p.exists() else 0
                  for p in (folder / n for n in ("sequence.json", "cameras.json", "hands.npz", "object_poses.npy",
                                                 "object_valid.npy", "object_parts.npz", "joints_3d.npy")))
    try:
        return _read_cached(str(folder), stamp)
    except UserError as e:
        raise StepFailed("load", str(e)) from None


def _moved(P: np.ndarray, W2C: np.ndarray) -> np.ndarray:
    """[T,4,4] world -> [T,4,4] camera with per-frame W2C [T,4,4] (exact when W2C is identity)."""
    if all(np.array_equal(w, np.eye(4)) for w in W2C):
        return np.array(P, np.float64)
    return W2C @ P


class SequenceAdapter:
    name = "sequence"
    fix_left_shapedirs = False  # each sequence says its own (hands.npz); checked per item
    skipped_windows = 0

    # -- driver side ---------------------------------------------------------------------
    def list_items(self, root: Path, selection: dict) -> list[WorkItem]:
        for key in ("subjects", "split"):
            if selection.get(key):
                raise UserError(f"--{key} does not apply to the sequence format (use --sequences / --cameras)")
        folders = sequence_folders(root)
        chosen = _pick(sorted(folders), selection.get("sequences"))
        if not chosen:
            raise UserError(f"--sequences {selection.get('sequences')} matches none of {sorted(folders)[:5]}")
        T, stride = int(selection["frames"]), int(selection["stride"])
        min_valid = float(selection.get("min_valid_frames") or 0.0)
        items, self.skipped_windows = [], 0
        for name in chosen:
            seq = read_sequence(Path(root) / folders[name])
            cams = _pick(sorted(seq.cameras), selection.get("cameras"))
            check_frame_counts(seq, cams)
            wins = frame_windows(seq.n_frames, T, stride, seq.hand_valid(), min_valid)
            for cam in cams:
                self.skipped_windows += len(frame_windows(seq.n_frames, T, stride)) - len(wins)
                if wins:
                    items.append(WorkItem(key=f"{name}/{cam}", locator=f"{folders[name]}/{cam}", n_samples=len(wins)))
        if not items:
            raise UserError("the selection (sequences/cameras, --frames, --stride, --min-valid-frames) gives no clips")
        return items

    def windows(self, root: Path, item: WorkItem, selection: dict) -> list[list[int]]:
        seq = _worker_read(self._folder(root, item))
        return frame_windows(seq.n_frames, int(selection["frames"]), int(selection["stride"]), seq.hand_valid(),
                             float(selection.get("min_valid_frames") or 0.0))

    # -- worker side ---------------------------------------------------------------------
    @staticmethod
    def _folder(root: Path, item: WorkItem) -> Path:
        return Path(root) / item.locator.rsplit("/", 1)[0]

    def _camera(self, seq: Sequence, item: WorkItem):
        cam = item.locator.rsplit("/", 1)[1]
        if cam not in seq.cameras:
            raise StepFailed("load", f"camera {cam!r} is no longer in {seq.folder / 'cameras.json'}")
        return seq.cameras[cam]

    def load_clip(self, root: Path, item: WorkItem, frame_ids: list[int], hand_models: dict) -> ClipData:
        seq = _worker_read(self._folder(root, item))
        cam = self._camera(seq, item)
        ids = np.asarray(frame_ids)
        if ids.max() >= seq.n_frames:
            raise StepFailed("load", f"frame {ids.max()} asked, the sequence has {seq.n_frames}")
        try:
            images = read_frames(cam, list(frame_ids))
        except UserError as e:
            raise StepFailed("load", str(e)) from None
        _check_left_shapedirs(seq, hand_models)
        W2C = np.stack([cam.world_to_cam(int(t)) for t in ids])
        hands = {}
        for side, h in seq.hands.items():
            model = hand_models[side]
            pose = absolute_pose(h.pose[ids], seq.flat_hand_mean, model.hands_mean)
            trans, valid = h.trans[ids].copy(), h.valid[ids].copy()
            if not all(np.array_equal(w, np.eye(4)) for w in W2C):
                for t in range(len(ids)):
                    pose[t:t + 1], trans[t:t + 1] = transform_mano(model, pose[t:t + 1], trans[t:t + 1], h.betas, W2C[t])
            pose[~valid], trans[~valid] = 0.0, 0.0
            hands[side] = HandClip(pose=pose, betas=h.betas.copy(), trans=trans, valid=valid)
        parts = None
        if seq.object_parts is not None:
            parts = [ObjectPart(name=p.name, vertices=p.vertices, faces=p.faces, poses=_moved(p.poses[ids], W2C))
                     for p in seq.object_parts]
        labels = None
        if seq.joints_3d is not None:
            j = seq.joints_3d[ids]                                     # [T,2,21,3] world
            cam_j = np.einsum("tij,tskj->tski", W2C[:, :3, :3], j) + W2C[:, None, None, :3, 3]
            if all(np.array_equal(w, np.eye(4)) for w in W2C):
                cam_j = j.copy()
            labels = {s: cam_j[:, k] for k, s in enumerate(SIDES) if np.isfinite(cam_j[:, k]).any()}
        name = seq.object_name
        return ClipData(key=item.key, frame_ids=list(frame_ids), images=images, K=cam.K.copy(), hands=hands,
                        object_mesh=seq.object_mesh, object_poses=_moved(seq.object_poses[ids], W2C),
                        object_valid=seq.object_valid[ids].copy(), object_parts=parts, joints_label=labels,
                        extras={"object_name": name, "sequence": seq.name, "camera": cam.name}, object_uid=name)

    def background(self, root: Path, item: WorkItem) -> np.ndarray:
        seq = _worker_read(self._folder(root, item))
        cam = self._camera(seq, item)
        if cam.background is not None:
            with Image.open(cam.background) as im:
                return np.asarray(im.convert("RGB"))
        ids = np.unique(np.linspace(0, seq.n_frames - 1, min(seq.n_frames, BACKGROUND_FRAMES)).round().astype(int))
        try:
            frames = read_frames(cam, [int(i) for i in ids])
        except UserError as e:
            raise StepFailed("load", str(e)) from None
        return np.median(frames, axis=0).round().astype(np.uint8)


def _check_left_shapedirs(seq: Sequence, models: dict) -> None:
    """A MANO run must use the left-hand shapedirs the sequence was fitted with (hands.npz)."""
    left = models.get("left")
    if "left" not in seq.hands or left is None or left.name != "MANO" or not left.source:
        return  # the stand-in hand has no such variant
    from pipeline.hands.model import mano_hand

    want = mano_hand(str(Path(left.source).parent), "left", seq.fix_left_shapedirs)
    if not np.array_equal(want.arrays["shapedirs"], left.arrays["shapedirs"]):
        flag = "--fix-left-shapedirs" if seq.fix_left_shapedirs else "--no-fix-left-shapedirs"
        raise StepFailed("load", f"{seq.folder / 'hands.npz'} says fix_left_shapedirs={seq.fix_left_shapedirs}, the run "
                         f"uses the other left-hand shapedirs: render this sequence with {flag}")
