"""An ARCTIC dataset written from ARCTIC's own code, independent of the project's ARCTIC adapter and
demo writer (github.com/zc-alexfan/arctic at 49f3eb4; line numbers are of its files), with ground
truth drawn by the tests' own rasteriser (``raster.py``): per view and frame the picture, the
visible pixel labels, and each entity's silhouette alone (object, left hand, right hand).

What follows the toolkit, re-derived here from its formulas (not from this project's code):
  * object (``common/object_tensors.py``): ``mesh.obj`` in mm (L278 /1000), ``parts.json`` read as
    bool (L172), ``parts_ids = parts + 1`` (L249), articulated = ``parts_ids == 1`` (L102-104), the
    articulation quaternion ``axis_angle_to_quaternion([0, 0, -1] * arti)`` (L73, L292) applied to
    the "top" copy, then the global rotation and ``obj_trans / 1000`` (``src/arctic/processing.py``
    L213-215) to all; quaternions as ``common/rot.py`` (pytorch3d's formulas, real part first);
  * hands (``common/body_models.py`` L128-135 ``build_mano_aa``, ``processing.py`` L176-190):
    ``smplx.MANO(use_pca=False, flat_hand_mean=False)`` called with ``global_orient=rot,
    hand_pose=pose, betas=shape, transl=trans``; the MANO data are the project's stand-in hand
    arrays (the "MANO files" of this test world: MANO itself is licensed);
  * cameras: world -> camera by the 4x4 ``[R | T]`` (``common/transforms.py`` L288-313), pixels
    ``K p / z`` (L316-329, no +0.5); allocentric ``misc.json`` ``world2cam`` / ``intris_mat``; the
    egocentric camera per frame from ``egocam.dist.npy`` (``preprocess_dataset.py`` L108-119), its
    images recorded through the lens model of ``distort_pts3d_all`` (``transforms.py`` L82-111):
    each recorded pixel shows the ray whose distorted normalised point it is (inverted here by
    fixed-point iteration); its truth (labels, silhouettes, picture) is the undistorted pinhole
    view ``K_ego`` (the toolkit's view 0, "undistorted space", ``arctic_dataset.py`` L62-66);
  * image number = mocap frame + ``ioi_offset`` (``mesh_loaders/arctic.py`` L105-110);
  * ``processed_seqs`` joints as ``process_seqs.py`` writes them: [F, 10 views, 21, 3] (view 0 ego
    undistorted, 1..8 allocentric, 9 ego distorted by ``distort_pts3d_all``), 16 joints + smplx's
    MANO tips 744, 320, 443, 554, 671.

The scene: a box with a lid (hinge = the object's z axis), the lid opening to ``MAX_ARTI`` rad;
the right hand follows the lid's edge, then leaves (moves ``EXIT_M`` away) in the last frames;
the left hand holds the base. View 3's image is a wide strip (640 x 200), so its crop cannot fit
and is padded.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.pipeline.hoi.raster import face_normals, project, rasterise

SID, SEQ, OBJ = "s05", "lidbox_use_01", "lidbox"
IOI_OFFSET = 1
MAX_ARTI = 1.3
EXIT_M = 0.6
SMPLX_MANO_TIPS = (744, 320, 443, 554, 671)
DIST8 = np.array([0.05, -0.02, 0.0008, -0.0006, 0.004, 0.0, 0.0, 0.0])  # k1 k2 p1 p2 k3 k4 k5 k6
SIZES = {0: (640, 480), 1: (640, 480), 2: (640, 480), 3: (640, 200), 4: (640, 480), 5: (640, 480),
         6: (640, 480), 7: (640, 480), 8: (640, 480)}
LABELS = {"background": 0, "object": 1, "left": 2, "right": 3}


# -- common/rot.py's quaternion formulas (pytorch3d), real part first --------------------------------
def aa_to_quat(aa: np.ndarray) -> np.ndarray:
    aa = np.asarray(aa, np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    small = angle < 1e-6
    k = np.where(small, 0.5 - angle**2 / 48, np.sin(angle / 2) / np.where(small, 1.0, angle))
    return np.concatenate([np.cos(angle / 2), aa * k], axis=-1)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_apply(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    pq = np.concatenate([np.zeros(p.shape[:-1] + (1,)), p], axis=-1)
    inv = q * np.array([1.0, -1.0, -1.0, -1.0])
    return quat_mul(quat_mul(q, pq), inv)[..., 1:]


def toolkit_object(v_mm: np.ndarray, parts_json: list, params: np.ndarray) -> np.ndarray:
    """[N,V,3] world vertices (metres) of ``ObjectTensors.forward_7d_batch`` for ``.object.npy`` rows
    ``params`` [N,7] (arti, axis-angle, translation mm)."""
    v = np.asarray(v_mm, np.float64) / 1000.0                                  # L278
    parts_ids = np.asarray(parts_json, dtype=bool).astype(np.int64) + 1        # L172, L249
    params = np.asarray(params, np.float64).reshape(-1, 7)
    q_arti = aa_to_quat(np.array([0.0, 0.0, -1.0]) * params[:, :1])           # L73, L292
    q_glob = aa_to_quat(params[:, 1:4])                                        # L74
    v_top = quat_apply(q_arti[:, None, :], np.broadcast_to(v, (len(params),) + v.shape))   # L88-92
    out = []
    for vt, qg, t in zip(v_top, q_glob, params[:, 4:] / 1000.0, strict=True):  # processing.py L215
        top = quat_apply(qg, vt) + t
        bottom = quat_apply(qg, v) + t                                          # L94-99
        o = bottom.copy()
        o[parts_ids == 1] = top[parts_ids == 1]                                 # L102-104
        out.append(o)
    return np.stack(out)


def toolkit_mano(side: str, rot, pose, shape, trans) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [N,778,3], joints [N,21,3]) of ``build_mano_aa`` (flat_hand_mean=False, no PCA) called
    as ``forward_gt_world`` does; 21 joints = 16 + smplx's MANO tip vertices."""
    import smplx
    import torch
    from smplx.utils import Struct

    from pipeline.hands.standin import standin_arrays

    arrays = dict(standin_arrays(side))
    arrays["f"] = np.asarray(arrays["f"], np.int64)
    n = len(rot)
    with contextlib.redirect_stdout(io.StringIO()):
        layer = smplx.MANO(model_path="", data_struct=Struct(**arrays), is_rhand=side == "right", use_pca=False,
                           flat_hand_mean=False, batch_size=n, dtype=torch.float64)
    t = lambda x: torch.tensor(np.asarray(x, np.float64))  # noqa: E731
    with torch.no_grad():
        out = layer(global_orient=t(rot), hand_pose=t(pose), betas=t(np.broadcast_to(shape, (n, 10))), transl=t(trans))
    v = out.vertices.numpy()
    return v, np.concatenate([out.joints.numpy()[:, :16], v[:, list(SMPLX_MANO_TIPS)]], axis=1)


