"""One headless EGL context per worker process, shared by the RGB and layer renderers.

pyrender's ``OffscreenRenderer`` creates the EGL context (on ``EGL_DEVICE_ID``, see
``egl.select_egl_device``); the layer renderer draws in the same context. Creating a
context costs ~100 ms and GPU memory, so a worker makes one and keeps it (``shared``).
"""

from __future__ import annotations

import functools

from pipeline.render import egl


class GLContext:
    """An EGL context with a pyrender offscreen renderer of a fixed square size."""

    def __init__(self, resolution: int):
        egl.select_egl_device()
        import pyrender

        self.resolution = int(resolution)
        self.pyrender = pyrender.OffscreenRenderer(self.resolution, self.resolution)

    def make_current(self) -> None:
        self.pyrender._platform.make_current()

    def info(self) -> dict:
        from OpenGL import GL

        self.make_current()
        return {"renderer": GL.glGetString(GL.GL_RENDERER).decode(), "version": GL.glGetString(GL.GL_VERSION).decode()}

    def close(self) -> None:
        """Free this context only. (pyrender's ``delete()`` also calls ``eglTerminate`` on
        the EGL display, which every context of the process shares: it would break them all.)"""
        if self.pyrender is None:
            return
        from OpenGL import EGL

        platform = self.pyrender._platform
        platform.make_current()
        self.pyrender._renderer.delete()
        EGL.eglMakeCurrent(platform._egl_display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
        EGL.eglDestroyContext(platform._egl_display, platform._egl_context)
        # disarm pyrender's own __del__ -> delete() -> eglTerminate(shared display)
        platform._egl_context = platform._egl_display = None
        self.pyrender._platform = None
        self.pyrender = None

    def __del__(self):  # a dropped context frees itself only, never the shared display
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown: GL may already be gone)
            pass


@functools.cache
def shared_context(resolution: int) -> GLContext:
    """The worker's context for this resolution, created on first use and kept (a worker
    renders one or two resolutions; evicting one used to terminate the shared EGL display)."""
    return GLContext(resolution)
