"""``export-sequence DATASET``: any adapter's items written in the open sequence format.

Works through the adapter protocol only (``list_items`` with one-frame windows and no
valid-frame filter, ``windows``, ``load_clip`` over the whole sequence in chunks of
``CHUNK`` frames, ``background``), so every registered dataset exports the same way.

One item (sequence x camera) -> one sequence folder ``OUT/<key with '/' -> '__'>`` with that
one camera. The protocol gives no extrinsics, so the world frame of an exported folder *is*
that camera's OpenCV frame (``cam_to_world`` = identity) and every array is written as the
adapter gives it: hand poses absolute axis-angle (``flat_hand_mean`` true), the adapter's
``fix_left_shapedirs`` (or the override), object poses object -> camera, parts, joint labels.
Frames are PNG (lossless), so ``render-hoi sequence`` on the export gives the same samples as
``render-hoi DATASET`` on the source. Each folder is written as ``.<name>.partial`` and renamed
when complete and re-read by ``read_sequence``; a failing item is reported and skipped.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import StepFailed, UserError
from pipeline.hands.model import hand_models
from pipeline.hoi.adapter import make_selection
from pipeline.hoi.datasets import get_adapter
from pipeline.sequence_format import (
    Camera,
    HandSequence,
    PartSequence,
    Sequence,
    copy_mesh,
    read_sequence,
    write_frames,
    write_sequence,
)
from pipeline.sequence_format.model import SIDES
from pipeline.sequence_format.write import write_background

CHUNK = 16


@dataclass
class ExportSummary:
    out: Path
    written: list[tuple[str, Path, int]] = field(default_factory=list)   # (key, folder, frames)
    failed: list[tuple[str, str]] = field(default_factory=list)          # (key, reason)
    already: int = 0                                                      # complete from an earlier run

    def format(self) -> str:
        frames = sum(n for _, _, n in self.written)
        lines = [f"exported {len(self.written)} sequence folder(s), {frames} frames, to {self.out}"
                 + (f"; {self.already} already exported by an earlier run" if self.already else "")]
        lines += [f"  failed {key}: {reason}" for key, reason in self.failed]
        return "\n".join(lines)


def folder_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key.replace("/", "__")).lstrip(".") or "sequence"


def export(dataset: str, root: Path, out: Path, selection: dict, hand_model: str, mano_dir: str | None,
           fix_left_shapedirs: bool | None, echo=print) -> ExportSummary:
    """Write every selected item of ``dataset`` under ``out``; UserError before writing anything
    for a bad root/selection/hand model or an existing target folder."""
    adapter = get_adapter(dataset)
    fix = bool(getattr(adapter, "fix_left_shapedirs", False)) if fix_left_shapedirs is None else fix_left_shapedirs
    models = hand_models(hand_model, mano_dir, fix)
    sel = make_selection(**{**selection, "frames": 1, "stride": 1, "min_valid_frames": 0.0})
    adapter.skipped_windows = 0
    root, out = Path(root), Path(out)
    items = adapter.list_items(root, sel)
    names = [folder_name(i.key) for i in items]
    if len(set(names)) != len(names):
        raise UserError("two items map to the same folder name; select fewer (--sequences / --cameras)")
    # a folder appears only when complete (written as .NAME.partial, then renamed): one that holds this
    # very export (same dataset, item and hand model) is kept, so an interrupted export resumes
    done = {n for n, i in zip(names, items, strict=True) if _same_export(out / n, dataset, i.key, models["right"].name)}
    clash = [n for n in names if (out / n).exists() and n not in done]
    if clash:
        raise UserError(f"{out / clash[0]} exists and holds another export; choose a new --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out=out, already=len(done))
    for k, (item, name) in enumerate(zip(items, names, strict=True)):
        if name in done:
            continue
        tmp = out / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            n = _export_item(adapter, root, item, tmp, sel, models, fix, dataset, echo)
            tmp.rename(out / name)
            summary.written.append((item.key, out / name, n))
            echo(f"[{k + 1}/{len(items)}] {item.key} -> {out / name} ({n} frames)")
        except StepFailed as e:
            shutil.rmtree(tmp, ignore_errors=True)
            summary.failed.append((item.key, str(e)))
            echo(f"[{k + 1}/{len(items)}] {item.key}: failed ({e})")
    return summary


def _same_export(folder: Path, dataset: str, key: str, hand_model: str) -> bool:
    """``folder`` is a finished export of ``key`` from ``dataset`` with ``hand_model``."""
    try:
        src = json.loads((folder / "sequence.json").read_text()).get("source", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(src, dict) and (src.get("dataset"), src.get("key"), src.get("hand_model")) == (dataset, key, hand_model)


def _export_item(adapter, root: Path, item, folder: Path, sel: dict, models: dict, fix: bool, dataset: str,
                 echo=print) -> int:
    ids = [i for w in adapter.windows(root, item, sel) for i in w]
    if not ids:
        raise StepFailed("load", "no frames")
    camera = folder_name(item.key.rsplit("/", 1)[-1])
    F = len(ids)
    first = None
    hands: dict[str, dict[str, list]] = {}
    obj_poses, obj_valid, part_poses, source_ids = [], [], [], []
    joints = np.full((F, 2, 21, 3), np.nan)
    for start in range(0, F, CHUNK):
        clip = adapter.load_clip(root, item, ids[start:start + CHUNK], models)
        T = len(clip.frame_ids)
        if first is None:
            first = clip
            mesh = copy_mesh(clip.object_mesh, folder) if clip.object_mesh is not None else None
        elif not np.array_equal(clip.K, first.K) or clip.images.shape[1:] != first.images.shape[1:]:
            raise StepFailed("export", "intrinsics or image size change within the sequence")
        write_frames(folder, camera, start, clip.images)
        if F > 4 * CHUNK and (start // CHUNK) % 8 == 7:
            echo(f"  {item.key}: {start + T}/{F} frames")
        source_ids += [int(i) for i in clip.frame_ids]
        for side, h in clip.hands.items():
            d = hands.setdefault(side, {"pose": [], "trans": [], "valid": [], "betas": np.asarray(h.betas, np.float64)})
            d["pose"].append(np.asarray(h.pose, np.float64))
            d["trans"].append(np.asarray(h.trans, np.float64))
            d["valid"].append(np.asarray(h.valid, bool))
        valid = np.asarray(clip.object_valid, bool)
        P = np.array(clip.object_poses, np.float64)
        P[~valid] = np.eye(4)
        obj_poses.append(P)
        obj_valid.append(valid)
        if clip.object_parts is not None:
            part_poses.append([np.asarray(p.poses, np.float64) for p in clip.object_parts])
        for s, lab in (clip.joints_label or {}).items():
            joints[start:start + T, SIDES.index(s)] = lab
    hand_seqs = {}
    for side, d in hands.items():
        pose, trans, valid = (np.concatenate(d[k]) for k in ("pose", "trans", "valid"))
        if len(pose) != F:
            raise StepFailed("export", f"the {side} hand is missing from some chunks")
        hand_seqs[side] = HandSequence(pose=pose, betas=d["betas"], trans=trans, valid=valid)
    if not hand_seqs:
        raise StepFailed("export", "no hand in the item")
    valid = np.concatenate(obj_valid)
    parts = None
    if first.object_parts is not None:
        parts = [PartSequence(name=p.name, vertices=np.asarray(p.vertices, np.float64), faces=np.asarray(p.faces),
                              poses=np.concatenate([c[i] for c in part_poses]))
                 for i, p in enumerate(first.object_parts)]
        for p in parts:
            p.poses[~valid] = np.eye(4)
    H, W = first.images.shape[1:3]
    cam = Camera(name=camera, K=np.asarray(first.K, np.float64), width=W, height=H, cam_to_world=np.eye(4),
                 frames=folder / "frames" / camera)
    name = None
    if mesh is not None:  # the id the render job seeds object points with (see hoi.job)
        name = first.object_uid or first.object_mesh.parent.name
    seq = Sequence(folder=folder, name=folder.name, n_frames=F, fps=None, cameras={camera: cam}, hands=hand_seqs,
                   flat_hand_mean=True, fix_left_shapedirs=fix, object_mesh=mesh, object_name=name,
                   object_poses=np.concatenate(obj_poses), object_valid=valid, object_parts=parts,
                   joints_3d=joints if np.isfinite(joints).any() else None,
                   source={"dataset": dataset, "key": item.key, "frame_ids": source_ids,
                           "hand_model": models["right"].name, "world": "the camera's OpenCV frame"})
    write_background(folder, camera, adapter.background(root, item))
    write_sequence(folder, seq)
    try:
        read_sequence(folder)
    except UserError as e:
        raise StepFailed("export", f"the written folder does not read back: {e}") from None
    return F