def to_cam(M: np.ndarray, p: np.ndarray) -> np.ndarray:
    """transform_points_batch: ``(M @ [p, 1])[:3]`` for points [..., N, 3] and M [..., 4, 4]."""
    M = np.asarray(M, np.float64)
    return np.einsum("...ij,...nj->...ni", M[..., :3, :3], p) + M[..., None, :3, 3]


def distort_pts(p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """distort_pts3d_all (transforms.py L82-111) on camera points [..., 3]."""
    z = p[..., 2]
    x1, y1 = p[..., 0] / z, p[..., 1] / z
    r2 = x1 * x1 + y1 * y1
    r_dist = (1 + d[0] * r2 + d[1] * r2**2 + d[4] * r2**3) / (1 + d[5] * r2 + d[6] * r2**2 + d[7] * r2**3)
    x2 = x1 * r_dist + 2 * d[2] * x1 * y1 + d[3] * (r2 + 2 * x1 * x1)
    y2 = y1 * r_dist + 2 * d[3] * x1 * y1 + d[2] * (r2 + 2 * y1 * y1)
    return np.stack([x2 * z, y2 * z, z], axis=-1)


def undistort_normalised(xd: np.ndarray, yd: np.ndarray, d: np.ndarray, iters: int = 25):
    """Pinhole normalised (x, y) whose distortion (distort_pts on z = 1) is (xd, yd): fixed point."""
    x, y = xd.copy(), yd.copy()
    for _ in range(iters):
        r2 = x * x + y * y
        radial = (1 + d[0] * r2 + d[1] * r2**2 + d[4] * r2**3) / (1 + d[5] * r2 + d[6] * r2**2 + d[7] * r2**3)
        dx = 2 * d[2] * x * y + d[3] * (r2 + 2 * x * x)
        dy = 2 * d[3] * x * y + d[2] * (r2 + 2 * y * y)
        x, y = (xd - dx) / radial, (yd - dy) / radial
    return x, y


# -- the scene ------------------------------------------------------------------------------------
def _box(lo, hi, n=6):
    """Closed box [lo, hi] (metres) with each face an n x n grid: (vertices, faces)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    verts, faces = [], []
    for axis in range(3):
        for sign in (0, 1):
            u, w = [a for a in range(3) if a != axis]
            base = len(verts)
            for i in range(n + 1):
                for j in range(n + 1):
                    p = np.zeros(3)
                    p[axis] = hi[axis] if sign else lo[axis]
                    p[u] = lo[u] + (hi[u] - lo[u]) * i / n
                    p[w] = lo[w] + (hi[w] - lo[w]) * j / n
                    verts.append(p)
            for i in range(n):
                for j in range(n):
                    a, b, c, e = (base + i * (n + 1) + j, base + (i + 1) * (n + 1) + j,
                                  base + (i + 1) * (n + 1) + j + 1, base + i * (n + 1) + j + 1)
                    faces += [(a, b, c), (a, c, e)] if sign else [(a, c, b), (a, e, c)]
    return np.array(verts), np.array(faces)


def lid_box() -> tuple[np.ndarray, np.ndarray, list]:
    """(vertices mm [V,3], faces [F,3], parts.json list): base y in [0, 60] mm, lid y in [-14, 0] mm,
    x in [0, 160], z in [-50, 50]; the hinge is the object's z axis. parts.json: the lid (the part
    the toolkit's code turns) 0, the base 1."""
    vb, fb = _box((0.0, 0.0, -0.05), (0.16, 0.06, 0.05))
    vt, ft = _box((0.0, -0.014, -0.05), (0.16, 0.0, 0.05))
    v = np.concatenate([vb, vt]) * 1000.0
    f = np.concatenate([fb, ft + len(vb)])
    parts = [1] * len(vb) + [0] * len(vt)
    return v, f, parts


def _look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """world2cam [4,4], OpenCV axes (x right, y down, z forward), z-up world."""
    z = np.asarray(target, float) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return np.linalg.inv(c2w)


def _K(W: int, H: int, f: float) -> np.ndarray:
    return np.array([[f, 0.0, 0.47 * W], [0.0, f * 1.01, 0.53 * H], [0.0, 0.0, 1.0]])


@dataclass
class Truth:
    """The ground truth, world geometry as the toolkit's code places it: ``world_obj`` [F,V,3] and
    ``obj_faces``; ``hands`` side -> [F,778,3] and ``hand_faces`` side -> [1538,3]; per view
    ``world2cam[view]`` [F,4,4], ``K[view]``, ``size[view]`` (W, H); ``articulation`` [F];
    ``pinhole[f]`` uint8 [H,W,3] the ego view's undistorted picture; ``hand_out[(view, f)]``
    side -> fraction of the hand's vertices outside the image."""

    views: tuple
    n_frames: int
    articulation: np.ndarray
    world_obj: np.ndarray
    obj_faces: np.ndarray
    hands: dict
    hand_faces: dict
    world2cam: dict = field(default_factory=dict)
    K: dict = field(default_factory=dict)
    size: dict = field(default_factory=dict)
    pinhole: dict = field(default_factory=dict)
    hand_out: dict = field(default_factory=dict)

    def entities(self, f: int) -> dict:
        return {"object": (self.world_obj[f], self.obj_faces, np.array([200.0, 60, 50])),
                "left": (self.hands["left"][f], self.hand_faces["left"], np.array([230.0, 180, 140])),
                "right": (self.hands["right"][f], self.hand_faces["right"], np.array([190.0, 140, 100]))}

    def draw(self, view: int, f: int, K: np.ndarray | None = None, W: int | None = None, H: int | None = None):
        """(labels uint8 [H,W] visible entity, ``LABELS``; silhouettes {"object", "left", "right"} ->
        bool [H,W], each alone) of frame ``f`` seen by ``view``'s camera through ``K`` [3,3] (OpenCV
        pixel centres at integers; default the view's own K and size: pinhole, undistorted)."""
        K = self.K[view] if K is None else K
        W, H = self.size[view] if W is None else (W, H)
        _, labels, sil = _draw(self.entities(f), self.world2cam[view][f], K, W, H, np.zeros((H, W, 3)))
        return labels, sil


def _scene(F: int, rng: np.random.Generator):
    """Object params [F,7], hands {side: (rot, pose, trans, shape)}, world2cam [8,4,4], Ks [8], ego
    world2ego [F,4,4], K_ego, the mesh (v mm, faces, parts)."""
    v_mm, faces, parts = lid_box()
    s = np.linspace(0.0, 1.0, F)
    arti = MAX_ARTI * s
    # object frame: x along world x, y down (world -z: the lid on top), z along world y
    R0 = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    from scipy.spatial.transform import Rotation

    rots = [Rotation.from_rotvec([0.0, 0.0, 0.25 * (x - 0.5)]) * Rotation.from_matrix(R0) for x in s]
    trans = np.stack([[-0.08 + 0.03 * x, -0.01 * x, 0.07 + 0.02 * np.sin(np.pi * x)] for x in s]) * 1000.0
    obj = np.concatenate([arti[:, None], np.stack([r.as_rotvec() for r in rots]), trans], axis=1)
    world_obj = toolkit_object(v_mm, parts, obj)
    lid = ~np.asarray(parts, bool)
    hands = {}
    for side in ("right", "left"):
        # the hand's axes in the world (columns): fingers towards the object, palm down
        R = np.array([[-1.0, 0, 0], [0, 0, 1], [0, 1, 0]]) if side == "right" else \
            np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
        rot = np.tile(Rotation.from_matrix(R).as_rotvec(), (F, 1))
        pose = np.tile(rng.normal(0.0, 0.12, 45), (F, 1)) + np.linspace(0, 0.2, F)[:, None] * rng.normal(0, 1, 45)
        shape = rng.normal(0.0, 0.5, 10)
        v0, _ = toolkit_mano(side, rot, pose, shape, np.zeros((F, 3)))
        if side == "right":   # at the lid's far edge, above it; leaves in the last two frames
            target = np.stack([world_obj[f][lid][world_obj[f][lid][:, 0].argmax()] for f in range(F)])
            target = target + [0.06, 0.0, 0.05]
            target[-2:] += np.array([[0.4, 0.0, 0.1], [1.0, 0.0, 0.25]]) * EXIT_M   # partly out, then out
        else:                 # beside the base
            target = world_obj[:, ~lid].mean(axis=1) + [-0.13, 0.0, 0.0]
        hands[side] = (rot, pose, target - v0.mean(axis=1), shape)
    centre = world_obj[0].mean(axis=0)
    w2c, Ks = [], []
    for k in range(8):
        a = np.deg2rad(-70 + 140 * k / 7)
        eye = centre + 0.75 * np.array([np.sin(a), -np.cos(a), 0.0]) + [0, 0, 0.45]
        w2c.append(_look_at(eye, centre))
        Ks.append(_K(*SIZES[k + 1], 560.0))
    w2e = np.stack([_look_at(centre + [0.05 * np.sin(3 * x), -0.42, 0.5], centre + [0.0, 0.02 * x, 0.0]) for x in s])
    return obj, hands, np.stack(w2c), Ks, w2e, _K(*SIZES[0], 470.0), (v_mm, faces, parts), world_obj


def _draw(entities: dict, M: np.ndarray, K: np.ndarray, W: int, H: int, background: np.ndarray):
    """(rgb [H,W,3] uint8, labels [H,W] uint8, silhouettes {name: bool [H,W]}) of world meshes
    ``entities`` {name: (vertices [V,3], faces, colour [3])} seen by world2cam ``M`` and ``K``."""
    light = np.array([0.3, -0.5, -0.8]) / np.linalg.norm([0.3, -0.5, -0.8])
    names = list(entities)
    zbufs, faces, lams = [], [], []
    for name in names:
        v, f, _ = entities[name]
        p = to_cam(M, v)
        z, face = rasterise(project(K, p), p[:, 2], f, W, H)
        zbufs.append(z)
        faces.append(face)
        lams.append(0.45 + 0.55 * np.abs(face_normals(p, f) @ light))
    stack = np.stack(zbufs)
    front = np.argmin(stack, axis=0)
    covered = np.isfinite(stack.min(axis=0))
    labels = np.where(covered, np.array([LABELS[n] for n in names])[front], 0).astype(np.uint8)
    rgb = np.array(background, np.float64)
    for i, n in enumerate(names):
        m = covered & (front == i)
        rgb[m] = np.asarray(entities[n][2]) * lams[i][faces[i][m]][:, None]
    sil = {n: np.isfinite(z) for n, z in zip(names, zbufs, strict=True)}
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), labels, sil


