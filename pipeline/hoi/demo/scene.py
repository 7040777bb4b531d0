"""One bimanual synthetic scene shared by the bimanual demo writers (ARCTIC, TACO/OakInk2):
two stand-in hands (not MANO), both moving, pass an articulated box from the right hand to
the left while its lid opens.

World frame: metres, OpenCV-style axes (y down, z away from the default camera, which sits
at the origin looking down +z). The scene centre is ``CENTRE`` = (0, 0, 0.7).

The object (``object_mesh``, textured, metres, its own frame) is a box of two parts: the
bottom (x in [0, L], y in [-Hb, 0], z in [-D/2, D/2]) and the lid (``top_mask``; x in [0, L],
y in [0, Ht]). The hinge is the object's z axis through its origin: at frame f the lid turns
about +z by ``articulation[f]`` radians (0 = closed; positive opens it, away from the
bottom). ``object_poses[f]`` [4,4] maps the object frame to the world (the bottom part, and
the whole object at rest); the lid's pose is ``object_poses[f] @ rot_z(articulation[f])``
(``part_poses``). The object's +y points up in the world (world -y).

Motion over s = f / (T-1): the box travels from right (+x) to left, lifted a little and
turning; the right hand holds its +x end until s = 0.6 then lets go and retreats; the left
hand approaches and holds its -x end from s = 0.4; the lid opens from 0 to 1.1 rad.

Also here, shared with the single-hand DexYCB demo: ``room_background`` (synthetic room)
and ``add_lights`` (the demo's two directional lights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh
from PIL import Image
from scipy.spatial.transform import Rotation

from pipeline.hands.model import standin_hand, transform_mano
from pipeline.hands.standin import mirror_pose
from pipeline.hoi.demo.objects import _box, _texture

CENTRE = np.array([0.0, 0.0, 0.7])
L, HB, HT, D = 0.14, 0.07, 0.015, 0.09          # box length, bottom height, lid height, depth (m)
MAX_OPEN = 1.1                                  # rad, lid opening at the last frame
BETAS = {"right": np.array([0.6, -0.4, 0.3, 0.2, 0, 0, 0, 0, 0, 0]),
         "left": np.array([0.5, -0.3, 0.2, 0.1, 0, 0, 0, 0, 0, 0])}
R_RIGHT = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # model -> world: fingers +z, palm -x
OBJ_R0 = np.diag([1.0, -1.0, -1.0])           # object -> world rotation at rest (object +y = world up)
RELEASE, GRASP = 0.6, 0.4                       # s where the right hand lets go / the left hand takes hold
HAND_COLOURS = {"right": (230, 180, 150, 255), "left": (210, 160, 130, 255)}
GL_FROM_CV4 = np.diag([1.0, -1.0, -1.0, 1.0])


def rot_z(angle: float) -> np.ndarray:
    """[4,4] rotation by ``angle`` radians about +z (the lid's hinge)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.0, 0.0, float(angle)]).as_matrix()
    return T


def look_at_opencv(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[4,4] camera -> world (OpenCV axes: x right, y down, z forward) at ``eye`` looking at ``target``;
    the camera's x axis is horizontal (perpendicular to the world y axis). The demos' moving headset
    cameras (ARCTIC view 0, OakInk2's egocentric camera, HOT3D's streams) are posed with it."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    P = np.eye(4)
    P[:3, 0], P[:3, 1], P[:3, 2], P[:3, 3] = x, np.cross(z, x), z, eye
    return P


def room_background(W: int, H: int, rng: np.random.Generator) -> np.ndarray:
    """A plain room: a wall gradient above a textured table, uint8 [H,W,3]."""
    y = np.linspace(0, 1, H)[:, None, None]
    wall = (np.array([180, 175, 165]) * (1 - 0.3 * y)).repeat(W, axis=1)
    table = np.array([120, 90, 60]) + rng.normal(0, 6, (H, W, 3))
    img = np.where(y > 0.6, table, wall)
    return np.clip(img, 0, 255).astype(np.uint8)


def add_lights(scene, cam_node) -> None:
    """The demo's two directional lights, attached to the camera node (pyrender)."""
    import pyrender

    for d, i in (((0.3, 0.5, 1.0), 3.0), ((-0.6, 0.2, 0.4), 1.0)):
        light = pyrender.DirectionalLight(color=np.ones(3), intensity=i)
        z = np.array(d) / np.linalg.norm(d)
        x = np.cross([0, 1, 0], z)
        x /= np.linalg.norm(x)
        P = np.eye(4)
        P[:3, 0], P[:3, 1], P[:3, 2] = x, np.cross(z, x), z
        scene.add(light, pose=P, parent_node=cam_node)


def intrinsics(W: int = 640, H: int = 480) -> np.ndarray:
    """[3,3] pinhole K for a W x H image (OpenCV pixel centres; fx = fy = 615 at 640 wide)."""
    f = 615.0 * W / 640.0
    return np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])


