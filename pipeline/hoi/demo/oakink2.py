"""``make-demo-hoi --layout oakink2``: a small synthetic dataset in the exact OakInk2 on-disk layout
(github.com/oakink/OakInk2 toolkit; see ``pipeline.hoi.datasets.oakink2``).

The scene is ``demo.scene.handover_scene`` (two stand-in hands, not MANO; a box passed from the
right hand to the left while its lid opens), sampled at the mocap rate (120 Hz) and rendered at
the image rate (one image every ``MOCAP_PER_IMAGE`` mocap frames), written the way OakInk2 stores
a capture:
  * world = a z-up mocap world, ``WORLD_FROM_SCENE`` (the scene's y-down frame turned up and
    moved 0.8 m down, so no two frames coincide);
  * frame ids start at ``FIRST_FRAME`` (image frame k = mocap frame ``FIRST_FRAME + 4k``);
  * three object parts, as OakInk2 splits articulated objects: the box's bottom and its lid (each
    its own ``align_ds/<obj_id>/`` model and pose; the lid's model is in its own frame, centred
    on the lid) and a can that stands still on the table (``object_raw/align_ds``; textured .obj
    + .mtl + .png for the box parts, a vertex-coloured .ply for the can);
  * ``anno_preview/<token>.pkl``: ``cam_def``, ``cam_selection``, ``frame_id_list``, per-frame
    ``cam_intr``/``cam_extr`` (world -> camera) of three static allocentric cameras and a moving
    egocentric one, ``mocap_frame_id_list``, ``obj_list``, ``obj_transf`` (every mocap frame),
    ``raw_smplx`` (identity/zero placeholders of the README's shapes: no body model here) and
    ``raw_mano``: ``{lh,rh}__pose_coeffs`` [1,16,4] quaternions (w, x, y, z) of the absolute
    pose (manotorch quat mode), ``__tsl`` [1,3] the wrist (``center_idx=0``), ``__betas``
    [1,10]; tensors pickled with plain ``pickle`` as torch tensors, as OakInk2's are;
  * ``data/<token>/<serial>/<frame_id:06d>.png`` at 848 x 480 (``meta.VIDEO_SHAPE``);
  * ``object_raw/obj_desc.json`` and ``program/`` (``task_target.json``, ``program_info``,
    ``desc_info``, ``initial_condition_info``, ``pdg``): one primitive over the whole sequence,
    what the toolkit's ``OakInk2__Dataset`` needs to load it (not read by the adapter).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image
from scipy.spatial.transform import Rotation

from pipeline.hands.model import standin_hand, transform_mano
from pipeline.hoi.demo.objects import _can
from pipeline.hoi.demo.scene import CENTRE, handover_scene, look_at_opencv

SEQ_KEY = "scene_03__A004/00000000000000000001__2024-01-02-03-04-05"
TOKEN = SEQ_KEY.replace("/", "++")
W, H = 848, 480
FIRST_FRAME = 1200
MOCAP_PER_IMAGE = 4                      # 120 Hz mocap, 30 fps images (meta.py FPS_MOCAP / FPS_VIDEO)
CAMERAS = {"allocentric_top": "f4f4f4f4", "allocentric_left": "a1a1a1a1",
           "allocentric_right": "b2b2b2b2", "egocentric": "e5e5e5e5"}          # name -> serial
BOTTOM, LID, CAN = "O02@0045@00001", "O02@0045@00002", "O02@0012@00001"
WORLD_FROM_SCENE = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, -0.8], [0, 0, 0, 1]])
CAN_AT = CENTRE + np.array([0.16, 0.115, 0.06])     # scene frame: on the table, right of the hand-over


def _T(t) -> np.ndarray:
    M = np.eye(4)
    M[:3, 3] = t
    return M



def _write_textured_obj(folder: Path, name: str, mesh: trimesh.Trimesh) -> None:
    """``<name>.obj`` + ``.mtl`` + ``.png``: vertices, UVs and faces as the mesh holds them."""
    mesh.visual.material.image.convert("RGB").save(folder / f"{name}.png")
    (folder / f"{name}.mtl").write_text(f"newmtl material_0\nKd 1 1 1\nmap_Kd {name}.png\n")
    lines = [f"mtllib {name}.mtl", "usemtl material_0"]
    lines += [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in mesh.vertices]
    lines += [f"vt {a:.6f} {b:.6f}" for a, b in mesh.visual.uv]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in mesh.faces]
    (folder / f"{name}.obj").write_text("\n".join(lines) + "\n")


def _parts(scene) -> dict[str, tuple[trimesh.Trimesh, np.ndarray]]:
    """obj_id -> (textured mesh in the part's own frame, part frame -> box object frame [4,4])."""
    m, top = scene.object_mesh, scene.top_mask
    out = {}
    for oid, sel in ((BOTTOM, ~top), (LID, top)):
        keep = sel[np.asarray(m.faces)].all(axis=1)
        sub = m.submesh([np.nonzero(keep)[0]], append=True)
        centre = np.zeros(3) if oid == BOTTOM else sub.vertices.mean(axis=0)
        sub.apply_translation(-centre)
        out[oid] = (sub, _T(centre))
    return out


def _tensor(x):
    import torch

    return torch.tensor(np.asarray(x, np.float32))


def intrinsics() -> np.ndarray:
    """[3,3] K of every demo camera: 848 x 480 with a 60-degree vertical field of view (f = 416 px),
    so the hand-over (about 0.45 m wide at 0.6 m) fits inside the frame and crops need no padding."""
    f = (H / 2) / np.tan(np.deg2rad(30))
    return np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])