@functools.lru_cache(maxsize=4)
def _background_cached(K: tuple, W: int, H: int, ox: int, oy: int) -> np.ndarray:
    K = np.asarray(K).reshape(3, 3)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x, y = (u - ox - K[0, 2]) / K[0, 0], (v - oy - K[1, 2]) / K[1, 1]
    check = ((np.floor(x * 6) + np.floor(y * 6)) % 2)[..., None]
    return np.clip(np.array([150.0, 160, 150]) + 40 * check * np.array([1.0, 0.6, 0.2]) + 30 * y[..., None], 0, 255)


def _background(K: np.ndarray, W: int, H: int, ox: int = 0, oy: int = 0) -> np.ndarray:
    """A pattern fixed to the camera's rays (so the ego view's pinhole and recorded pictures agree)."""
    return _background_cached(tuple(np.asarray(K, float).reshape(-1)), W, H, ox, oy)


def write_arctic_toolkit_layout(root: Path, n_frames: int = 8, views: tuple = (0, 1, 3), seed: int = 0) -> Truth:
    """Write the dataset under ``root`` (ARCTIC's ``arctic_data/data``); return the ground truth."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    F = n_frames
    obj, hands, w2c, Ks, w2e, K_ego, (v_mm, faces, parts), world_obj = _scene(F, rng)
    raw = root / "raw_seqs" / SID
    raw.mkdir(parents=True, exist_ok=True)
    mano, world_hands, world_joints = {}, {}, {}
    for side, (rot, pose, trans, shape) in hands.items():
        mano[side] = {"rot": rot.astype(np.float32), "pose": pose.astype(np.float32), "trans": trans.astype(np.float32),
                      "shape": shape.astype(np.float32), "fitting_err": np.full(F, 1e-3, np.float32)}
        m = mano[side]
        world_hands[side], world_joints[side] = toolkit_mano(side, m["rot"], m["pose"], m["shape"], m["trans"])
    np.save(raw / f"{SEQ}.mano.npy", mano, allow_pickle=True)
    obj = obj.astype(np.float32)
    np.save(raw / f"{SEQ}.object.npy", obj)
    world_obj = toolkit_object(v_mm, parts, obj)        # from the float32 rows, as the toolkit reads them
    np.save(raw / f"{SEQ}.egocam.dist.npy", {
        "R_k_cam_np": w2e[:, :3, :3].astype(np.float32), "T_k_cam_np": w2e[:, :3, 3:].astype(np.float32),
        "intrinsics": K_ego.astype(np.float32), "dist8": DIST8.astype(np.float32),
        "ego_markers.ref": np.zeros((4, 3), np.float32), "ego_markers.label": ["a", "b", "c", "d"],
        "R0": np.eye(3, dtype=np.float32), "T0": np.zeros((3, 1), np.float32)}, allow_pickle=True)
    w2e = np.stack([np.vstack([np.hstack([w2e[f, :3, :3].astype(np.float32), w2e[f, :3, 3:].astype(np.float32)]),
                               [0, 0, 0, 1]]) for f in range(F)]).astype(np.float64)   # as stored
    z = lambda n: np.zeros((F, n), np.float32)  # noqa: E731
    np.save(raw / f"{SEQ}.smplx.npy", {k: z(n) for k, n in (("transl", 3), ("global_orient", 3), ("body_pose", 63),
                                                               ("jaw_pose", 3), ("leye_pose", 3), ("reye_pose", 3),
                                                               ("left_hand_pose", 45), ("right_hand_pose", 45))},
            allow_pickle=True)
    meta = root / "meta"
    d = meta / "object_vtemplates" / OBJ
    d.mkdir(parents=True, exist_ok=True)
    (d / "mesh.obj").write_text("".join(f"v {a:.5f} {b:.5f} {c:.5f}\n" for a, b, c in v_mm)
                                + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces))
    (d / "parts.json").write_text(json.dumps(parts))
    lid = ~np.asarray(parts, bool)
    for name, sel in (("top", lid), ("bottom", ~lid)):
        pts = v_mm[sel][rng.choice(sel.sum(), 300)]
        (d / f"{name}_keypoints_300.json").write_text(json.dumps({"keypoints": pts.round(3).tolist()}))
    box = {n: (v_mm[s].min(0), v_mm[s].max(0)) for n, s in (("top", lid), ("bottom", ~lid))}
    corners = {n: [[x, y, zz] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for zz in (lo[2], hi[2])]
               for n, (lo, hi) in box.items()}
    (d / "object_params.json").write_text(json.dumps(
        {**{f"bbox_{n}": c for n, c in corners.items()}, **{f"mocap_{n}": c[:4] for n, c in corners.items()},
         **{f"keypoints_{n}": c * 2 for n, c in corners.items()}}))
    (meta / "object_meta.json").write_text(json.dumps({OBJ: {"diameter": float(np.ptp(v_mm, axis=0).max() / 1000)}}))
    (meta / "misc.json").write_text(json.dumps({SID: {
        "gender": "male", "image_size": [list(SIZES[k]) for k in range(9)], "intris_mat": [K.tolist() for K in Ks],
        "world2cam": w2c.tolist(), "ioi_offset": IOI_OFFSET}}))
    sj = root / "splits_json"
    sj.mkdir(parents=True, exist_ok=True)
    for p in ("p1", "p2"):
        (sj / f"protocol_{p}.json").write_text(json.dumps({"train": [f"{SID}/{SEQ}"], "val": [], "test": []}))
    # processed_seqs: process_seqs.py's per-view joints (0 ego undistorted, 1..8 allocentric, 9 ego distorted)
    cam_coord = {}
    for side in ("right", "left"):
        per_view = [to_cam(w2e, world_joints[side])]
        per_view += [to_cam(w2c[k], world_joints[side]) for k in range(8)]
        per_view.append(distort_pts(per_view[0], DIST8))
        cam_coord[f"joints.{side}"] = np.stack(per_view, axis=1).astype(np.float32)
    proc = root / "processed_seqs" / SID
    proc.mkdir(parents=True, exist_ok=True)
    np.save(proc / f"{SEQ}.npy", {"cam_coord": cam_coord, "params": {"obj_arti": obj[:, 0]}}, allow_pickle=True)
    # pictures
    hand_faces = {side: _hand_faces(side) for side in ("left", "right")}
    truth = Truth(views=tuple(views), n_frames=F, articulation=obj[:, 0].astype(np.float64), world_obj=world_obj,
                  obj_faces=faces, hands=world_hands, hand_faces=hand_faces)
    for view in views:
        W, H = SIZES[view]
        truth.world2cam[view] = w2e if view == 0 else np.broadcast_to(w2c[view - 1], (F, 4, 4))
        truth.K[view], truth.size[view] = (K_ego if view == 0 else Ks[view - 1]), (W, H)
        folder = root / "images" / SID / SEQ / str(view)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(IOI_OFFSET):
            Image.new("RGB", (W, H)).save(folder / f"{i:05d}.jpg")
        for f in range(F):
            M, K = truth.world2cam[view][f], truth.K[view]
            rgb, _, _ = _draw(truth.entities(f), M, K, W, H, _background(K, W, H))
            for side in ("left", "right"):
                cam = to_cam(M, world_hands[side][f])        # the ego camera records through its lens
                px = project(K, distort_pts(cam, DIST8) if view == 0 else cam)
                inside = (px[:, 0] > -0.5) & (px[:, 0] < W - 0.5) & (px[:, 1] > -0.5) & (px[:, 1] < H - 0.5)
                truth.hand_out.setdefault((view, f), {})[side] = float(1 - inside.mean())
            if view == 0:
                truth.pinhole[f] = rgb
                rgb = _recorded_ego(truth.entities(f), M, K, W, H)
            Image.fromarray(rgb).save(folder / f"{f + IOI_OFFSET:05d}.jpg", quality=95)
    return truth


def _hand_faces(side: str) -> np.ndarray:
    from pipeline.hands.standin import standin_arrays

    return np.asarray(standin_arrays(side)["f"], np.int64)


@functools.lru_cache(maxsize=2)
def _ray_pixels(K: tuple, W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) [H,W] pinhole pixels of the rays the egocentric camera records at each pixel."""
    K = np.asarray(K).reshape(3, 3)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x, y = undistort_normalised((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], DIST8)
    back = distort_pts(np.stack([x, y, np.ones_like(x)], axis=-1), DIST8)
    assert np.abs(back[..., 0] - (u - K[0, 2]) / K[0, 0]).max() < 1e-9, "undistortion did not converge"
    return K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]


def _recorded_ego(ents: dict, M: np.ndarray, K: np.ndarray, W: int, H: int) -> np.ndarray:
    """The egocentric camera's recorded (distorted) picture: each pixel shows the pinhole picture at
    the undistorted point of its ray (drawn on a canvas wide enough to hold every such point)."""
    pu, pv = _ray_pixels(tuple(K.reshape(-1)), W, H)
    ox, oy = int(np.ceil(max(0.0, -pu.min()))) + 2, int(np.ceil(max(0.0, -pv.min()))) + 2
    CW, CH = int(np.ceil(pu.max())) + ox + 3, int(np.ceil(pv.max())) + oy + 3
    Kc = K.copy()
    Kc[0, 2] += ox
    Kc[1, 2] += oy
    canvas, _, _ = _draw(ents, M, Kc, CW, CH, _background(K, CW, CH, ox, oy))
    return canvas[np.rint(pv + oy).astype(int), np.rint(pu + ox).astype(int)]
