"""A ``ClipData`` window -> one HOI store sample (dataset-independent).

Frames of the sample (see schemas.store): the stored camera frame is this camera's OpenGL
frame and the world frame is that same frame, so ``cam_pose`` is the identity; MANO
parameters, joints and the object trajectory are all in it, metres.

  * crop: one square box per clip around every valid hand vertex and object vertex
    projected over the T frames that falls inside the image (``crop.py``), shifted to stay inside
    the image when it fits, padded when it cannot, resized to R; ``K`` adjusted; ``valid`` marks
    the crop pixels from the camera image (inside it and ``ClipData.image_valid``); a window with
    more than ``cfg.max_padding`` padding in a frame raises ``crop.TooMuchPadding`` before any
    rendering; ``hand_inside`` = fraction of each hand's vertices on a valid source pixel;
  * MLO: 13 layers per frame, each alone (``mlo.render_mlo``), in one atlas pass;
  * object appearance/geometry: the object model canonicalised by ``mesh_io`` and rendered
    / sampled by the same functions as Objaverse (``reference_views``, ``object_points``);
    ``obj_rot``/``obj_trans``/``obj_scale`` place the *canonical* frame (radius 0.5) in the
    camera: camera point = R(obj_rot) @ (obj_scale * p) + obj_trans, metres;
  * invalid frames: hand layers absent, ``hand_valid`` False, pose/trans/joints_3d zero,
    joints_2d -1; an unannotated object frame has no object layer and identity rotation;
  * label agreement: where the clip has ``joints_label``, the sample's ``attrs`` hold
    ``joint_agreement`` (mm between our 21 joints and the labels); the job fails a window
    whose ``joint_err_max_mm`` is over ``HoiConfig.max_joint_error_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from pipeline.assets.mesh_io import CanonicalObject, load_object
from pipeline.clips import crop
from pipeline.hands.model import GL_FROM_CV, HandModel, cv_to_gl
from pipeline.hoi.adapter import ClipData
from pipeline.objects.object_refs import object_points, reference_views
from pipeline.render.cameras import project
from pipeline.render.mlo import HandTrack, ObjectTrack, render_mlo, vertex_normals
from schemas import HANDS
from schemas.config import HoiConfig
from schemas.store import MANO_BETAS_DIM, N_JOINTS, SAMPLE_ATTRS

GL4 = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class ObjectModel:
    """The object layer's model: canonical object (for views/points) and its file-frame mesh."""

    canonical: CanonicalObject
    vertices: np.ndarray   # [V,3] file frame, metres
    normals: np.ndarray    # [V,3]
    faces: np.ndarray      # [F,3]
    ref_views: np.ndarray  # [6,R,R,3] uint8
    points: np.ndarray     # [2048,3]
    point_normals: np.ndarray

    @classmethod
    def build(cls, obj: CanonicalObject, rgb_renderer, cfg: HoiConfig) -> ObjectModel:
        from_canonical = np.linalg.inv(obj.to_canonical)
        v = obj.mesh.vertices @ from_canonical[:3, :3].T + from_canonical[:3, 3]
        views = reference_views(obj, rgb_renderer, cfg.resolution)
        pts, nrm = object_points(obj, cfg.seed)
        return cls(obj, v, np.asarray(obj.mesh.vertex_normals), np.asarray(obj.mesh.faces), views, pts, nrm)


def load_layer_object(uid: str, path: str) -> CanonicalObject:
    """The dataset's object mesh for the object layer, canonicalised with ``normalise="bbox"``:
    every face is kept ("bulk" drops far-away parts, but the layer must hold all of the object
    the RGB frames show)."""
    return load_object(uid, path, max_file_mb=512, max_faces=2_000_000, max_texture_px=2048, normalise="bbox")