def articulated_box() -> tuple[trimesh.Trimesh, np.ndarray]:
    """The textured two-part box (metres, object frame, see module doc) and ``top_mask`` [V] bool."""
    vb, uvb, fb = _box((L, HB, D))
    vt, uvt, ft = _box((L, HT, D))
    vb = vb + [L / 2, -HB / 2, 0.0]
    vt = vt + [L / 2, HT / 2, 0.0]
    uvt = 0.25 + 0.5 * uvt                    # the lid shows a different part of the texture
    v = np.concatenate([vb, vt])
    f = np.concatenate([fb, ft + len(vb)])
    uv = np.concatenate([uvb, uvt])
    mesh = trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv, image=_texture("box")), process=False)
    top = np.zeros(len(v), bool)
    top[len(vb):] = True
    return mesh, top


def _motion(s: float) -> np.ndarray:
    """World transform [4,4] of the carried group at progress s in [0,1]: from right to left,
    lifted on the way, turning about the vertical."""
    G = np.eye(4)
    G[:3, :3] = Rotation.from_rotvec([0.0, 0.5 * (s - 0.5), 0.1 * np.sin(np.pi * s)]).as_matrix()
    G[:3, 3] = CENTRE - G[:3, :3] @ CENTRE + [0.07 - 0.14 * s, -0.04 * np.sin(np.pi * s), 0.0]
    return G


def _hand_at_rest(side: str, flex: float) -> tuple[np.ndarray, np.ndarray]:
    """(pose [48] absolute, trans [3]) of ``side`` holding the box at rest (box centred at CENTRE)."""
    h = standin_hand(side)
    bend = np.zeros((15, 3))
    bend[:12, 2] = -flex                      # fingers curl round the box's back (right-hand axes)
    bend[12:, 1] = 0.3
    fingers = bend.reshape(45)
    glob = Rotation.from_matrix(R_RIGHT).as_rotvec()
    trans = np.array([L / 2 + 0.018, -0.005, CENTRE[2] - 0.075])
    if side == "left":
        fingers, glob, trans = mirror_pose(fingers), mirror_pose(glob), trans * [-1, 1, 1]
    return np.concatenate([glob, fingers + h.hands_mean]), trans


def _hand_world(side: str, s: float) -> tuple[np.ndarray, np.ndarray]:
    """(pose [48], trans [3]) of ``side`` in the world at progress s."""
    if side == "right":
        hold = min(s, RELEASE)
        away = max(s - RELEASE, 0.0) / (1 - RELEASE)
        flex = 0.7 - 0.5 * away
        off = np.array([0.12, -0.03, 0.0]) * away
    else:
        hold = max(s, GRASP)
        away = max(GRASP - s, 0.0) / GRASP
        flex = 0.7 - 0.5 * away
        off = np.array([-0.12, -0.03, 0.0]) * away
    G = _motion(hold)
    G[:3, 3] += off
    pose, trans = _hand_at_rest(side, flex)
    p, t = transform_mano(standin_hand(side), pose[None], trans[None], BETAS[side], G)
    return p[0], t[0]


