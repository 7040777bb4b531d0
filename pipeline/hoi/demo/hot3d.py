"""``make-demo-hoi --layout hot3d``: a small synthetic dataset in the exact HOT3D-Clips layout
(facebookresearch/hot3d ``hot3d/clips``; see ``pipeline.hoi.datasets.hot3d``).

The scene is ``demo.scene.handover_scene`` (two stand-in hands, not MANO; a box passed from the
right hand to the left; rigid here: HOT3D's objects have no parts) plus a can standing still
next to it, seen by a moving Aria headset, written the way HOT3D-Clips stores a clip:
  * ``train_aria/clip-<CLIP_ID>.tar`` with, per frame ``<frame:06d>``: ``image_214-1.jpg`` (RGB,
    ``RGB_SIZE``), ``image_1201-1.jpg`` / ``image_1201-2.jpg`` (grey SLAM cameras, ``SLAM_SIZE``),
    ``cameras.json``, ``hands.json``, ``hand_crops.json`` (no crop cameras), ``objects.json``,
    ``info.json``; and ``__hand_shapes.json__``;
  * images are **fisheye** (``FISHEYE624``, Aria's 15 ``projection_params``: f, cx, cy and 12
    coefficients -- ``COEFFS``, the real ones of the toolkit's Quest 3 sample calibration,
    ``data_loaders/tests/data_sample/Quest3/.../camera_models.json``) and in the **sensor's
    orientation**: the upright view is ``np.rot90(image, k=3)`` of it, as ``vis_clips.py`` shows
    it. They are rendered through the model's inverse: each pixel's ray (``Fisheye624.unproject``)
    sampled from a wide pinhole render; rays past ``MAX_ANGLE`` (and past the distortion's
    fold) are black, like the lens's dark corners;
  * world = a z-up world (``WORLD_FROM_SCENE``); ``T_world_from_camera`` of every stream, every
    frame (the head moves); ``T_device_from_camera`` (the RGB camera is the device frame);
  * hands: ``mano_pose`` ``thetas`` = 15 PCA coefficients of the stand-in's ``hands_components``
    (the scene's finger pose projected on the first 15 components, and *that* pose is what the
    images show), ``wrist_xform`` = global axis-angle + smplx ``transl``; ``umetrack_pose``
    (``joint_angles`` zeros, ``T_world_from_wrist``) is present because the toolkit reads MANO
    only where it is; one ``mano`` betas for both hands in ``__hand_shapes.json__`` (its
    ``umetrack`` entry has the fields ``from_json`` reads, zero-filled: not a UmeTrack hand);
  * ``objects.json``: ``T_world_from_object`` of both objects (bop ids ``BOX_ID``, ``CAN_ID``),
    empty box/mask/visibility maps; ``object_models/obj_<id:06d>.glb`` (metres, textured box).
The root's ``clip_definitions.json`` / ``clip_splits.json`` are not written (no official code
reads them, so their format is not pinned).
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from pipeline.hands.model import standin_hand, transform_mano
from pipeline.hoi.datasets.hot3d_camera import R_UPRIGHT, Fisheye624
from pipeline.hoi.demo.objects import _can, _texture
from pipeline.hoi.demo.scene import CENTRE, handover_scene, look_at_opencv

CLIP_ID = 1849
RGB, SLAM = "214-1", ("1201-1", "1201-2")
RGB_SIZE, SLAM_SIZE = 352, (160, 120)            # Aria's 1408 x 1408 RGB / 640 x 480 SLAM, scaled by 1/4
RGB_F = 152.5                                    # Aria's ~610 px focal, scaled
SLAM_F = 60.0
COEFFS = (0.043982941657304764, -0.0448598638176918, 0.01613209955394268, -0.010928832925856113,
          0.003512823488563299, -0.0005242147017270327, 0.00047754947445355356, -4.744782927446067e-05,
          0.0, 0.0, 0.0, 0.0)
MAX_ANGLE = np.deg2rad(66.0)                     # rays further from the axis are not rendered (black)
BOX_ID, CAN_ID = 3, 17
WORLD_FROM_SCENE = np.array([[1.0, 0, 0, 0.3], [0, 0, 1, -0.2], [0, -1, 0, 0.9], [0, 0, 0, 1]])
CAN_AT = CENTRE + np.array([-0.17, 0.1, 0.05])
SLAM_YAW = np.deg2rad(25.0)
BETAS = np.array([0.4, -0.2, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])   # one MANO shape for both hands


def _quat_trans(M: np.ndarray) -> dict:
    x, y, z, w = Rotation.from_matrix(M[:3, :3]).as_quat()
    return {"translation_xyz": [float(a) for a in M[:3, 3]], "quaternion_wxyz": [float(w), float(x), float(y), float(z)]}



def _R4(R: np.ndarray) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = R
    return M


def cameras() -> dict[str, tuple[Fisheye624, str, np.ndarray]]:
    """stream -> (fisheye model, label, upright camera -> device [4,4]); the device frame is the
    RGB camera's upright frame."""
    rgb = Fisheye624((RGB_SIZE, RGB_SIZE), (RGB_F, RGB_F), ((RGB_SIZE - 1) / 2 + 2.4, (RGB_SIZE - 1) / 2 - 1.7), COEFFS)
    out = {RGB: (rgb, "camera-rgb", np.eye(4))}
    w, h = SLAM_SIZE
    for stream, sign, label in ((SLAM[0], -1, "camera-slam-left"), (SLAM[1], 1, "camera-slam-right")):
        cam = Fisheye624((w, h), (SLAM_F, SLAM_F), ((w - 1) / 2, (h - 1) / 2), COEFFS)
        M = _R4(Rotation.from_rotvec([0.0, sign * SLAM_YAW, 0.0]).as_matrix())
        M[:3, 3] = [sign * 0.05, 0.0, 0.0]
        out[stream] = (cam, label, M)
    return out