def _object_parts(clip: ClipData, obj: ObjectModel | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(vertices [V,3] m, poses [T,4,4] OpenCV) of each rigid part of the object layer."""
    if obj is None:
        return []
    if clip.object_parts is None:
        return [(obj.vertices, clip.object_poses)]
    return [(np.asarray(p.vertices, np.float64), np.asarray(p.poses, np.float64)) for p in clip.object_parts]


def _pose_unit(object_poses: np.ndarray, valid: np.ndarray) -> float:
    """Uniform scale of ``object_poses`` (metres per mesh-file unit; 1 for metre meshes),
    read from the first valid frame."""
    ok = np.flatnonzero(valid)
    return float(np.cbrt(np.linalg.det(object_poses[ok[0]][:3, :3]))) if len(ok) else 1.0


def _hand_geometry(clip: ClipData, models: dict[str, HandModel]):
    """Per side: (vertices_cv [T,V,3], joints_cv [T,21,3], valid [T]) for the sides in the clip."""
    out = {}
    for side, h in clip.hands.items():
        verts, joints = models[side].forward(h.pose, h.betas, h.trans)
        out[side] = (verts, joints, np.asarray(h.valid, bool))
    return out


def joint_agreement(joints: dict[str, np.ndarray], valid: dict[str, np.ndarray],
                    labels: dict[str, np.ndarray] | None) -> dict:
    """Distance between our hand model's 21 joints and the dataset's joint labels, in mm.

    ``joints``/``labels``: side -> [T,21,3] metres, same frame (OpenCV camera), same joint
    order (DexYCB/manopth); ``valid``: side -> [T] bool (our hand annotated). Compared over
    frames where the hand is valid and the label finite (NaN = no label: a whole frame, or single
    joints, e.g. ARCTIC's fingertips, which are other vertices than manopth's). Returns the sample
    attrs ``joint_err_mean_mm`` / ``joint_err_max_mm`` over both sides together (all compared
    joints of the window), ``joint_err_mean_mm_<side>`` / ``joint_err_max_mm_<side>`` per side,
    ``joint_err_frames`` (hand-frames compared) and ``joint_err_worst`` ("left joint 12"); {}
    when nothing could be compared.
    """
    out, errs, worst = {}, [], (-1.0, "")
    for side, lab in (labels or {}).items():
        if side not in joints:
            continue
        lab = np.asarray(lab, np.float64)
        ok = np.asarray(valid[side], bool) & np.isfinite(lab).all(axis=2).any(axis=1)
        if not ok.any():
            continue
        e = np.linalg.norm(joints[side][ok] - lab[ok], axis=-1) * 1000.0  # [n,21] mm; NaN: joint not labelled
        out[f"joint_err_mean_mm_{side}"] = round(float(np.nanmean(e)), 4)
        out[f"joint_err_max_mm_{side}"] = round(float(np.nanmax(e)), 4)
        if np.nanmax(e) > worst[0]:
            worst = (float(np.nanmax(e)), f"{side} joint {int(np.unravel_index(np.nanargmax(e), e.shape)[1])}")
        errs.append(e)
    if not errs:
        return {}
    e = np.concatenate([x.reshape(-1) for x in errs])
    return {"joint_err_mean_mm": round(float(np.nanmean(e)), 4), "joint_err_max_mm": round(float(np.nanmax(e)), 4),
            "joint_err_frames": int(sum(len(x) for x in errs)), "joint_err_worst": worst[1], **out}


def _pixels(K: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[N,2] pixels (centres at +0.5) of OpenCV camera points [N,3] (z > 0) under OpenCV ``K``."""
    return np.stack([K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2] + 0.5, K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2] + 0.5], axis=1)


@dataclass
class CropPlan:
    """The window's crop: box (x0, y0, side) source pixels, K [3,3] of the R x R crop (pixel
    centres at +0.5), valid [T,R,R] bool, padding [T] fraction, hand_inside [T,2] float32."""

    box: tuple[int, int, int]
    K: np.ndarray
    valid: np.ndarray
    padding: np.ndarray
    hand_inside: np.ndarray


