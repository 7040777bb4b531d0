"""GL programs and textures of the RGB atlas renderer (``rgb_atlas``): the PBR program per
feature set, the resolve-and-composite program, linking without PyOpenGL's validation, and
texture upload. Sources in ``shaders_pbr``."""

from __future__ import annotations

import numpy as np

from pipeline.render import egl  # noqa: F401  (PYOPENGL_PLATFORM before OpenGL)
from pipeline.render.pbr_material import TEXTURE_SLOTS
from pipeline.render.rgb import AMBIENT, LIGHTS
from pipeline.render.shaders_pbr import COMPOSITE_FRAG, COMPOSITE_VERT, VERT, fragment_source


def compile_composite(samples: int) -> tuple[int, int]:
    """(program, empty VAO) of the resolve-and-composite pass (``shaders_pbr.COMPOSITE_FRAG``)."""
    from OpenGL import GL
    from OpenGL.GL import shaders

    prog = _link(shaders.compileShader(COMPOSITE_VERT, GL.GL_VERTEX_SHADER),
                 shaders.compileShader(f"#version 330 core\n#define N_SAMPLES {samples}\n" + COMPOSITE_FRAG,
                                       GL.GL_FRAGMENT_SHADER))
    GL.glUseProgram(prog)
    GL.glUniform1i(GL.glGetUniformLocation(prog, "colour"), 0)
    GL.glUniform1i(GL.glGetUniformLocation(prog, "background"), 1)
    GL.glUseProgram(0)
    return prog, GL.glGenVertexArrays(1)


def _link(*compiled) -> int:
    """Link compiled shaders into a program without PyOpenGL's validation (which checks
    against whatever state is bound now, e.g. two sampler types on texture unit 0)."""
    from OpenGL import GL

    prog = GL.glCreateProgram()
    for sh in compiled:
        GL.glAttachShader(prog, sh)
    GL.glLinkProgram(prog)
    if GL.glGetProgramiv(prog, GL.GL_LINK_STATUS) != GL.GL_TRUE:
        raise RuntimeError(f"shader link failed: {GL.glGetProgramInfoLog(prog)!r}")
    for sh in compiled:
        GL.glDeleteShader(sh)
    return int(prog)


def compile_pbr(features: frozenset):
    """(program, uniform locations) of the PBR shader for a feature set (``shaders_pbr``)."""
    from OpenGL import GL
    from OpenGL.GL import shaders

    prog = shaders.compileProgram(
        shaders.compileShader(VERT, GL.GL_VERTEX_SHADER),
        shaders.compileShader(fragment_source(len(LIGHTS), features), GL.GL_FRAGMENT_SHADER), validate=False)
    names = ["modelview", "normal_matrix", "projection", "base_color_factor", "metallic_factor",
             "roughness_factor", "emissive_factor", "alpha_mode", "alpha_cutoff"]
    loc = {n: GL.glGetUniformLocation(prog, n) for n in names}
    GL.glUseProgram(prog)
    for unit, slot in enumerate(TEXTURE_SLOTS):
        GL.glUniform1i(GL.glGetUniformLocation(prog, f"tex_{slot}"), unit)
    dirs = np.array([np.asarray(d, np.float64) / np.linalg.norm(d) for d, _ in LIGHTS], np.float32)
    GL.glUniform3fv(GL.glGetUniformLocation(prog, "light_dir"), len(LIGHTS), dirs)
    GL.glUniform1fv(GL.glGetUniformLocation(prog, "light_intensity"), len(LIGHTS),
                    np.array([i for _, i in LIGHTS], np.float32))
    GL.glUniform1f(GL.glGetUniformLocation(prog, "ambient"), AMBIENT)
    GL.glUseProgram(0)
    return prog, loc


def upload_texture(img: np.ndarray) -> int:
    """A mipmapped, repeating RGBA8 texture of uint8 [H,W,4] (rows top-down: uploaded flipped
    so that v = 0 is the image's last row, trimesh's uv convention, as pyrender does)."""
    from OpenGL import GL

    tex = GL.glGenTextures(1)
    GL.glBindTexture(GL.GL_TEXTURE_2D, tex)
    GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
    data = np.ascontiguousarray(img[::-1])
    GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, img.shape[1], img.shape[0], 0, GL.GL_RGBA,
                    GL.GL_UNSIGNED_BYTE, data)
    GL.glGenerateMipmap(GL.GL_TEXTURE_2D)
    GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR_MIPMAP_LINEAR)
    GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR)
    GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_S, GL.GL_REPEAT)
    GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_T, GL.GL_REPEAT)
    GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
    return tex