def wide_size(f: float) -> int:
    """Side of the square pinhole render (focal ``f``) that holds every ray up to ``MAX_ANGLE``."""
    return 2 * (int(np.ceil(f * np.tan(MAX_ANGLE))) + 2) + 1


@functools.lru_cache(maxsize=4)
def _pixel_rays(cam: Fisheye624) -> tuple[np.ndarray, np.ndarray]:
    """(unit rays [H,W,3] of every pixel of ``cam``, rendered [H,W] bool: a ray within ``MAX_ANGLE``)."""
    W, H = cam.size
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    ray = cam.unproject(np.stack([u, v], axis=-1))
    ok = np.isfinite(ray).all(axis=-1)
    ok[ok] &= np.arccos(np.clip(ray[ok][:, 2], -1, 1)) < MAX_ANGLE
    return ray, ok


def render_fisheye(scene, cam: Fisheye624, T_scene_from_upright: np.ndarray, frame: int, grey: bool) -> np.ndarray:
    """uint8 image of ``cam`` in the sensor's orientation at ``frame``: each pixel's ray (sensor
    frame, turned into the upright camera by ``R_UPRIGHT``) sampled from a wide pinhole render of
    the upright camera (``T_scene_from_upright``; the scene's painted backdrop stays upright
    there); black past ``MAX_ANGLE`` or the distortion's fold."""
    ray, ok = _pixel_rays(cam)
    f, n = cam.f[0], wide_size(cam.f[0])
    half = (n - 1) / 2
    K = np.array([[f, 0.0, half], [0.0, f, half], [0.0, 0.0, 1.0]])
    wide = scene.render_rgb(T_scene_from_upright, K, n, n, frame).astype(np.float32)
    r = np.where(ok[..., None], ray, [0.0, 0.0, 1.0]) @ R_UPRIGHT.T
    x, y = f * r[..., 0] / r[..., 2] + half, f * r[..., 1] / r[..., 2] + half
    img = np.stack([map_coordinates(wide[..., k], [y, x], order=1, mode="nearest") for k in range(3)], axis=-1)
    img[~ok] = 0.0
    if grey:
        img = img @ np.array([0.299, 0.587, 0.114])
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _glb(mesh: trimesh.Trimesh) -> bytes:
    return trimesh.Scene(mesh).export(file_type="glb")


