"""RGB frames of one object, many images in one atlas pass, with the project's own PBR shader.

Replaces pyrender for RGB (``--rgb-renderer pyrender`` keeps it, ``rgb.RGBRenderer``): the
same metallic-roughness shading as pyrender's ``mesh.frag`` (Cook-Torrance with Schlick
Fresnel, Smith-Schlick G and GGX D; sRGB base-colour/emissive textures; output gamma
1/2.2), the same light rig (``rgb.LIGHTS``, ``rgb.AMBIENT``, fixed in the camera frame),
the same camera (``cameras.intrinsics`` of the field of view, near 0.05) and the same 4x
MSAA, in the camera frame. Materials, vertex colours, alpha modes, normal maps: see
``pbr_material``; where pyrender departs from the glTF spec (alpha modes, vertex colour
on the base colour, occlusion on the ambient term only, back faces of double-sided
materials, mirrored instances) this renderer follows the spec.

Speed: every image is a tile of a multisampled atlas framebuffer (the layer renderer's
tile machinery, ``layers.projected_bounds/pixel_rect/pack_rects/window_projection``): a tile
covers only the pixel rectangle the object's convex hull can project to; all tiles are
drawn in one pass (viewport + scissor per tile); one more pass resolves the MSAA samples
and composites them over the tiles' backgrounds (premultiplied alpha: the average of the
samples plus the background times one minus their mean alpha, as
``rgb.composite_premultiplied`` does on the CPU for pyrender, to within 1/255), and one
``glReadPixels`` reads the result and the coverage alpha.

Shapes: ``render_many`` returns uint8 [n,R,R,3] (rows top-down) and leaves the coverage
alpha uint8 [n,R,R] in ``last_alpha``.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from pipeline.render import egl  # noqa: F401  (PYOPENGL_PLATFORM before OpenGL)
from pipeline.render.atlas_gl import compile_composite, compile_pbr, upload_texture
from pipeline.render.cameras import intrinsics
from pipeline.render.layers import pack_rects, pixel_rect, projected_bounds, window_projection
from pipeline.render.pbr_material import BLEND, MASK, TEXTURE_SLOTS, primitive_of

MSAA_SAMPLES = 4  # as pyrender's offscreen renderer


@dataclass
class _GpuPrimitive:
    vao: int
    vbo: int
    ebo: int
    n_faces: int
    material: object
    textures: dict  # slot -> GL texture id


@dataclass
class _Instance:
    prim: int
    model: np.ndarray  # [4,4] geometry frame -> canonical frame


class AtlasRGBRenderer:
    """Renders one object at a time; interface of ``rgb.RGBRenderer`` plus ``render_many``.

    ``context``: anything with ``make_current()``; ``resolution``: R; ``yfov_deg``: the
    vertical field of view of the square images.
    """

    def __init__(self, context, resolution: int, yfov_deg: float, near: float = 0.05, far: float = 100.0,
                 samples: int = MSAA_SAMPLES, max_atlas_side: int = 2048):
        self.context = context
        self.resolution = int(resolution)
        self.yfov_deg = float(yfov_deg)
        self.near, self.far = float(near), float(far)
        self.samples = max(1, int(samples))
        self.side = max(int(max_atlas_side), self.resolution)
        self.K = intrinsics(self.resolution, self.yfov_deg)
        self._prims: list[_GpuPrimitive] = []
        self._instances: list[_Instance] = []
        self._hull = np.zeros((0, 3))
        self._fbo_dims = (0, 0)
        self._fbos = None
        self._bg = None  # uint8 [FH,FW,3] background atlas (see _resolve_over_backgrounds)
        self.last_alpha = None
        self.context.make_current()
        self._programs: dict[frozenset, tuple[int, dict]] = {}  # features -> (program, uniform locations)
        self._loc: dict = {}
        self._composite, self._empty_vao = compile_composite(self.samples)

    # -- object ---------------------------------------------------------------------------
    def set_object(self, scene, to_canonical: np.ndarray) -> int:
        """Replace the object (trimesh.Scene, [4,4] file -> canonical); returns the number of
        mesh instances added."""
        from pipeline.assets.mesh_io import triangle_instances

        self._free_object()
        self.context.make_current()
        index: dict[str, int] = {}
        hulls: dict[str, np.ndarray] = {}
        points = []
        for _, name, geom, transform in triangle_instances(scene):
            if name not in index:
                index[name] = len(self._prims)
                self._prims.append(self._upload(primitive_of(geom)))
            model = np.asarray(to_canonical, np.float64) @ np.asarray(transform, np.float64)
            self._instances.append(_Instance(index[name], model))
            if name not in hulls:
                hulls[name] = _hull_points(np.asarray(geom.vertices, np.float64))
            points.append(hulls[name] @ model[:3, :3].T + model[:3, 3])
        if len(points) > 1:  # instances: one more reduction over all of them
            self._hull = _hull_points(np.concatenate(points))
        else:
            self._hull = points[0] if points else np.zeros((0, 3))
        return len(self._instances)

    def _upload(self, prim) -> _GpuPrimitive:
        from OpenGL import GL

        vao = GL.glGenVertexArrays(1)
        vbo, ebo = GL.glGenBuffers(2)
        GL.glBindVertexArray(vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, vbo)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, prim.vertices.nbytes, prim.vertices, GL.GL_STATIC_DRAW)
        for loc, (size, offset) in enumerate(((3, 0), (3, 12), (2, 24), (4, 32))):
            GL.glEnableVertexAttribArray(loc)
            GL.glVertexAttribPointer(loc, size, GL.GL_FLOAT, GL.GL_FALSE, 48, ctypes.c_void_p(offset))
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, ebo)
        GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, prim.faces.nbytes, prim.faces, GL.GL_STATIC_DRAW)
        GL.glBindVertexArray(0)
        textures = {slot: upload_texture(img) for slot, img in prim.material.textures.items()}
        return _GpuPrimitive(vao, vbo, ebo, len(prim.faces), prim.material, textures)

    def _free_object(self) -> None:
        from OpenGL import GL

        if self._prims:
            self.context.make_current()
        for p in self._prims:
            GL.glDeleteVertexArrays(1, [p.vao])
            GL.glDeleteBuffers(2, [p.vbo, p.ebo])
            if p.textures:
                GL.glDeleteTextures(list(p.textures.values()))
        self._prims, self._instances = [], []

    # -- rendering ------------------------------------------------------------------------
    def render(self, object_pose: np.ndarray, camera_pose: np.ndarray, background: np.ndarray) -> np.ndarray:
        """uint8 [R,R,3], one image (``rgb.RGBRenderer.render``); ``last_alpha`` uint8 [R,R]."""
        out = self.render_many(np.asarray(object_pose)[None], camera_pose, background)
        self.last_alpha = self.last_alpha[0]
        return out[0]

    def render_many(self, object_poses, camera_poses, backgrounds) -> np.ndarray:
        """uint8 [n,R,R,3]: the object at object_poses [n,4,4] (object -> world) seen from
        camera_poses [n,4,4] or one [4,4] (camera -> world, OpenGL axes), composited over
        backgrounds uint8 [n,R,R,3] or one [R,R,3]. ``last_alpha``: coverage uint8 [n,R,R]."""
        R = self.resolution
        n = len(object_poses)
        cams = np.broadcast_to(np.asarray(camera_poses, np.float64), (n, 4, 4))
        bgs = np.broadcast_to(np.asarray(backgrounds, np.uint8), (n, R, R, 3))
        views = [np.linalg.inv(c) @ np.asarray(p, np.float64) for p, c in zip(object_poses, cams, strict=True)]
        out = np.empty((n, R, R, 3), np.uint8)
        out[...] = bgs  # (a broadcast copy with np.array is 4x slower)
        self.last_alpha = np.zeros((n, R, R), np.uint8)
        rects = [(i, r) for i, r in ((i, self._tile_rect(v)) for i, v in enumerate(views)) if r is not None]
        for batch in pack_rects(rects, self.side):
            rgba = self._render_atlas([(views[i], (x0, y0, w, h), pos, bgs[i, y0:y0 + h, x0:x0 + w])
                                       for i, (x0, y0, w, h), pos in batch])
            for i, (x0, y0, w, h), (ax, ay) in batch:
                tile = rgba[ay:ay + h, ax:ax + w]
                out[i, y0:y0 + h, x0:x0 + w] = tile[..., :3]
                self.last_alpha[i, y0:y0 + h, x0:x0 + w] = tile[..., 3]
        return out

    def _tile_rect(self, view: np.ndarray) -> tuple[int, int, int, int] | None:
        if len(self._hull) == 0:
            return None
        bounds = projected_bounds(self._hull @ view[:3, :3].T + view[:3, 3], self.K, self.near)
        if bounds is None:  # crosses the near plane
            return (0, 0, self.resolution, self.resolution)
        return pixel_rect(bounds[0], bounds[1], self.resolution)

    def _framebuffers(self, W: int, H: int) -> int:
        """(multisampled fbo, resolve fbo), grow-only, sides rounded up to 256. The MSAA colour
        is a multisample texture (read by the composite pass), the background a plain texture."""
        from OpenGL import GL

        want = (max(self._fbo_dims[0], -(-W // 256) * 256), max(self._fbo_dims[1], -(-H // 256) * 256))
        if self._fbos is not None and want == self._fbo_dims:
            return self._fbos
        if self._fbos is not None:
            GL.glDeleteFramebuffers(2, list(self._fbos))
            GL.glDeleteRenderbuffers(2, self._rbs)
            GL.glDeleteTextures(list(self._texs))
        self._rbs = list(GL.glGenRenderbuffers(2))  # MSAA depth, resolved colour
        self._texs = list(GL.glGenTextures(2))  # MSAA colour, background atlas
        for rb, fmt, s in zip(self._rbs, (GL.GL_DEPTH_COMPONENT24, GL.GL_RGBA8), (self.samples, 0), strict=True):
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, rb)
            GL.glRenderbufferStorageMultisample(GL.GL_RENDERBUFFER, s, fmt, *want)
        GL.glBindTexture(GL.GL_TEXTURE_2D_MULTISAMPLE, self._texs[0])
        GL.glTexImage2DMultisample(GL.GL_TEXTURE_2D_MULTISAMPLE, self.samples, GL.GL_RGBA8, *want, GL.GL_TRUE)
        GL.glBindTexture(GL.GL_TEXTURE_2D_MULTISAMPLE, 0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._texs[1])
        GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, *want, 0, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, None)
        for param in (GL.GL_TEXTURE_MIN_FILTER, GL.GL_TEXTURE_MAG_FILTER):
            GL.glTexParameteri(GL.GL_TEXTURE_2D, param, GL.GL_NEAREST)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        fbos = list(GL.glGenFramebuffers(2))
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, fbos[0])
        GL.glFramebufferTexture2D(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_TEXTURE_2D_MULTISAMPLE,
                                  self._texs[0], 0)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, self._rbs[0])
        self._check_complete()
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, fbos[1])
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self._rbs[1])
        self._check_complete()
        self._fbos, self._fbo_dims = tuple(fbos), want
        return self._fbos

    @staticmethod
    def _check_complete() -> None:
        from OpenGL import GL

        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"RGB atlas framebuffer incomplete (status {status:#x})")

    def _render_atlas(self, items) -> np.ndarray:
        """Draw tiles ``(view [4,4], rect (x0,y0,w,h), atlas pos (ax,ay), background uint8
        [h,w,3])``; returns uint8 [H,W,4] of the used atlas corner, rows top-down: the colour
        composited over each tile's background, and the coverage alpha."""
        from OpenGL import GL

        W = max(ax + r[2] for _, r, (ax, _), _ in items)
        H = max(ay + r[3] for _, r, (_, ay), _ in items)
        self.context.make_current()
        ms, resolve = self._framebuffers(W, H)
        FH = self._fbo_dims[1]
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, ms)
        GL.glDrawBuffers(1, [GL.GL_COLOR_ATTACHMENT0])
        GL.glEnable(GL.GL_MULTISAMPLE)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthMask(GL.GL_TRUE)
        GL.glEnable(GL.GL_SCISSOR_TEST)
        GL.glScissor(0, FH - H, W, H)
        GL.glClearBufferfv(GL.GL_COLOR, 0, (0.0, 0.0, 0.0, 0.0))
        GL.glClearBufferfv(GL.GL_DEPTH, 0, (1.0,))
        models = np.stack([inst.model for inst in self._instances])  # [N,4,4]
        tiles = []
        for view, (x0, y0, w, h), (ax, ay), _ in items:
            mv = view @ models  # per instance, batched: normals move by the inverse transpose
            tiles.append((window_projection(self.K, (x0, y0, w, h), self.near, self.far), (ax, FH - ay - h, w, h),
                          (mv.astype(np.float32), _normal_matrices(mv[:, :3, :3]), np.linalg.det(mv[:, :3, :3]) < 0,
                           mv[:, :3, 3])))
        opaque = [k for k, inst in enumerate(self._instances) if self._prims[inst.prim].material.alpha_mode != BLEND]
        GL.glDisable(GL.GL_BLEND)
        for k in sorted(opaque, key=lambda k: self._instances[k].prim):  # material state once per primitive
            self._bind(self._instances[k].prim)
            for proj, box, mats in tiles:
                self._draw(k, proj, box, mats)
        blend = [k for k in range(len(self._instances)) if k not in set(opaque)]
        if blend:  # over the opaque surfaces, farthest instance first (as pyrender orders them)
            GL.glEnable(GL.GL_BLEND)
            GL.glBlendFuncSeparate(GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA, GL.GL_ONE, GL.GL_ONE_MINUS_SRC_ALPHA)
            for proj, box, mats in tiles:
                for k in sorted(blend, key=lambda k: -np.linalg.norm(mats[3][k])):
                    self._bind(self._instances[k].prim)
                    self._draw(k, proj, box, mats)
            GL.glDisable(GL.GL_BLEND)
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)
        GL.glDisable(GL.GL_CULL_FACE)
        GL.glFrontFace(GL.GL_CCW)
        self._resolve_over_backgrounds(items, resolve, W, H)
        GL.glDisable(GL.GL_SCISSOR_TEST)
        GL.glReadBuffer(GL.GL_COLOR_ATTACHMENT0)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        data = GL.glReadPixels(0, FH - H, W, H, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        return np.frombuffer(data, np.uint8).reshape(H, W, 4)[::-1]

    def _resolve_over_backgrounds(self, items, resolve: int, W: int, H: int) -> None:
        """Average the MSAA samples and composite them over the tiles' backgrounds into the
        resolve framebuffer (used corner only); leaves it bound."""
        from OpenGL import GL

        FW, FH = self._fbo_dims
        if self._bg is None or self._bg.shape[:2] != (FH, FW):
            self._bg = np.zeros((FH, FW, 3), np.uint8)  # GL row order (bottom-up), kept between calls
        bg = self._bg[::-1]  # top-down view: tiles land in GL order, uploaded without a flipped copy
        for _, (_, _, w, h), (ax, ay), tile_bg in items:
            bg[ay:ay + h, ax:ax + w] = tile_bg  # pixels between tiles are never read back
        GL.glActiveTexture(GL.GL_TEXTURE1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._texs[1])
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glPixelStorei(GL.GL_UNPACK_ROW_LENGTH, FW)
        try:
            GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, FH - H, W, H, GL.GL_RGB, GL.GL_UNSIGNED_BYTE, self._bg[FH - H:])
        finally:
            GL.glPixelStorei(GL.GL_UNPACK_ROW_LENGTH, 0)  # other uploads in this context read packed rows
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D_MULTISAMPLE, self._texs[0])
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, resolve)
        GL.glDisable(GL.GL_DEPTH_TEST)
        GL.glDisable(GL.GL_BLEND)
        GL.glEnable(GL.GL_SCISSOR_TEST)
        GL.glViewport(0, FH - H, W, H)
        GL.glScissor(0, FH - H, W, H)
        GL.glUseProgram(self._composite)
        GL.glBindVertexArray(self._empty_vao)
        GL.glDrawArrays(GL.GL_TRIANGLE_STRIP, 0, 4)
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)
        GL.glBindTexture(GL.GL_TEXTURE_2D_MULTISAMPLE, 0)
        GL.glActiveTexture(GL.GL_TEXTURE1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glEnable(GL.GL_DEPTH_TEST)

    def _bind(self, prim_index: int) -> None:
        from OpenGL import GL

        p = self._prims[prim_index]
        m = p.material
        features = frozenset([f"HAS_{slot.upper()}" for slot in p.textures] + ["ALPHA_MASK"] * (m.alpha_mode == MASK)
                             + ["DOUBLE_SIDED"] * bool(m.double_sided))
        if features not in self._programs:
            self._programs[features] = compile_pbr(features)
        program, loc = self._programs[features]
        GL.glUseProgram(program)
        self._loc = loc
        GL.glUniform4f(loc["base_color_factor"], *m.base_color.astype(np.float32))
        GL.glUniform1f(loc["metallic_factor"], m.metallic)
        GL.glUniform1f(loc["roughness_factor"], m.roughness)
        GL.glUniform3f(loc["emissive_factor"], *m.emissive.astype(np.float32))
        GL.glUniform1i(loc["alpha_mode"], m.alpha_mode)
        GL.glUniform1f(loc["alpha_cutoff"], m.alpha_cutoff)
        for unit, slot in enumerate(TEXTURE_SLOTS):
            if slot in p.textures:
                GL.glActiveTexture(GL.GL_TEXTURE0 + unit)
                GL.glBindTexture(GL.GL_TEXTURE_2D, p.textures[slot])
        GL.glActiveTexture(GL.GL_TEXTURE0)
        if m.double_sided:
            GL.glDisable(GL.GL_CULL_FACE)
        else:
            GL.glEnable(GL.GL_CULL_FACE)
            GL.glCullFace(GL.GL_BACK)
        GL.glBindVertexArray(p.vao)

    def _draw(self, k: int, proj: np.ndarray, box, mats) -> None:
        """Draw instance k into one tile; ``mats``: the tile's per-instance (modelview float32
        [N,4,4], normal matrix float32 [N,3,3], mirrored bool [N], translation [N,3])."""
        from OpenGL import GL

        mv, nm, mirrored, _ = mats
        GL.glViewport(*box)
        GL.glScissor(*box)  # llvmpipe's guard band lets fragments spill past the viewport
        GL.glUniformMatrix4fv(self._loc["projection"], 1, GL.GL_TRUE, proj)
        GL.glUniformMatrix4fv(self._loc["modelview"], 1, GL.GL_TRUE, mv[k])
        GL.glUniformMatrix3fv(self._loc["normal_matrix"], 1, GL.GL_TRUE, nm[k])
        # a mirroring transform turns the winding inside out (glTF: front faces stay front)
        GL.glFrontFace(GL.GL_CW if mirrored[k] else GL.GL_CCW)
        n = self._prims[self._instances[k].prim].n_faces
        GL.glDrawElements(GL.GL_TRIANGLES, 3 * n, GL.GL_UNSIGNED_INT, ctypes.c_void_p(0))


def _normal_matrices(m: np.ndarray) -> np.ndarray:
    """float32 [N,3,3] inverse transposes of m [N,3,3] (pseudo-inverse for a degenerate one)."""
    try:
        inv = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(m)
    return np.ascontiguousarray(inv.transpose(0, 2, 1), np.float32)


HULL_MAX_POINTS = 20_000  # above this, projecting every point per tile costs less than the hull


def _hull_points(v: np.ndarray) -> np.ndarray:
    """The convex hull's vertices of points float [N,3] (all of them if few, many or
    degenerate): their projections bound the projections of all points (all in front of the
    camera). A dense convex mesh has nearly every vertex on its hull (measured 0.36 s for
    164k points), so above ``HULL_MAX_POINTS`` the points are kept as they are."""
    v = v[np.isfinite(v).all(axis=1)]
    if len(v) <= 64 or len(v) > HULL_MAX_POINTS:
        return v
    try:
        from scipy.spatial import ConvexHull

        return v[ConvexHull(v).vertices]
    except Exception:  # noqa: BLE001  (flat or degenerate point sets: keep every point)
        return v