def plan_crop(clip: ClipData, hands: dict, obj: ObjectModel | None, cfg: HoiConfig) -> CropPlan:
    """The crop of one window (module doc); ``hands`` as ``_hand_geometry`` gives them. Raises
    ``crop.TooMuchPadding`` when a frame's crop is more than ``cfg.max_padding`` padding."""
    T, R = len(clip.frame_ids), cfg.resolution
    H, W = clip.images.shape[1:3]
    image_valid = clip.image_valid
    if image_valid is not None and np.shape(image_valid) != (T, H, W):
        raise ValueError(f"ClipData.image_valid is {np.shape(image_valid)}, the images {(T, H, W)}")
    pts = []
    for verts, _, valid in hands.values():
        if valid.any():
            pts.append(verts[valid].reshape(-1, 3))
    obj_valid = np.asarray(clip.object_valid, bool) & (obj is not None)
    parts = _object_parts(clip, obj)
    if parts and obj_valid.any():
        for verts, poses in parts:
            sub = verts[:: max(1, len(verts) // 2000)]
            for t in np.flatnonzero(obj_valid):
                P = poses[t]
                pts.append(sub @ P[:3, :3].T + P[:3, 3])
    pts2d = np.zeros((0, 2))
    if pts:
        p = np.concatenate(pts)
        pts2d = _pixels(clip.K, p[p[:, 2] > 1e-3])
    box = crop.crop_box(pts2d, W, H, cfg.crop_margin, cfg.min_crop_px)
    valid = np.stack([crop.crop_valid(box, R, W, H, None if image_valid is None else image_valid[t])
                      for t in range(T)])
    padding = crop.check_padding(valid, cfg.max_padding)
    inside = np.zeros((T, 2), np.float32)
    for k, side in enumerate(HANDS):
        if side not in hands:
            continue
        verts, _, ok = hands[side]
        for t in np.flatnonzero(ok):
            v = verts[t]
            front = v[:, 2] > 1e-3
            px = _pixels(clip.K, np.where(front[:, None], v, 1.0))
            inside[t, k] = crop.inside_fraction(px, W, H, None if image_valid is None else image_valid[t], front)
    return CropPlan(box, crop.crop_intrinsics(clip.K, box, R), valid, padding, inside)


def build_sample(clip: ClipData, background: np.ndarray, models: dict[str, HandModel], obj: ObjectModel | None,
                 layer_renderer, cfg: HoiConfig) -> dict[str, np.ndarray]:
    """The contract sample of one window (all arrays of an "hoi" layout with all 13 layers).
    Raises ``crop.TooMuchPadding`` (nothing rendered) for a window over ``cfg.max_padding``."""
    T, R = len(clip.frame_ids), cfg.resolution
    hands = _hand_geometry(clip, models)
    plan = plan_crop(clip, hands, obj, cfg)
    box, K = plan.box, plan.K
    obj_valid = np.asarray(clip.object_valid, bool) & (obj is not None)

    tracks = {s: HandTrack(models[s], verts * np.array([1.0, -1.0, -1.0]), valid) for s, (verts, _, valid) in hands.items()}
    otrack = None
    if obj is not None and clip.object_parts is None:
        otrack = ObjectTrack(obj.vertices, obj.normals, obj.faces, GL4 @ clip.object_poses, obj_valid)
    elif obj is not None:
        otrack = [ObjectTrack(p.vertices, vertex_normals(p.vertices, p.faces), p.faces, GL4 @ p.poses, obj_valid)
                  for p in clip.object_parts]
    normal, depth = render_mlo(layer_renderer, K, T, otrack, tracks, depth_dtype=np.float16)

    mano_pose = np.zeros((T, 2, 48), np.float32)
    mano_trans = np.zeros((T, 2, 3), np.float32)
    betas = np.zeros((2, MANO_BETAS_DIM), np.float32)
    hand_valid = np.zeros((T, 2), bool)
    j3 = np.zeros((T, 2, N_JOINTS, 3), np.float32)
    j2 = np.full((T, 2, N_JOINTS, 2), -1.0, np.float32)
    for k, side in enumerate(HANDS):
        if side not in clip.hands:
            continue
        h = clip.hands[side]
        _, joints, valid = hands[side]
        pose_gl, trans_gl = cv_to_gl(models[side], h.pose, h.trans, h.betas)
        betas[k] = h.betas[:MANO_BETAS_DIM]
        hand_valid[:, k] = valid
        mano_pose[valid, k] = pose_gl[valid]
        mano_trans[valid, k] = trans_gl[valid]
        jgl = joints @ GL_FROM_CV.T
        j3[valid, k] = jgl[valid]
        j2[valid, k] = project(jgl[valid], K)

    canon_from_file = obj.canonical.to_canonical if obj is not None else np.eye(4)
    rots = np.tile(np.array([0, 0, 0, 1], np.float32), (T, 1))
    trans = np.zeros((T, 3), np.float32)
    for t in np.flatnonzero(obj_valid):
        M = GL4 @ clip.object_poses[t] @ np.linalg.inv(canon_from_file)
        rot = M[:3, :3] / np.cbrt(np.linalg.det(M[:3, :3]))
        rots[t] = Rotation.from_matrix(rot).as_quat()
        trans[t] = M[:3, 3]
    empty = np.zeros((6, R, R, 3), np.uint8)
    attrs = joint_agreement({s: g[1] for s, g in hands.items()}, {s: g[2] for s, g in hands.items()},
                            clip.joints_label)
    attrs.update(crop_attrs(plan.padding, plan.hand_inside, hand_valid), crop_box=[int(x) for x in box],
                 source_frames=[int(f) for f in clip.frame_ids])
    return {
        SAMPLE_ATTRS: attrs,
        "rgb": np.stack([crop.crop_image(im, box, R) for im in clip.images]),
        "mlo_normal": normal,
        "mlo_depth": depth,
        "layer_present": (depth.view(np.uint16) != 0).any(axis=(2, 3)),  # +0 or positive: as depth > 0
        "ref_views": obj.ref_views if obj is not None else empty,
        "background": crop.crop_image(background, box, R),
        "points": obj.points if obj is not None else np.zeros((2048, 3), np.float32),
        "point_normals": obj.point_normals if obj is not None else np.tile(np.float32([0, 0, 1]), (2048, 1)),
        "obj_rot": rots.astype(np.float32),
        "obj_trans": trans,
        # canonical -> metres: the inverse of mesh_io's uniform normalising scale, times the mesh
        # file's unit when ``object_poses`` carry one as a uniform scale (TACO's cm meshes: 0.01)
        "obj_scale": np.array([_pose_unit(clip.object_poses, obj_valid) / canon_from_file[0, 0]], np.float32),
        "K": K.astype(np.float32),
        "cam_pose": np.eye(4, dtype=np.float32),
        "mano_pose": mano_pose,
        "mano_betas": betas,
        "mano_trans": mano_trans,
        "hand_valid": hand_valid,
        "joints_3d": j3,
        "joints_2d": j2,
        "hand_inside": plan.hand_inside,
        "valid": plan.valid,
    }


def crop_attrs(padding: np.ndarray, hand_inside: np.ndarray | None = None, hand_valid: np.ndarray | None = None) -> dict:
    """Sample attrs of the crop: ``padding_max`` / ``padding_mean`` (fraction of the crop's pixels
    not from the camera image, worst frame / mean over frames) and, for annotated hands,
    ``hand_inside_min`` (the least fraction of a hand's vertices inside the image over the window).
    ``build_sample`` adds ``crop_box`` [x0, y0, side] (source pixels: columns x0..x0+side-1) and
    ``source_frames`` (the dataset's frame numbers of the T frames)."""
    out = {"padding_max": round(float(np.max(padding)), 4), "padding_mean": round(float(np.mean(padding)), 4)}
    if hand_inside is not None and hand_valid is not None and np.any(hand_valid):
        out["hand_inside_min"] = round(float(np.min(np.asarray(hand_inside)[np.asarray(hand_valid, bool)])), 4)
    return out
