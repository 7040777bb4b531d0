"""Exact per-layer normal and depth maps: many layers, one pass, one read-back.

Why not pyrender: pyrender 0.1.45 always renders through a 4x MSAA framebuffer, which
blends silhouette pixels with the background; normals, depth and labels must be exact.
So this module draws with its own GLSL program into a plain (single-sample) framebuffer
with two colour targets: RGBA8 camera-space normal ``(n+1)/2`` and R32F depth ``-z_cam``.

Speed: every (frame, layer) image is one *tile* of a large atlas framebuffer. All tiles
are drawn in one pass (a viewport per tile, a few draw calls each) and read back with one
``glReadPixels`` per target, instead of one render and one read-back per layer. Tiles are
independent: a layer is drawn alone in its tile, so a part hidden behind another part is
still complete in its own tile (occlusion-free layers).

Shapes: tiles come back as ``normal`` uint8 [n, R, R, 3] (0 = absent) and ``depth``
float32 [n, R, R] (0 = absent), rows top-down (image convention).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from pipeline.render import egl  # noqa: F401  (PYOPENGL_PLATFORM before OpenGL)
from pipeline.render.cameras import projection_from_K

_VERT = """
#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
uniform mat4 modelview;
uniform mat3 normal_matrix;
uniform mat4 projection;
out vec3 v_pos;
out vec3 v_nrm;
void main() {
    vec4 p = modelview * vec4(position, 1.0);
    v_pos = p.xyz;
    v_nrm = normal_matrix * normal;
    gl_Position = projection * p;
}
"""

_FRAG = """
#version 330 core
in vec3 v_pos;
in vec3 v_nrm;
layout(location = 0) out vec4 out_normal;
layout(location = 1) out float out_depth;
void main() {
    vec3 n = v_nrm;
    if (dot(n, n) < 1e-20) n = cross(dFdx(v_pos), dFdy(v_pos));  // degenerate vertex normal
    n = normalize(n);
    if (dot(n, -v_pos) < 0.0) n = -n;   // face the camera (meshes with mixed winding)
    out_normal = vec4(n * 0.5 + 0.5, 1.0);
    out_depth = -v_pos.z;
}
"""


@dataclass
class _GpuMesh:
    vao: int
    vbo: int
    ebo: int
    n_vertices: int
    n_faces: int


@dataclass(frozen=True)
class Draw:
    """One mesh drawn into one tile.

    ``modelview``: [4,4] object-to-camera transform (OpenGL camera axes).
    ``faces``: optional (first_face, n_faces) range of the mesh's faces (a part's faces
    must be contiguous in the mesh's face order); None draws all faces.
    """

    mesh: str
    modelview: np.ndarray
    faces: tuple[int, int] | None = None


class LayerRenderer:
    """Draws tiles of exact normal/depth maps in the current EGL context.

    ``context`` is anything with ``make_current()`` (see ``pipeline.render.context``).
    Meshes are uploaded once by name (``upload``) and may be re-posed per draw or
    re-shaped in place (``update_vertices``, for deforming hands).
    """

    def __init__(self, context, resolution: int, near: float = 0.01, far: float = 100.0,
                 max_atlas_side: int = 4096):
        self.context = context
        self.resolution = int(resolution)
        self.near, self.far = float(near), float(far)
        self.tiles_per_side = max(1, max_atlas_side // self.resolution)
        self._meshes: dict[str, _GpuMesh] = {}
        self._fbo = None
        self._fbo_dims = (0, 0)
        self.context.make_current()
        self._program = self._compile()

    # -- GL resources -------------------------------------------------------------------
    def _compile(self) -> int:
        from OpenGL import GL
        from OpenGL.GL import shaders

        prog = shaders.compileProgram(
            shaders.compileShader(_VERT, GL.GL_VERTEX_SHADER),
            shaders.compileShader(_FRAG, GL.GL_FRAGMENT_SHADER),
            validate=False,  # no VAO is bound yet; validation would fail spuriously
        )
        self._loc = {n: GL.glGetUniformLocation(prog, n) for n in ("modelview", "normal_matrix", "projection")}
        return prog

    def upload(self, name: str, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray) -> None:
        """Upload (or replace) a mesh. vertices/normals [V,3] float, faces [F,3] int, object frame."""
        from OpenGL import GL

        self.context.make_current()
        self.delete(name)
        v = np.ascontiguousarray(np.concatenate([vertices, normals], axis=1), dtype=np.float32)
        f = np.ascontiguousarray(faces, dtype=np.uint32)
        vao = GL.glGenVertexArrays(1)
        vbo, ebo = GL.glGenBuffers(2)
        GL.glBindVertexArray(vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, vbo)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, v.nbytes, v, GL.GL_DYNAMIC_DRAW)
        GL.glEnableVertexAttribArray(0)
        GL.glVertexAttribPointer(0, 3, GL.GL_FLOAT, GL.GL_FALSE, 24, ctypes.c_void_p(0))
        GL.glEnableVertexAttribArray(1)
        GL.glVertexAttribPointer(1, 3, GL.GL_FLOAT, GL.GL_FALSE, 24, ctypes.c_void_p(12))
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, ebo)
        GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, f.nbytes, f, GL.GL_STATIC_DRAW)
        GL.glBindVertexArray(0)
        self._meshes[name] = _GpuMesh(vao, vbo, ebo, len(vertices), len(faces))

    def update_vertices(self, name: str, vertices: np.ndarray, normals: np.ndarray) -> None:
        """Replace a mesh's vertices and normals in place (same count, same faces)."""
        from OpenGL import GL

        m = self._meshes[name]
        if len(vertices) != m.n_vertices:
            raise ValueError(f"update_vertices({name!r}): {len(vertices)} vertices, mesh has {m.n_vertices}")
        v = np.ascontiguousarray(np.concatenate([vertices, normals], axis=1), dtype=np.float32)
        self.context.make_current()
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, m.vbo)
        GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, v.nbytes, v)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)

    def delete(self, name: str) -> None:
        from OpenGL import GL

        m = self._meshes.pop(name, None)
        if m is not None:
            self.context.make_current()
            GL.glDeleteVertexArrays(1, [m.vao])
            GL.glDeleteBuffers(2, [m.vbo, m.ebo])

    def _framebuffer(self, width: int, height: int) -> int:
        from OpenGL import GL

        if self._fbo is not None and self._fbo_dims == (width, height):
            return self._fbo
        if self._fbo is not None:
            GL.glDeleteFramebuffers(1, [self._fbo])
            GL.glDeleteRenderbuffers(3, self._rbs)
        self._rbs = list(GL.glGenRenderbuffers(3))
        for rb, fmt in zip(self._rbs, (GL.GL_RGBA8, GL.GL_R32F, GL.GL_DEPTH_COMPONENT24), strict=True):
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, rb)
            GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, fmt, width, height)  # single-sample: exact
        self._fbo = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self._rbs[0])
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT1, GL.GL_RENDERBUFFER, self._rbs[1])
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, self._rbs[2])
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"layer framebuffer incomplete (status {status:#x})")
        self._fbo_dims = (width, height)
        return self._fbo

    # -- rendering ----------------------------------------------------------------------
    def render(self, tiles: list[list[Draw]], K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render each tile (a list of draws, usually one layer of one frame) with intrinsics K.

        Returns ``normal`` uint8 [n,R,R,3] and ``depth`` float32 [n,R,R]; 0 where nothing was drawn.
        """
        R = self.resolution
        n = len(tiles)
        normal = np.zeros((n, R, R, 3), np.uint8)
        depth = np.zeros((n, R, R), np.float32)
        per_atlas = self.tiles_per_side ** 2
        for start in range(0, n, per_atlas):
            chunk = tiles[start:start + per_atlas]
            nrm, dep = self._render_atlas(chunk, K)
            normal[start:start + len(chunk)] = nrm
            depth[start:start + len(chunk)] = dep
        return normal, depth

    def _render_atlas(self, tiles: list[list[Draw]], K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from OpenGL import GL

        R = self.resolution
        n = len(tiles)
        cols = min(n, self.tiles_per_side)
        rows = -(-n // cols)
        W, H = cols * R, rows * R
        self.context.make_current()
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._framebuffer(W, H))
        GL.glDrawBuffers(2, [GL.GL_COLOR_ATTACHMENT0, GL.GL_COLOR_ATTACHMENT1])
        GL.glDisable(GL.GL_BLEND)
        GL.glDisable(GL.GL_MULTISAMPLE)
        GL.glDisable(GL.GL_CULL_FACE)  # open meshes: both sides are surfaces
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthMask(GL.GL_TRUE)
        GL.glViewport(0, 0, W, H)
        GL.glDisable(GL.GL_SCISSOR_TEST)
        GL.glClearBufferfv(GL.GL_COLOR, 0, (0.0, 0.0, 0.0, 0.0))
        GL.glClearBufferfv(GL.GL_COLOR, 1, (0.0, 0.0, 0.0, 0.0))
        GL.glClearBufferfv(GL.GL_DEPTH, 0, (1.0,))
        # the viewport does not confine fragments (guard-band clipping): a scissor per tile does
        GL.glEnable(GL.GL_SCISSOR_TEST)
        GL.glUseProgram(self._program)
        proj = projection_from_K(K, R, R, self.near, self.far).astype(np.float32)
        GL.glUniformMatrix4fv(self._loc["projection"], 1, GL.GL_TRUE, proj)
        for i, draws in enumerate(tiles):
            r, c = divmod(i, cols)
            GL.glViewport(c * R, H - (r + 1) * R, R, R)
            GL.glScissor(c * R, H - (r + 1) * R, R, R)
            for d in draws:
                m = self._meshes[d.mesh]
                mv = np.asarray(d.modelview, dtype=np.float64)
                nm = np.linalg.inv(mv[:3, :3]).T  # normals transform by the inverse transpose
                GL.glUniformMatrix4fv(self._loc["modelview"], 1, GL.GL_TRUE, mv.astype(np.float32))
                GL.glUniformMatrix3fv(self._loc["normal_matrix"], 1, GL.GL_TRUE, nm.astype(np.float32))
                first, count = d.faces if d.faces is not None else (0, m.n_faces)
                if count <= 0:
                    continue
                GL.glBindVertexArray(m.vao)
                GL.glDrawElements(GL.GL_TRIANGLES, 3 * count, GL.GL_UNSIGNED_INT, ctypes.c_void_p(12 * first))
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)
        GL.glDisable(GL.GL_SCISSOR_TEST)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        GL.glReadBuffer(GL.GL_COLOR_ATTACHMENT0)
        nrm = GL.glReadPixels(0, 0, W, H, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
        GL.glReadBuffer(GL.GL_COLOR_ATTACHMENT1)
        dep = GL.glReadPixels(0, 0, W, H, GL.GL_RED, GL.GL_FLOAT)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        nrm = np.frombuffer(nrm, np.uint8).reshape(H, W, 4)[::-1, :, :3]
        dep = np.frombuffer(dep, np.float32).reshape(H, W)[::-1]
        # (rows, R, cols, R, ...) -> (rows*cols, R, R, ...), tile order row-major
        nrm = nrm.reshape(rows, R, cols, R, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, R, R, 3)[:n]
        dep = dep.reshape(rows, R, cols, R).transpose(0, 2, 1, 3).reshape(rows * cols, R, R)[:n]
        return nrm, dep
