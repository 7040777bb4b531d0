"""``make-demo-hoi``: a small synthetic dataset in the exact DexYCB on-disk layout.

One subject, one sequence of ``n_frames`` frames, two cameras (640x480), two YCB-like
textured objects (a can, grasped and moving; a box, static and never grasped, which belongs
in the background reference), two stand-in hands (not MANO) holding the can,
the right hand's fingers wrapping behind it; the left hand is not annotated in the last
two frames (all-zero ``pose_m``, absent from the images). The scene moves (rotation about
the can's axis, a small drift, fingers closing).

Colour images come from pyrender (MSAA, textured, lit) over a synthetic room background;
``seg`` and ``aligned_depth_to_color`` from the project's exact layer renderer. Hand
poses are written the DexYCB way: ``pose_m`` = 3 global axis-angle + 45 PCA coefficients
(``pca = (pose - hands_mean) @ hands_components^-1`` with the stand-in's orthogonal
components, so reading them back with ``pca @ hands_components + hands_mean`` round-trips)
+ 3 translation (m); world = the master camera's OpenCV frame. ``joint_3d``/``joint_2d``
are written per camera the way manopth makes them (``HandModel.forward``: 16 skeleton joints
+ the side's fingertip vertices, manopth's order; metres, camera frame) and projected with
K as is (RealSense/OpenCV: pixel i's centre at i); a hand without annotation gets all -1.
``pose.npz`` holds the world-frame ``pose_y`` [F,n_obj,7] (quaternion xyzw + t) and
``pose_m`` [F,n_hands,51] of the sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from scipy.spatial.transform import Rotation

from pipeline.hands.model import standin_hand, transform_mano
from pipeline.hands.standin import mirror_pose
from pipeline.hoi.datasets.dexycb import HAND_SEG, YCB_CLASSES
from pipeline.hoi.demo.objects import write_model
from pipeline.hoi.demo.scene import add_lights, room_background

SUBJECT, SEQUENCE = "20200709-subject-01", "20200709_141754"
SERIALS = ("836212060125", "839512060362")
EXTRINSICS = "20200702_151821"
MANO_CALIB = {"left": "20200709_140042_subject-01_left", "right": "20200709_140042_subject-01_right"}
YCB_IDS, GRASP = (1, 2), 0
FX = FY = 615.0
PPX, PPY = 319.5, 239.5
W, H = 640, 480
BETAS = np.array([0.6, -0.4, 0.3, 0.2, 0, 0, 0, 0, 0, 0])
CAN_CENTRE = np.array([0.0, 0.0, 0.7])
R_RIGHT = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # model -> world: fingers +z, palm -x


def _camera_poses() -> list[np.ndarray]:
    """Camera-to-world [4,4], OpenCV axes; camera 0 is the master (identity)."""
    poses = [np.eye(4)]
    eye = np.array([0.32, -0.12, 0.12])
    z = CAN_CENTRE - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, -1.0, 0.0])
    x /= np.linalg.norm(x)
    P = np.eye(4)
    P[:3, 0], P[:3, 1], P[:3, 2], P[:3, 3] = x, np.cross(z, x), z, eye
    poses.append(P)
    return poses


def _scene_motion(f: int, n: int) -> np.ndarray:
    """World transform [4,4] applied to the whole hand-object group at frame f."""
    s = f / max(n - 1, 1)
    G = np.eye(4)
    G[:3, :3] = Rotation.from_rotvec([0.0, 0.5 * s - 0.2, 0.0]).as_matrix()
    G[:3, 3] = CAN_CENTRE - G[:3, :3] @ CAN_CENTRE + [0.03 * s, -0.02 * s, 0.0]
    return G


def hand_params(f: int, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """side -> (pose [48] absolute, trans [3]) in the world frame at frame f."""
    s = f / max(n - 1, 1)
    G = _scene_motion(f, n)
    out = {}
    for side in ("right", "left"):
        h = standin_hand(side)
        flex = np.zeros((15, 3))
        flex[:12, 2] = -(0.45 + 0.2 * s)          # fingers close (right-hand axes)
        flex[12:, 1] = 0.3
        fingers = flex.reshape(45)
        glob = Rotation.from_matrix(R_RIGHT).as_rotvec()
        trans = np.array([0.058, -0.01, 0.6])
        if side == "left":
            fingers, glob = mirror_pose(fingers), mirror_pose(glob)
            trans = np.array([-0.058, 0.035, 0.6])
        pose = np.concatenate([glob, fingers + h.hands_mean])[None]
        p, t = transform_mano(h, pose, trans[None], BETAS, G)
        out[side] = (p[0], t[0])
    return out


def make_demo(out: Path, n_frames: int = 12, seed: int = 0) -> Path:
    """Write the dataset under ``out`` (created); returns ``out``."""
    import pyrender
    import trimesh

    from pipeline.render.context import GLContext
    from pipeline.render.layers import Draw, LayerRenderer
    from pipeline.render.mlo import vertex_normals

    out = Path(out)
    rng = np.random.default_rng(seed)
    seq_dir = out / SUBJECT / SEQUENCE
    classes = [YCB_CLASSES[i - 1] for i in YCB_IDS]
    meshes = [trimesh.load(write_model(out / "models", c), process=False) for c in classes]
    obj_world0 = [np.eye(4), np.eye(4)]
    obj_world0[0][:3, 3] = CAN_CENTRE
    obj_world0[1][:3, :3] = Rotation.from_rotvec([0, 0.4, 0]).as_matrix()
    obj_world0[1][:3, 3] = CAN_CENTRE + [0.02, -0.01, 0.2]
    cams = _camera_poses()
    K = np.array([[FX, 0, PPX], [0, FY, PPY], [0, 0, 1]])
    _write_calibration(out, cams)
    meta = {"serials": list(SERIALS), "num_frames": n_frames, "ycb_ids": list(YCB_IDS), "ycb_grasp_ind": GRASP,
            "mano_sides": ["left", "right"], "mano_calib": [MANO_CALIB["left"], MANO_CALIB["right"]],
            "extrinsics": EXTRINSICS, "pcd_depth": 0}
    seq_dir.mkdir(parents=True, exist_ok=True)
    (seq_dir / "meta.yml").write_text(yaml.safe_dump(meta))

    ctx = GLContext(W)
    ctx.pyrender.viewport_width, ctx.pyrender.viewport_height = W, H
    layers = LayerRenderer(ctx, W, near=0.05, far=10.0)
    scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[0.35, 0.35, 0.35])
    obj_nodes = [scene.add(pyrender.Mesh.from_trimesh(m, smooth=False)) for m in meshes]
    cam_node = scene.add(pyrender.IntrinsicsCamera(FX, FY, PPX + 0.5, PPY + 0.5, znear=0.05, zfar=10.0))
    add_lights(scene, cam_node)
    for k, m in enumerate(meshes):
        layers.upload(f"obj{k}", m.vertices, m.vertex_normals, m.faces)
    backgrounds = [room_background(W, H, rng) for _ in cams]
    pose_y_w = np.zeros((n_frames, len(meshes), 7), np.float32)
    pose_m_w = np.zeros((n_frames, 2, 51), np.float32)
    K_gl = K.copy()
    K_gl[:2, 2] += 0.5
    gl = np.diag([1.0, -1.0, -1.0, 1.0])
    try:
        for f in range(n_frames):
            G = _scene_motion(f, n_frames)
            objs = [G @ obj_world0[0], obj_world0[1]]  # the can moves with the hands; the box stays put
            params = hand_params(f, n_frames)
            valid = {"right": True, "left": f < n_frames - 2}
            for k, P in enumerate(objs):
                pose_y_w[f, k] = np.concatenate([Rotation.from_matrix(P[:3, :3]).as_quat(), P[:3, 3]])
            hand_nodes, hand_verts = [], {}
            for h, side in enumerate(("left", "right")):
                if not valid[side]:
                    continue
                model = standin_hand(side)
                pose, trans = params[side]
                pose_m_w[f, h] = np.concatenate([pose[:3], model.pose_to_pca(pose[None])[0], trans])
                v, _ = model.forward(pose[None], BETAS, trans[None])
                hand_verts[side] = v[0]
                tm = trimesh.Trimesh(v[0], model.faces, process=False)
                tm.visual.vertex_colors = (230, 180, 150, 255) if side == "right" else (210, 160, 130, 255)
                hand_nodes.append(scene.add(pyrender.Mesh.from_trimesh(tm, smooth=True)))
            for node, P in zip(obj_nodes, objs, strict=True):
                scene.set_pose(node, P)
            for c, serial in enumerate(SERIALS):
                cam_dir = seq_dir / serial
                cam_dir.mkdir(exist_ok=True)
                world_to_cam = np.linalg.inv(cams[c])
                scene.set_pose(cam_node, cams[c] @ gl)
                rgba, _ = ctx.pyrender.render(scene, flags=pyrender.RenderFlags.RGBA)
                alpha = rgba[..., 3:4] / 255.0
                img = rgba[..., :3] + backgrounds[c] * (1 - alpha)
                Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)).save(cam_dir / f"color_{f:06d}.jpg",
                                                                                  quality=95)
                # exact seg / depth: each object and hand alone, nearest wins
                tiles, ids = [], []
                for k, P in enumerate(objs):
                    tiles.append([Draw(f"obj{k}", gl @ world_to_cam @ P)])
                    ids.append(YCB_IDS[k])
                for side, v in hand_verts.items():
                    model = standin_hand(side)
                    vc = v @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
                    layers.upload(f"hand_{side}", vc * [1, -1, -1], vertex_normals(vc, model.faces), model.faces)
                    tiles.append([Draw(f"hand_{side}", np.eye(4))])
                    ids.append(HAND_SEG)
                _, dep = layers.render(tiles, K_gl)
                dep = dep[:, :H]
                far = np.where(dep > 0, dep, np.inf)
                nearest = far.min(axis=0)
                seg = np.where(np.isfinite(nearest), np.array(ids)[far.argmin(axis=0)], 0).astype(np.uint8)
                depth_mm = np.where(np.isfinite(nearest), np.round(nearest * 1000), 0).astype(np.uint16)
                Image.fromarray(depth_mm).save(cam_dir / f"aligned_depth_to_color_{f:06d}.png")
                _write_labels(cam_dir / f"labels_{f:06d}.npz", seg, objs, world_to_cam, pose_m_w[f], K)
            for node in hand_nodes:
                scene.remove_node(node)
    finally:
        ctx.close()
    np.savez_compressed(seq_dir / "pose.npz", pose_y=pose_y_w, pose_m=pose_m_w)
    return out


def _write_labels(path: Path, seg, objs, world_to_cam, pose_m_world, K) -> None:
    pose_y = np.stack([(world_to_cam @ P)[:3] for P in objs]).astype(np.float32)
    pose_m = np.zeros((2, 51), np.float32)
    j3 = np.full((2, 21, 3), -1.0, np.float32)
    j2 = np.full((2, 21, 2), -1.0, np.float32)
    for h, side in enumerate(("left", "right")):
        p = pose_m_world[h].astype(np.float64)
        if not np.abs(p).any():
            continue
        model = standin_hand(side)
        pose = model.pca_to_pose(p[None, :3], p[None, 3:48])
        pose_c, trans_c = transform_mano(model, pose, p[None, 48:], BETAS, world_to_cam)
        pose_m[h] = np.concatenate([pose_c[0, :3], p[3:48], trans_c[0]])
        _, joints = model.forward(pose_c, BETAS, trans_c)
        j3[h] = joints[0]
        j2[h] = np.stack([K[0, 0] * joints[0, :, 0] / joints[0, :, 2] + K[0, 2],
                          K[1, 1] * joints[0, :, 1] / joints[0, :, 2] + K[1, 2]], axis=1)
    np.savez_compressed(path, seg=seg, pose_y=pose_y, pose_m=pose_m, joint_3d=j3, joint_2d=j2)


def _write_calibration(out: Path, cams: list[np.ndarray]) -> None:
    cal = out / "calibration"
    for serial in SERIALS:
        d = cal / "intrinsics"
        d.mkdir(parents=True, exist_ok=True)
        intr = {"fx": FX, "fy": FY, "ppx": PPX, "ppy": PPY}
        (d / f"{serial}_640x480.yml").write_text(yaml.safe_dump({"color": intr, "depth": intr}))
    d = cal / f"extrinsics_{EXTRINSICS}"
    d.mkdir(parents=True, exist_ok=True)
    extr = {s: [float(x) for x in P[:3].reshape(-1)] for s, P in zip(SERIALS, cams, strict=True)}
    (d / "extrinsics.yml").write_text(yaml.safe_dump({"extrinsics": extr, "master": SERIALS[0]}))
    for calib in MANO_CALIB.values():
        d = cal / f"mano_{calib}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "mano.yml").write_text(yaml.safe_dump({"betas": [float(b) for b in BETAS]}))
