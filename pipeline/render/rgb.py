"""Textured RGB renders of a trimesh scene with pyrender (materials, textures, vertex colours, PBR).

RGB keeps pyrender's 4x MSAA (anti-aliased edges are right for images); exact per-pixel
quantities come from ``layers.py`` instead. The pyrender scene is built once per object;
each frame only moves the object's root node and the camera.
"""

from __future__ import annotations

import numpy as np
import trimesh

from pipeline.render import egl  # noqa: F401

# The light rig, fixed in the camera frame (moves with the camera): directional lights as
# (direction toward the light in camera axes, intensity), white; plus an ambient term.
LIGHTS = (((0.3, 0.5, 1.0), 2.5), ((-0.6, 0.2, 0.4), 1.0), ((0.0, -0.5, 0.3), 0.6))
AMBIENT = 0.35


def _pyrender_meshes(scene: trimesh.Scene, to_canonical: np.ndarray):
    """(pyrender.Mesh, pose [4,4]) per geometry instance, poses in the object's canonical frame."""
    import pyrender

    from pipeline.assets.mesh_io import triangle_instances

    cache: dict[str, object] = {}
    for _, geom_name, geom, transform in triangle_instances(scene):
        if geom_name not in cache:
            try:
                cache[geom_name] = pyrender.Mesh.from_trimesh(geom, smooth=True)
            except Exception:  # noqa: BLE001  (broken UVs/material: fall back to a plain material)
                plain = trimesh.Trimesh(geom.vertices, geom.faces, process=False)
                cache[geom_name] = pyrender.Mesh.from_trimesh(plain, smooth=True)
        yield cache[geom_name], to_canonical @ transform


class RGBRenderer:
    """Renders one object at a time under a fixed light rig that moves with the camera."""

    def __init__(self, context, yfov_deg: float):
        import pyrender

        self.context = context
        self.yfov_deg = float(yfov_deg)
        self.scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[AMBIENT] * 3)
        self.root = pyrender.Node(name="object", matrix=np.eye(4))
        self.scene.add_node(self.root)
        self.camera = pyrender.Node(name="camera", camera=pyrender.PerspectiveCamera(yfov=np.radians(yfov_deg)),
                                    matrix=np.eye(4))
        self.scene.add_node(self.camera)
        for direction, intensity in LIGHTS:
            light = pyrender.DirectionalLight(color=np.ones(3), intensity=intensity)
            pose = _light_pose(np.asarray(direction, dtype=np.float64))
            self.scene.add_node(pyrender.Node(light=light, matrix=pose), parent_node=self.camera)
        self._parts: list = []

    def set_object(self, scene: trimesh.Scene, to_canonical: np.ndarray) -> int:
        """Replace the object; returns the number of mesh instances added."""
        import pyrender

        for node in self._parts:
            self.scene.remove_node(node)
        self._parts = []
        for mesh, pose in _pyrender_meshes(scene, to_canonical):
            node = pyrender.Node(mesh=mesh, matrix=pose)
            self.scene.add_node(node, parent_node=self.root)
            self._parts.append(node)
        return len(self._parts)

    def render(self, object_pose: np.ndarray, camera_pose: np.ndarray, background: np.ndarray) -> np.ndarray:
        """uint8 [R,R,3]: the object at ``object_pose`` (object-to-world) composited over
        ``background`` (uint8 [R,R,3]). The MSAA resolve averages samples against a black,
        transparent clear colour, so the colour is premultiplied by the coverage alpha."""
        import pyrender

        self.scene.set_pose(self.root, object_pose)
        self.scene.set_pose(self.camera, camera_pose)
        rgba, _ = self.context.pyrender.render(self.scene, flags=pyrender.RenderFlags.RGBA)
        self.last_alpha = rgba[..., 3]  # uint8 [R,R] coverage of the last render (object pixel fraction)
        return composite_premultiplied(rgba, background)

    def render_many(self, object_poses, camera_poses, backgrounds) -> np.ndarray:
        """uint8 [n,R,R,3], one render per pose (the interface of ``rgb_atlas.AtlasRGBRenderer``):
        object_poses [n,4,4]; camera_poses [n,4,4] or one [4,4]; backgrounds [n,R,R,3] or one
        [R,R,3]. ``last_alpha`` becomes uint8 [n,R,R]."""
        n = len(object_poses)
        cams = np.broadcast_to(camera_poses, (n, 4, 4))
        bgs = np.broadcast_to(backgrounds, (n,) + np.shape(backgrounds)[-3:])
        out, alpha = [], []
        for pose, cam, bg in zip(object_poses, cams, bgs, strict=True):
            out.append(self.render(pose, cam, bg))
            alpha.append(self.last_alpha)
        self.last_alpha = np.stack(alpha)
        return np.stack(out)


def composite_premultiplied(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] = rgb + background * (255 - alpha) / 255, rounded; rgba premultiplied uint8 [H,W,4]."""
    inv = 255 - rgba[..., 3:4].astype(np.uint16)
    t = background.astype(np.uint16) * inv + 128  # <= 65153: no overflow
    t = (t + (t >> 8)) >> 8  # == (x + 127) // 255 for x in 0..65025 (exact), without a division
    t += rgba[..., :3]
    return np.minimum(t, 255, out=t).astype(np.uint8)


def _light_pose(direction: np.ndarray) -> np.ndarray:
    """Pose of a directional light (shining down its -z) coming from ``direction`` in the camera frame."""
    z = direction / np.linalg.norm(direction)
    x = np.cross([0.0, 1.0, 0.0], z)
    x = x / np.linalg.norm(x) if np.linalg.norm(x) > 1e-6 else np.array([1.0, 0, 0])
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = x, y, z
    return pose