def _umetrack_placeholder() -> dict:
    """The fields ``umetrack_hand_model.from_json`` reads, zero-filled (not a UmeTrack hand)."""
    return {"joint_rotation_axes": np.zeros((22, 3)).tolist(), "joint_rest_positions": np.zeros((22, 3)).tolist(),
            "joint_frame_index": list(range(22)), "joint_parent": [-1] + list(range(21)),
            "joint_first_child": [-1] * 22, "joint_next_sibling": [-1] * 22,
            "landmark_rest_positions": np.zeros((21, 3)).tolist(), "landmark_rest_bone_weights": np.zeros((21, 4)).tolist(),
            "landmark_rest_bone_indices": np.zeros((21, 4), int).tolist()}


def project_hands(scene, betas: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Put the scene's hands in HOT3D's form: one ``betas`` for both, fingers on the first 15 PCA
    components (the scene's hands are changed to that, so the images show it). Returns side ->
    (thetas [T,15], wrist_xform [T,6] in the world)."""
    out = {}
    for side in ("left", "right"):
        model = standin_hand(side)
        pose, trans, _ = scene.hands[side]
        comps = model.hands_components[:15]
        thetas = (pose[:, 3:] - model.hands_mean) @ np.linalg.pinv(comps)
        pose = np.concatenate([pose[:, :3], thetas @ comps + model.hands_mean], axis=1)
        scene.hands[side] = (pose, trans, betas)
        pw, tw = transform_mano(model, pose, trans, betas, WORLD_FROM_SCENE)
        out[side] = (thetas, np.concatenate([pw[:, :3], tw], axis=1))
    return out


def head_poses(n_frames: int) -> list[np.ndarray]:
    """[4,4] upright RGB camera (= device) -> scene per frame: a head moving and turning a little."""
    return [look_at_opencv(CENTRE + [0.06 * np.sin(2.5 * s) - 0.03, -0.3 + 0.03 * s, -0.2],
                     CENTRE + [0.02 * np.cos(3 * s), 0.03, 0.0]) for s in np.linspace(0, 1, n_frames)]


def _scene(n_frames: int, seed: int):
    scene = handover_scene(n_frames, seed)
    scene.articulation[:] = 0.0                   # rigid objects
    return scene, project_hands(scene, BETAS)


def foreground_masks(n_frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    """stream -> bool [n_frames, w, h]: the hands' and the box's pixels (the can left out) as a
    *pinhole* camera sees them from each stream's upright camera, with the focal and centre of
    the stream's calibration turned upright (fx' = fy, cx' = h - 1 - cy, cy' = cx) -- what the
    adapter's undistorted, upright frames should show; for the tests."""
    from pipeline.hoi.demo.foreground import render_foreground

    scene, _ = _scene(n_frames, seed)
    out = {}
    try:
        for stream, (cam, _, up_to_dev) in cameras().items():
            w, h = cam.size
            K = np.array([[cam.f[1], 0.0, h - 1 - cam.c[1]], [0.0, cam.f[0], cam.c[0]], [0.0, 0.0, 1.0]])
            out[stream] = np.stack([render_foreground(scene, P @ up_to_dev, K, h, w, fr)
                                    for fr, P in enumerate(head_poses(n_frames))])
    finally:
        scene.close()
    return out


def make_demo(out: Path, n_frames: int = 12, seed: int = 0) -> Path:
    """Write the demo under ``out`` (the HOT3D-Clips root); returns ``out``."""
    out = Path(out)
    scene, hands = _scene(n_frames, seed)
    betas = BETAS
    models = out / "object_models"
    models.mkdir(parents=True, exist_ok=True)
    v, uv, f = _can(radius=0.033, height=0.12)
    can = trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv, image=_texture("can")), process=False)
    (models / f"obj_{BOX_ID:06d}.glb").write_bytes(_glb(scene.object_mesh))
    (models / f"obj_{CAN_ID:06d}.glb").write_bytes(_glb(can))
    can_pose = np.eye(4)
    can_pose[:3, :3], can_pose[:3, 3] = np.diag([1.0, -1.0, -1.0]), CAN_AT
    head = head_poses(n_frames)
    cams = cameras()
    files: list[tuple[str, bytes]] = []
    try:
        for fr in range(n_frames):
            key = f"{fr:06d}"
            cam_json = {}
            for stream, (cam, label, up_to_dev) in cams.items():
                s_from_up = head[fr] @ up_to_dev
                s_from_sensor = s_from_up @ _R4(R_UPRIGHT)                    # x_up = R_UPRIGHT x_sensor
                W, H = cam.size
                _, ps, *_ = scene._renderer(wide_size(cam.f[0]), wide_size(cam.f[0]))
                _add_can(ps, can, can_pose)
                img = render_fisheye(scene, cam, s_from_up, fr, grey=stream != RGB)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=92)
                files.append((f"{key}.image_{stream}.jpg", buf.getvalue()))
                params = [cam.f[0], cam.c[0], cam.c[1], *cam.coeffs]
                cam_json[stream] = {"calibration": {
                    "label": label, "stream_id": stream, "serial_number": f"demo-{stream}", "image_width": W,
                    "image_height": H, "projection_model_type": "CameraModelType.FISHEYE624",
                    "projection_params": params, "T_device_from_camera": _quat_trans(up_to_dev @ _R4(R_UPRIGHT)),
                    "max_solid_angle": float(MAX_ANGLE)},
                    "T_world_from_camera": _quat_trans(WORLD_FROM_SCENE @ s_from_sensor)}
            files.append((f"{key}.cameras.json", json.dumps(cam_json).encode()))
            hand_json = {}
            for side, (thetas, wx) in hands.items():
                wrist = WORLD_FROM_SCENE @ _R4(Rotation.from_rotvec(scene.hands[side][0][fr, :3]).as_matrix())
                wrist[:3, 3] = WORLD_FROM_SCENE[:3, :3] @ (scene.hands[side][1][fr]
                                                           + standin_hand(side).rest_root(betas)) + WORLD_FROM_SCENE[:3, 3]
                hand_json[side] = {"mano_pose": {"thetas": thetas[fr].tolist(), "wrist_xform": wx[fr].tolist()},
                                   "umetrack_pose": {"joint_angles": [0.0] * 20, "T_world_from_wrist": _quat_trans(wrist)},
                                   "boxes_amodal": {}, "visibilities_modeled": {}}
            files.append((f"{key}.hands.json", json.dumps(hand_json).encode()))
            files.append((f"{key}.hand_crops.json", json.dumps({"left": {}, "right": {}}).encode()))
            objs = {}
            for bop, P in ((BOX_ID, scene.object_poses[fr]), (CAN_ID, can_pose)):
                objs[str(bop)] = [{"object_bop_id": bop, "T_world_from_object": _quat_trans(WORLD_FROM_SCENE @ P),
                                   "boxes_amodal": {}, "masks_amodal": {}, "masks_modal": {},
                                   "visibilities_modeled": {}, "visibilities_predicted": {}}]
            files.append((f"{key}.objects.json", json.dumps(objs).encode()))
            files.append((f"{key}.info.json", json.dumps({"device": "Aria", "frame_id": fr}).encode()))
    finally:
        scene.close()
    files.append(("__hand_shapes.json__", json.dumps({"mano": betas.tolist(), "umetrack": _umetrack_placeholder()}).encode()))
    folder = out / "train_aria"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / f"clip-{CLIP_ID:06d}.tar", "w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def _add_can(pyscene, can: trimesh.Trimesh, pose: np.ndarray) -> None:
    """Add the can to a (cached) pyrender scene of the shared scene's renderer, once."""
    import pyrender

    if not any(n.name == "demo-can" for n in pyscene.nodes):
        pyscene.add(pyrender.Mesh.from_trimesh(can, smooth=False), pose=pose, name="demo-can")
