"""Headless EGL rendering: exact per-layer normals/depth (layers.py) and textured RGB
(rgb_atlas.py: own PBR shader, many images per pass; rgb.py: pyrender).

Import ``pipeline.render.egl`` (or any module here) before anything imports OpenGL: it sets
``PYOPENGL_PLATFORM=egl``, which PyOpenGL reads once at import.
"""

from pipeline.render import egl  # noqa: F401  (sets PYOPENGL_PLATFORM before OpenGL loads)
