"""``make-demo-hoi --layout taco``: a small synthetic dataset in the exact TACO on-disk layout.

The shared bimanual scene (``demo.scene.handover_scene``: two stand-in hands, not MANO,
both moving, a box passed from the right hand to the left) with its box as the *tool*
(rigid: the lid stays closed) and a can from ``demo.objects`` as the *target*, standing
below the hand-over and turning slowly. One triplet folder, one sequence, two static
allocentric cameras, 640x480. Written the way TACO ships it (see
``pipeline.hoi.datasets.taco``)::

    Hand_Poses/<triplet>/<seq>/{left,right}_hand.pkl      {"00001": {"hand_pose": tensor (48,),
                                                             "hand_trans": tensor (3,)}, ...}
                              /{left,right}_hand_shape.pkl  {"hand_shape": tensor (1,10)}
    Object_Poses/<triplet>/<seq>/tool_<id>.npy, target_<id>.npy   [N,4,4] float32, m
    Object_Models/<id>_cm.obj                                     centimetres, vertex colours
    Allocentric_Camera_Parameters/<triplet>/<seq>/calibration.json {serial: K, R, T, imgSize}
    Allocentric_RGB_Videos/<triplet>/<seq>/<serial>.mp4           H.264, 30 fps
    data_lists/v1_overall_data_train_test_split.txt               "<seq>,train" (the toolkit's list)

Hand files hold torch tensors pickled with plain ``pickle`` (as TACO's are): each frame's
``hand_pose`` is a row view of one [N,48] float32 tensor. ``hand_pose`` is the absolute
axis-angle pose (manopth ``flat_hand_mean=True``) and ``hand_trans`` the *wrist* position
(manopth ``center_idx=0``): the scene's smplx translation plus the stand-in's rest wrist.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from pipeline.hands.model import standin_hand
from pipeline.hoi.datasets.taco import CALIB_DIR, HANDS_DIR, MODELS_DIR, OBJ_DIR, SPLIT_FILE
from pipeline.hoi.demo.objects import _can, _texture
from pipeline.hoi.demo.scene import CENTRE, handover_scene

TRIPLET, SEQUENCE = "(hand over, box, can)", "20231105_019"
SERIALS = ("22139905", "22139908")
TOOL_ID, TARGET_ID = "201", "202"
W, H = 640, 480
TARGET_AT = CENTRE + np.array([0.0, 0.115, 0.03])   # the can stands below the hand-over (y down)


def target_poses(n: int) -> np.ndarray:
    """[n,4,4] target (can) -> world: upright (its +y axis = world up), turning about it."""
    s = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    out = np.tile(np.eye(4), (n, 1, 1))
    for k, x in enumerate(s):
        out[k, :3, :3] = np.diag([1.0, -1.0, -1.0]) @ Rotation.from_rotvec([0.0, 0.6 * x, 0.0]).as_matrix()
        out[k, :3, 3] = TARGET_AT
    return out


def _can_mesh() -> trimesh.Trimesh:
    v, uv, f = _can(radius=0.034, height=0.1)
    return trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv, image=_texture("can")), process=False)


def write_obj_cm(path: Path, mesh: trimesh.Trimesh) -> None:
    """A metre mesh as TACO's ``<id>_cm.obj``: vertices in centimetres with per-vertex
    colours (``v x y z r g b``) sampled from its texture."""
    colours = np.asarray(mesh.visual.to_color().vertex_colors)[:, :3] / 255.0
    lines = [f"v {a * 100:.5f} {b * 100:.5f} {c * 100:.5f} {r:.4f} {g:.4f} {bl:.4f}"
             for (a, b, c), (r, g, bl) in zip(mesh.vertices, colours, strict=True)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    path.write_text("\n".join(lines) + "\n")


def write_hand_files(folder: Path, side: str, pose: np.ndarray, trans: np.ndarray, betas: np.ndarray) -> None:
    """``<side>_hand.pkl`` and ``<side>_hand_shape.pkl`` as TACO ships them (torch tensors).
    ``pose`` [N,48] absolute axis-angle, ``trans`` [N,3] smplx translation (m), world frame."""
    import torch

    wrist = trans + standin_hand(side).rest_root(betas)     # center_idx=0: hand_trans = wrist
    P = torch.tensor(pose, dtype=torch.float32)
    Tr = torch.tensor(wrist, dtype=torch.float32)
    frames = {f"{i + 1:05d}": {"hand_pose": P[i], "hand_trans": Tr[i]} for i in range(len(pose))}
    with open(folder / f"{side}_hand.pkl", "wb") as f:
        pickle.dump(frames, f)
    with open(folder / f"{side}_hand_shape.pkl", "wb") as f:
        pickle.dump({"hand_shape": torch.tensor(betas, dtype=torch.float32).reshape(1, 10)}, f)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> None:
    import imageio_ffmpeg

    w = imageio_ffmpeg.write_frames(str(path), (W, H), fps=fps, codec="libx264", quality=9,
                                    pix_fmt_out="yuv420p", macro_block_size=16)
    w.send(None)
    for im in frames:
        w.send(np.ascontiguousarray(im))
    w.close()


def make_demo(out: Path, n_frames: int = 12, seed: int = 0) -> Path:
    """Write the demo under ``out`` (the TACO root); returns ``out``."""
    import pyrender

    out = Path(out)
    scene = handover_scene(n_frames, seed)
    scene.articulation[:] = 0.0                 # TACO's tool is rigid: the lid stays closed
    n = scene.n_frames
    rel = Path(TRIPLET) / SEQUENCE
    dirs = {k: out / k / rel for k in (HANDS_DIR, OBJ_DIR, CALIB_DIR, "Allocentric_RGB_Videos")}
    for d in [*dirs.values(), out / MODELS_DIR, out / "data_lists"]:
        d.mkdir(parents=True, exist_ok=True)

    can = _can_mesh()
    write_obj_cm(out / MODELS_DIR / f"{TOOL_ID}_cm.obj", scene.object_mesh)
    write_obj_cm(out / MODELS_DIR / f"{TARGET_ID}_cm.obj", can)
    tgt = target_poses(n)
    np.save(dirs[OBJ_DIR] / f"tool_{TOOL_ID}.npy", scene.object_poses.astype(np.float32))
    np.save(dirs[OBJ_DIR] / f"target_{TARGET_ID}.npy", tgt.astype(np.float32))
    for side, (pose, trans, betas) in scene.hands.items():
        write_hand_files(dirs[HANDS_DIR], side, pose, trans, betas)
    (out / "data_lists" / SPLIT_FILE).write_text(f"{SEQUENCE},train\n")

    K = scene.intrinsics(W, H)
    cams = scene.camera_poses(len(SERIALS))
    calib = {}
    for serial, c2w in zip(SERIALS, cams, strict=True):
        E = np.linalg.inv(c2w)
        calib[serial] = {"K": K.tolist(), "R": E[:3, :3].tolist(), "T": E[:3, 3].tolist(), "imgSize": [W, H]}
    (dirs[CALIB_DIR] / "calibration.json").write_text(json.dumps(calib, indent=1))

    # colour videos: the shared scene's renderer plus the target can
    _, pyscene, *_ = scene._renderer(W, H)
    node = pyscene.add(pyrender.Mesh.from_trimesh(can, smooth=False))
    try:
        for serial, c2w in zip(SERIALS, cams, strict=True):
            frames = []
            for f in range(n):
                pyscene.set_pose(node, tgt[f])
                frames.append(scene.render_rgb(c2w, K, W, H, f))
            write_video(dirs["Allocentric_RGB_Videos"] / f"{serial}.mp4", frames)
    finally:
        scene.close()
    return out