def camera_poses(scene, n_frames: int) -> dict[str, np.ndarray]:
    """camera name -> [n_frames,4,4] camera -> scene (OpenCV axes) at the image frames: three
    static allocentric cameras on the scene's arc, and the egocentric one on a moving head."""
    out = {c: np.repeat(P[None], n_frames, axis=0) for c, P in zip(list(CAMERAS)[:3], scene.camera_poses(3), strict=True)}
    out["egocentric"] = np.stack([look_at_opencv(CENTRE + [0.06 * np.sin(3 * s) - 0.02, -0.42, -0.28 + 0.04 * s],
                                           CENTRE + [0, 0.02, 0]) for s in np.linspace(0, 1, n_frames)])
    return out


def foreground_masks(n_frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    """camera name -> bool [n_frames,H,W]: the hands' and the box's pixels in each image of the
    demo ``make_demo(n_frames, seed)`` writes (the static can left out), for the tests."""
    from pipeline.hoi.demo.foreground import render_foreground

    scene = handover_scene(MOCAP_PER_IMAGE * (n_frames - 1) + 1, seed)
    K = intrinsics()
    try:
        return {c: np.stack([render_foreground(scene, P[k], K, W, H, k * MOCAP_PER_IMAGE) for k in range(n_frames)])
                for c, P in camera_poses(scene, n_frames).items()}
    finally:
        scene.close()


def make_demo(out: Path, n_frames: int = 12, seed: int = 0) -> Path:
    """Write the demo under ``out`` (the OakInk2 root); returns ``out``."""
    import pyrender

    out = Path(out)
    n_mocap = MOCAP_PER_IMAGE * (n_frames - 1) + 1
    scene = handover_scene(n_mocap, seed)
    mocap_ids = [FIRST_FRAME + i for i in range(n_mocap)]
    image_ids = mocap_ids[::MOCAP_PER_IMAGE]
    # objects: box bottom, lid (own frame), static can; poses part -> world per mocap frame
    parts = _parts(scene)
    v, uv, f = _can(radius=0.033, height=0.12)
    can = trimesh.Trimesh(v, f, process=False)
    can.visual = trimesh.visual.ColorVisuals(can, vertex_colors=np.tile([40, 120, 200, 255], (len(v), 1)))
    can_pose = _T(CAN_AT) @ np.diag([1.0, -1.0, -1.0, 1.0])                  # upright (+y = world up)
    transf = {BOTTOM: {}, LID: {}, CAN: {}}
    for i, fid in enumerate(mocap_ids):
        poses = scene.part_poses(i)
        transf[BOTTOM][fid] = WORLD_FROM_SCENE @ poses["bottom"] @ parts[BOTTOM][1]
        transf[LID][fid] = WORLD_FROM_SCENE @ poses["top"] @ parts[LID][1]
        transf[CAN][fid] = WORLD_FROM_SCENE @ can_pose
    models = out / "object_raw" / "align_ds"
    for oid, (mesh, _) in parts.items():
        (models / oid).mkdir(parents=True, exist_ok=True)
        _write_textured_obj(models / oid, "model", mesh)
    (models / CAN).mkdir(parents=True, exist_ok=True)
    can.export(models / CAN / "model.ply")
    (out / "object_raw" / "obj_desc.json").write_text(json.dumps(
        {BOTTOM: {"obj_id": BOTTOM, "obj_name": "box_bottom"}, LID: {"obj_id": LID, "obj_name": "box_lid"},
         CAN: {"obj_id": CAN, "obj_name": "can"}}, indent=1))
    # hands: manotorch quat mode, wrist-centred translation, world frame
    raw_mano = {fid: {} for fid in mocap_ids}
    for side, p in (("left", "lh"), ("right", "rh")):
        model = standin_hand(side)
        pose, trans, betas = scene.hands[side]
        pw, tw = transform_mano(model, pose, trans, betas, WORLD_FROM_SCENE)
        quat = Rotation.from_rotvec(pw.reshape(-1, 3)).as_quat().reshape(-1, 16, 4)[..., [3, 0, 1, 2]]   # w first
        wrist = tw + model.rest_root(betas)
        for i, fid in enumerate(mocap_ids):
            raw_mano[fid].update({f"{p}__pose_coeffs": _tensor(quat[i][None]), f"{p}__tsl": _tensor(wrist[i][None]),
                                  f"{p}__betas": _tensor(betas[None])})
    ident = np.array([1.0, 0, 0, 0])
    raw_smplx = {fid: {"body_shape": _tensor(np.zeros((1, 300))), "expr_shape": _tensor(np.zeros((1, 10))),
                       "jaw_pose": _tensor(ident[None, None]), "leye_pose": _tensor(ident[None, None]),
                       "reye_pose": _tensor(ident[None, None]), "world_rot": _tensor(ident[None]),
                       "world_tsl": _tensor(np.zeros((1, 3))), "body_pose": _tensor(np.tile(ident, (1, 21, 1))),
                       "left_hand_pose": _tensor(np.tile(ident, (1, 15, 1))),
                       "right_hand_pose": _tensor(np.tile(ident, (1, 15, 1)))} for fid in mocap_ids}
    K = intrinsics()
    c2s = camera_poses(scene, n_frames)
    cam_intr = {c: {fid: K.copy() for fid in image_ids} for c in CAMERAS}
    cam_extr = {c: {fid: np.linalg.inv(WORLD_FROM_SCENE @ c2s[c][k]) for k, fid in enumerate(image_ids)} for c in CAMERAS}
    anno = {"cam_def": {s: c for c, s in CAMERAS.items()}, "cam_selection": list(CAMERAS), "frame_id_list": image_ids,
            "cam_intr": cam_intr, "cam_extr": cam_extr, "mocap_frame_id_list": mocap_ids,
            "obj_list": [BOTTOM, LID, CAN], "obj_transf": transf, "raw_smplx": raw_smplx, "raw_mano": raw_mano}
    (out / "anno_preview").mkdir(parents=True, exist_ok=True)
    with open(out / "anno_preview" / f"{TOKEN}.pkl", "wb") as fh:
        pickle.dump(anno, fh)
    _write_program(out, mocap_ids)
    # images: the scene's renderer plus the can
    _, pyscene, *_ = scene._renderer(W, H)
    pyscene.add(pyrender.Mesh.from_trimesh(can, smooth=False), pose=can_pose)
    try:
        for c, serial in CAMERAS.items():
            folder = out / "data" / TOKEN / serial
            folder.mkdir(parents=True, exist_ok=True)
            for k, fid in enumerate(image_ids):
                img = scene.render_rgb(c2s[c][k], K, W, H, k * MOCAP_PER_IMAGE)
                Image.fromarray(img).save(folder / f"{fid:06d}.png")
    finally:
        scene.close()
    return out


def _write_program(out: Path, mocap_ids: list[int]) -> None:
    """program/: one bimanual primitive over the whole sequence (the toolkit's key format)."""
    span = (mocap_ids[0], mocap_ids[-1])
    key = str((span, span))
    prog = out / "program"
    for sub in ("program_info", "desc_info", "initial_condition_info", "pdg"):
        (prog / sub).mkdir(parents=True, exist_ok=True)
    (prog / "task_target.json").write_text(json.dumps({SEQ_KEY: "hand the box over and open it"}))
    (prog / "program_info" / f"{TOKEN}.json").write_text(json.dumps({key: {
        "primitive": "pass_over", "obj_list": [BOTTOM, LID], "interaction_mode": "bh_main",
        "primitive_lh": "receive", "primitive_rh": "pass_over", "obj_list_lh": [BOTTOM, LID],
        "obj_list_rh": [BOTTOM, LID]}}))
    (prog / "desc_info" / f"{TOKEN}.json").write_text(json.dumps({key: {"seg_desc": "pass the box to the left hand"}}))
    (prog / "initial_condition_info" / f"{TOKEN}.json").write_text(json.dumps(
        {"initial_condition": ["the box is in the right hand"], "recipe": ["the box is in the left hand"]}))
    (prog / "pdg" / f"{TOKEN}.json").write_text(json.dumps({"id_map": {key: 0}, "v": [0], "e": []}))