@dataclass
class HandoverScene:
    """The scene over ``T`` frames (see the module doc for frames and conventions).

    hands: side -> (pose [T,48] absolute axis-angle, trans [T,3] m, betas [10]), world frame,
    stand-in hand models; object_mesh: textured trimesh (metres, object frame);
    object_poses [T,4,4] object -> world; articulation [T] rad; top_mask [V] bool;
    K [3,3] for 640x480 (``intrinsics(W, H)`` for other sizes).
    """

    hands: dict
    object_mesh: trimesh.Trimesh
    object_poses: np.ndarray
    articulation: np.ndarray
    top_mask: np.ndarray
    K: np.ndarray
    seed: int = 0
    _gl: dict = field(default_factory=dict, repr=False)

    @property
    def n_frames(self) -> int:
        return len(self.object_poses)

    def intrinsics(self, W: int = 640, H: int = 480) -> np.ndarray:
        return intrinsics(W, H)

    def camera_poses(self, n: int) -> np.ndarray:
        """[n,4,4] camera -> world (OpenCV axes) spread on an arc in front of and above the scene
        (0.6 m from its centre, up to 60 degrees to either side), each looking at the centre."""
        out = np.zeros((n, 4, 4))
        for k in range(n):
            a = np.deg2rad(-60 + 120 * k / max(n - 1, 1)) if n > 1 else 0.0
            a = a if k % 2 == 0 or n < 3 else -a * 0.6
            up = 0.15 + 0.1 * (k % 3)
            eye = CENTRE + 0.6 * np.array([np.sin(a), -up, -np.cos(a)])
            z = CENTRE - eye
            z /= np.linalg.norm(z)
            x = np.cross([0.0, 1.0, 0.0], z)
            x /= np.linalg.norm(x)
            out[k] = np.eye(4)
            out[k, :3, 0], out[k, :3, 1], out[k, :3, 2], out[k, :3, 3] = x, np.cross(z, x), z, eye
        return out

    def part_poses(self, frame: int) -> dict[str, np.ndarray]:
        """{"bottom", "top"} -> [4,4] part (object frame) -> world at ``frame``."""
        P = self.object_poses[frame]
        return {"bottom": P, "top": P @ rot_z(self.articulation[frame])}

    def object_vertices(self, frame: int) -> np.ndarray:
        """[V,3] world vertices of the articulated object at ``frame``."""
        v = np.asarray(self.object_mesh.vertices)
        out = np.empty_like(v)
        for name, P in self.part_poses(frame).items():
            m = self.top_mask if name == "top" else ~self.top_mask
            out[m] = v[m] @ P[:3, :3].T + P[:3, 3]
        return out

    def hand_vertices(self, side: str) -> np.ndarray:
        """[T,778,3] world vertices of ``side`` (stand-in model)."""
        pose, trans, betas = self.hands[side]
        return standin_hand(side).forward(pose, betas, trans)[0]

    # -- colour images ------------------------------------------------------------------
    def _renderer(self, W: int, H: int):
        if (W, H) not in self._gl:
            import pyrender

            from pipeline.render.context import GLContext

            ctx = GLContext(max(W, H))
            ctx.pyrender.viewport_width, ctx.pyrender.viewport_height = W, H
            scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[0.35, 0.35, 0.35])
            f = np.asarray(self.object_mesh.faces)
            nodes = {}
            for name, m in (("bottom", ~self.top_mask), ("top", self.top_mask)):
                keep = m[f].all(axis=1)
                part = self.object_mesh.submesh([np.nonzero(keep)[0]], append=True)
                nodes[name] = scene.add(pyrender.Mesh.from_trimesh(part, smooth=False))
            for side in ("left", "right"):
                verts = self.hand_vertices(side)
                meshes = []
                for vt in verts:
                    tm = trimesh.Trimesh(vt, standin_hand(side).faces, process=False)
                    tm.visual.vertex_colors = HAND_COLOURS[side]
                    meshes.append(pyrender.Mesh.from_trimesh(tm, smooth=True))
                nodes[side] = meshes
            cam = scene.add(pyrender.PerspectiveCamera(yfov=1.0))
            add_lights(scene, cam)
            bg = room_background(W, H, np.random.default_rng(self.seed))
            self._gl[(W, H)] = (ctx, scene, nodes, cam, bg)
        return self._gl[(W, H)]

    def render_rgb(self, cam_pose: np.ndarray, K: np.ndarray, W: int, H: int, frame: int) -> np.ndarray:
        """uint8 [H,W,3]: the scene at ``frame`` seen by a camera (camera -> world [4,4],
        OpenCV axes; K [3,3] OpenCV pixel centres) over the room background."""
        import pyrender

        ctx, scene, nodes, cam, bg = self._renderer(W, H)
        for name, P in self.part_poses(frame).items():
            scene.set_pose(nodes[name], P)
        cam.camera = pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=0.05, zfar=10.0)
        scene.set_pose(cam, np.asarray(cam_pose, np.float64) @ GL_FROM_CV4)
        hand_nodes = [scene.add(nodes[s][frame]) for s in ("left", "right")]
        try:
            ctx.make_current()
            rgba, _ = ctx.pyrender.render(scene, flags=pyrender.RenderFlags.RGBA)
        finally:
            for n in hand_nodes:
                scene.remove_node(n)
        alpha = rgba[..., 3:4] / 255.0
        img = rgba[..., :3] + bg * (1 - alpha)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)

    def save_rgb(self, path, cam_pose, K, W, H, frame, quality: int = 95) -> None:
        """``render_rgb`` written as a JPEG (or PNG, by suffix)."""
        Image.fromarray(self.render_rgb(cam_pose, K, W, H, frame)).save(path, quality=quality)

    def close(self) -> None:
        """Free the GL contexts made by ``render_rgb``."""
        for ctx, *_ in self._gl.values():
            ctx.close()
        self._gl.clear()


def handover_scene(n_frames: int, seed: int = 0) -> HandoverScene:
    """The bimanual hand-over scene over ``n_frames`` frames (``seed`` varies the background
    and small offsets of the motion)."""
    rng = np.random.default_rng(seed)
    jitter = rng.normal(0, 0.005, 3)
    mesh, top = articulated_box()
    s = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    rest = np.eye(4)
    rest[:3, :3] = OBJ_R0
    rest[:3, 3] = CENTRE - OBJ_R0 @ [L / 2, -HB / 2 + HT / 2, 0.0]
    poses = np.stack([_motion(x) @ rest for x in s])
    poses[:, :3, 3] += jitter
    hands = {}
    for side in ("left", "right"):
        ps, ts = zip(*(_hand_world(side, x) for x in s), strict=True)
        t = np.stack(ts) + jitter
        hands[side] = (np.stack(ps), t, BETAS[side].astype(np.float64))
    arti = MAX_OPEN * np.clip(s, 0, 1) ** 1.5
    return HandoverScene(hands=hands, object_mesh=mesh, object_poses=poses, articulation=arti,
                         top_mask=top, K=intrinsics(640, 480), seed=seed)
