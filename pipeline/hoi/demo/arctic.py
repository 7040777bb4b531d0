"""``make-demo-hoi --layout arctic``: a small synthetic dataset in the exact ARCTIC on-disk layout
(``arctic_data/data`` of github.com/zc-alexfan/arctic, see ``pipeline.hoi.datasets.arctic``).

The scene is ``pipeline.hoi.demo.scene.handover_scene`` (stand-in hands, not MANO; an
articulated box passed from the right hand to the left while its lid opens), written the way
ARCTIC stores a capture:
  * world = a z-up mocap world: ``WORLD_FROM_SCENE`` maps the scene's y-down frame to it;
  * ``raw_seqs/s01/box_grab_01.mano.npy``: per side ``rot``, ``pose`` (relative to the model's
    ``hands_mean``: ARCTIC's ``flat_hand_mean=False``), ``trans`` (m), ``shape`` [10], ``fitting_err``;
  * ``.object.npy`` [F,7]: articulation, axis-angle, translation in mm; the ARCTIC object frame
    is the scene's object frame turned by pi about x (``OBJ_FROM_SCENE``), so the toolkit's
    top rotation about -z by +arti is the scene's lid opening about its +z;
  * ``.egocam.dist.npy`` (a moving head camera, no distortion) and ``.smplx.npy`` (zeros: no
    body model here) for a complete layout; ``meta/misc.json`` (8 allocentric cameras, image
    sizes, ``ioi_offset`` = ``IOI_OFFSET``), ``meta/object_vtemplates/box/`` (mesh.obj in mm,
    parts.json: 0 = the lid, the part the toolkit's code articulates, 1 = the base; top/bottom.obj,
    textured mesh_tex.obj + material, object_params.json, top/bottom_keypoints_300.json),
    ``meta/object_meta.json``, ``splits_json/protocol_p1|p2.json`` (a demo shorter than 20 + T
    frames has no frame inside the splits' 10-image margins);
  * ``images/s01/box_grab_01/<view>/<image:05d>.jpg`` for views 0..8 at ``W`` x ``H``: image
    number = mocap frame + ``IOI_OFFSET``; images 0..IOI_OFFSET-1 are black (no mocap frame);
  * ``processed_seqs/s01/box_grab_01.npy``: what the toolkit's ``process_seqs.py`` writes for
    the joints: ``cam_coord`` ``joints.right/left`` [F,10,21,3] from ``smplx.MANO(use_pca=False,
    flat_hand_mean=False)`` (16 joints + smplx's MANO tips 744, 320, 443, 554, 671), moved
    by each view's world2cam; ``bbox`` [F,9,3] (``toolkit_bbox``); ``params``;
  * ``cropped_images/...``: the frames cut as ``scripts_data/crop_images.py`` does (1000 x 1000
    crops of the 1.5 x loose ``bbox``; the egocentric view scaled by 0.3).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from pipeline.hands.model import standin_hand, transform_mano
from pipeline.hoi.demo.scene import CENTRE, handover_scene, intrinsics, look_at_opencv

SID, SEQ, OBJ = "s01", "box_grab_01", "box"
W, H = 700, 500                   # ARCTIC's 2800 x 2000 allocentric frames, scaled by 1/4
IOI_OFFSET = 2
N_VIEWS = 8
CROP_PX = 1000                    # crop_images.py: cap_dim of the allocentric crops
SMPLX_MANO_TIPS = (744, 320, 443, 554, 671)   # smplx vertex_ids["mano"]: thumb, index, middle, ring, pinky
WORLD_FROM_SCENE = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
OBJ_FROM_SCENE = np.diag([1.0, -1.0, -1.0, 1.0])


def _write_obj(path: Path, v: np.ndarray, f: np.ndarray, uv: np.ndarray | None = None, mtl: str | None = None):
    lines = [f"mtllib {mtl}", "usemtl material_0"] if mtl else []
    lines += [f"v {a:.4f} {b:.4f} {c:.4f}" for a, b, c in v]
    if uv is not None:
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in uv]
        lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in f]
    else:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    path.write_text("\n".join(lines) + "\n")


def _write_object(meta: Path, scene, rng) -> None:
    """meta/object_vtemplates/box/* and meta/object_meta.json (millimetres, ARCTIC object frame)."""
    import trimesh

    d = meta / "object_vtemplates" / OBJ
    d.mkdir(parents=True, exist_ok=True)
    m = scene.object_mesh
    v = (np.asarray(m.vertices) @ OBJ_FROM_SCENE[:3, :3].T) * 1000.0
    f, top = np.asarray(m.faces), scene.top_mask
    _write_obj(d / "mesh.obj", v, f)
    # parts.json as the real dataset has it for the toolkit's code: the articulated part (the lid)
    # is 0, the base 1 (object_tensors.py articulates parts_ids == parts + 1 == 1; its docs say the opposite)
    (d / "parts.json").write_text(json.dumps([0 if x else 1 for x in top]))
    for name, sel in (("top", top), ("bottom", ~top)):
        keep = sel[f].all(axis=1)
        used = np.unique(f[keep])
        remap = np.full(len(v), -1)
        remap[used] = np.arange(len(used))
        _write_obj(d / f"{name}.obj", v[used], remap[f[keep]])
        part = trimesh.Trimesh(v[used], remap[f[keep]], process=False)
        pts, _ = trimesh.sample.sample_surface(part, 300, seed=int(rng.integers(1 << 31)))
        (d / f"{name}_keypoints_300.json").write_text(json.dumps({"keypoints": pts.round(3).tolist()}))
    _write_obj(d / "mesh_tex.obj", v, f, np.asarray(m.visual.uv), mtl="material.mtl")
    (d / "material.mtl").write_text("newmtl material_0\nKa 0.2 0.2 0.2\nKd 1 1 1\nKs 0 0 0\nmap_Kd material.jpg\n")
    m.visual.material.image.convert("RGB").save(d / "material.jpg", quality=95)
    params = {}
    for name, sel in (("top", top), ("bottom", ~top)):
        lo, hi = v[sel].min(axis=0), v[sel].max(axis=0)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        params[f"bbox_{name}"] = corners.round(3).tolist()
        params[f"keypoints_{name}"] = v[sel][rng.choice(sel.sum(), 16)].round(3).tolist()
        params[f"mocap_{name}"] = corners[:4].round(3).tolist()
    (d / "object_params.json").write_text(json.dumps(params))
    diameter = float(np.linalg.norm(v.max(axis=0) - v.min(axis=0)) / 1000.0)
    (meta / "object_meta.json").write_text(json.dumps({OBJ: {"diameter": diameter}}))



def ego_poses(n_frames: int) -> np.ndarray:
    """[F,4,4] camera -> scene world (OpenCV axes) of the demo's moving head camera (view 0)."""
    return np.stack([look_at_opencv(CENTRE + [0.05 * np.sin(3 * s), -0.45, -0.3], CENTRE)
                     for s in np.linspace(0, 1, n_frames)])


def toolkit_joints(side: str, rot, pose, betas, trans) -> np.ndarray:
    """[F,21,3] joints the way the ARCTIC toolkit computes them (``build_mano_aa``:
    smplx.MANO(use_pca=False, flat_hand_mean=False) with 21 joints), here on the stand-in arrays."""
    import smplx
    import torch
    from smplx.utils import Struct

    arrays = dict(standin_hand(side).arrays)
    arrays["f"] = np.asarray(arrays["f"], np.int64)
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a shape-space warning
        layer = smplx.MANO(model_path="", data_struct=Struct(**arrays), is_rhand=side == "right", use_pca=False,
                           flat_hand_mean=False, batch_size=len(rot), dtype=torch.float64)
    t = lambda x: torch.tensor(np.asarray(x, np.float64))  # noqa: E731
    with torch.no_grad():
        out = layer(global_orient=t(rot), hand_pose=t(pose), betas=t(np.broadcast_to(betas, (len(rot), 10))),
                    transl=t(trans))
    return np.concatenate([out.joints.numpy()[:, :16], out.vertices.numpy()[:, list(SMPLX_MANO_TIPS)]], axis=1)


def make_demo(out: Path, n_frames: int = 12, seed: int = 0, views: tuple[int, ...] = tuple(range(N_VIEWS + 1))) -> Path:
    """Write the dataset under ``out`` (the ``arctic_data/data`` folder, created); returns ``out``.
    ``views``: the image folders to render (all nine by default; tests render fewer)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    scene = handover_scene(n_frames, seed)
    F = n_frames
    raw = out / "raw_seqs" / SID
    raw.mkdir(parents=True, exist_ok=True)
    # hands: world = WORLD_FROM_SCENE @ scene, pose relative to hands_mean
    mano, params, world_joints = {}, {}, {}
    for side in ("right", "left"):
        model = standin_hand(side)
        pose, trans, betas = scene.hands[side]
        p, t = transform_mano(model, pose, trans, betas, WORLD_FROM_SCENE)
        rel = p[:, 3:] - model.hands_mean
        mano[side] = {"rot": p[:, :3].astype(np.float32), "pose": rel.astype(np.float32),
                      "trans": t.astype(np.float32), "shape": betas.astype(np.float32),
                      "fitting_err": rng.uniform(1e-3, 3e-3, F).astype(np.float32)}
        world_joints[side] = toolkit_joints(side, mano[side]["rot"], mano[side]["pose"], mano[side]["shape"],
                                            mano[side]["trans"])
        s = side[0]
        params.update({f"rot_{s}": mano[side]["rot"], f"pose_{s}": mano[side]["pose"], f"trans_{s}": mano[side]["trans"],
                       f"shape_{s}": np.tile(mano[side]["shape"], (F, 1)), f"fitting_err_{s}": mano[side]["fitting_err"]})
    np.save(raw / f"{SEQ}.mano.npy", mano, allow_pickle=True)
    # object: ARCTIC object frame = OBJ_FROM_SCENE @ scene object frame; translation in mm
    P = WORLD_FROM_SCENE @ scene.object_poses @ OBJ_FROM_SCENE
    obj = np.concatenate([scene.articulation[:, None], Rotation.from_matrix(P[:, :3, :3]).as_rotvec(),
                          P[:, :3, 3] * 1000.0], axis=1).astype(np.float32)
    np.save(raw / f"{SEQ}.object.npy", obj)
    params.update({"obj_arti": obj[:, 0], "obj_rot": obj[:, 1:4], "obj_trans": obj[:, 4:]})
    # cameras: 8 allocentric (static) + the egocentric one (moving)
    scene_from_world = np.linalg.inv(WORLD_FROM_SCENE)
    cams = scene.camera_poses(N_VIEWS)
    world2cam = np.stack([np.linalg.inv(c) @ scene_from_world for c in cams])
    K = intrinsics(W, H)
    ego = ego_poses(F)
    world2ego = np.stack([np.linalg.inv(e) @ scene_from_world for e in ego])
    np.save(raw / f"{SEQ}.egocam.dist.npy", {
        "R_k_cam_np": world2ego[:, :3, :3].astype(np.float32), "T_k_cam_np": world2ego[:, :3, 3:].astype(np.float32),
        "intrinsics": K.astype(np.float32), "ego_markers.ref": np.zeros((4, 3), np.float32),
        "ego_markers.label": ["ego1", "ego2", "ego3", "ego4"], "R0": np.eye(3, dtype=np.float32),
        "T0": np.zeros((3, 1), np.float32), "dist8": np.zeros(8, np.float32)}, allow_pickle=True)
    z = lambda n: np.zeros((F, n), np.float32)  # noqa: E731
    np.save(raw / f"{SEQ}.smplx.npy", {"transl": z(3), "global_orient": z(3), "body_pose": z(63), "jaw_pose": z(3),
                                      "leye_pose": z(3), "reye_pose": z(3), "left_hand_pose": z(45),
                                      "right_hand_pose": z(45)}, allow_pickle=True)
    meta = out / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "misc.json").write_text(json.dumps({SID: {
        "gender": "female", "image_size": [[W, H]] * (N_VIEWS + 1), "intris_mat": [K.tolist()] * N_VIEWS,
        "world2cam": world2cam.tolist(), "ioi_offset": IOI_OFFSET}}))
    _write_object(meta, scene, rng)
    sj = out / "splits_json"
    sj.mkdir(parents=True, exist_ok=True)
    for p in ("p1", "p2"):
        (sj / f"protocol_{p}.json").write_text(json.dumps({"train": [f"{SID}/{SEQ}"], "val": [], "test": []}))
    # processed_seqs: the toolkit's per-view joints (view 0 ego, 1..8 allocentric, 9 ego distorted = 0 here)
    view_tf = np.concatenate([world2ego[:, None], np.broadcast_to(world2cam[None], (F, N_VIEWS, 4, 4)),
                            world2ego[:, None]], axis=1)                            # [F,10,4,4]
    cam_coord = {f"joints.{s}": (np.einsum("fvij,fkj->fvki", view_tf[:, :, :3, :3], world_joints[s])
                                 + view_tf[:, :, None, :3, 3]).astype(np.float32) for s in ("right", "left")}
    obj_world = np.stack([scene.object_vertices(f) @ WORLD_FROM_SCENE[:3, :3].T for f in range(F)])
    obj_cam = np.einsum("fvij,fkj->fvki", view_tf[:, :9, :3, :3], obj_world) + view_tf[:, :9, None, :3, 3]
    bbox = toolkit_bbox(obj_cam[..., :2] / obj_cam[..., 2:] * [K[0, 0], K[1, 1]] + K[:2, 2])
    proc = out / "processed_seqs" / SID
    proc.mkdir(parents=True, exist_ok=True)
    np.save(proc / f"{SEQ}.npy", {"cam_coord": cam_coord, "params": params, "bbox": bbox}, allow_pickle=True)
    # images: view 0 = the egocentric camera, 1..8 allocentric; cropped_images as crop_images.py cuts them
    try:
        for view in views:
            folder, crops = (out / d / SID / SEQ / str(view) for d in ("images", "cropped_images"))
            folder.mkdir(parents=True, exist_ok=True)
            crops.mkdir(parents=True, exist_ok=True)
            for i in range(IOI_OFFSET):
                Image.new("RGB", (W, H)).save(folder / f"{i:05d}.jpg", quality=90)
            for f in range(F):
                pose = ego[f] if view == 0 else cams[view - 1]
                name = f"{f + IOI_OFFSET:05d}.jpg"
                scene.save_rgb(folder / name, pose, K, W, H, f, quality=92)
                with Image.open(folder / name) as im:
                    if view == 0:   # crop_images.py: the egocentric frame is only scaled by EGO_IMAGE_SCALE
                        im.resize((int(W * 0.3), int(H * 0.3))).save(crops / name, quality=92)
                    else:           # transform_image: the loose box (scale x 1.5) cut, resized to 1000 x 1000
                        cx, cy, dim = bbox[f, view, 0], bbox[f, view, 1], bbox[f, view, 2] * 1.5 * 200
                        im.crop((cx - dim / 2, cy - dim / 2, cx + dim / 2, cy + dim / 2)).resize(
                            (CROP_PX, CROP_PX)).save(crops / name, quality=92)
    finally:
        scene.close()
    return out


def toolkit_bbox(verts2d: np.ndarray) -> np.ndarray:
    """[F,9,3] (cx, cy, scale) per view from the object's projected vertices [F,9,V,2], as
    src/arctic/processing.py forward_define_bbox (obj_s 0.6, get_bbox_from_kp2d's 1.1, the ego
    view fixed to the image centre, allocentric scale >= 3) -- with the toolkit's pixel constants
    (2800 x 2000 frames) scaled to the demo's ``W``."""
    px = W / 2800.0
    lo, hi = verts2d.min(axis=2), verts2d.max(axis=2)                     # [F,9,2]
    centre, size = (lo + hi) / 2, (hi - lo)
    side = size.max(axis=-1) * 1.1
    scale = (side + size.max(axis=-1) * 0.6) / (200.0 * px)
    out = np.concatenate([centre, scale[..., None]], axis=-1)
    out[:, 0] = (W / 2, H / 2, W / (200.0 * px))
    out[:, 1:, 2] = np.maximum(out[:, 1:, 2], 3.0)
    out[..., 2] *= px                       # scale in units of 200 demo pixels, as crop_images reads it
    return out
