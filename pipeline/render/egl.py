"""EGL set-up: the headless platform and which EGL device a worker renders on.

PyOpenGL picks its platform once, at first import, from ``PYOPENGL_PLATFORM``; so this
module must be imported before OpenGL/pyrender. pyrender's EGL platform renders on the EGL
device numbered ``EGL_DEVICE_ID``. EGL device numbers are not CUDA indices (EGL also lists
software devices, in another order), so on a GPU worker we map the CUDA device Ray gave us
to the EGL device whose ``EGL_CUDA_DEVICE_NV`` attribute equals it.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
# Mesa's llvmpipe gives PBR shading results that differ in rare pixels by 1/255 with the
# number of render threads. One thread per worker process (workers = cores) keeps stores
# bit-identical across runs and machines; MANIVIDEO_LP_THREADS overrides it.
os.environ["LP_NUM_THREADS"] = os.environ.get("MANIVIDEO_LP_THREADS", "1")

EGL_CUDA_DEVICE_NV = 0x323A


def egl_devices_cuda_ids() -> list[int | None]:
    """For each EGL device (in EGL order), its CUDA device index, or None (software / non-NVIDIA)."""
    import ctypes

    # OpenGL.EGL through pyrender's EGL module, which installs PyOpenGL's EGL platform first
    # (importing OpenGL.EGL before it breaks PyOpenGL 3.1.0's extension checks: bytes/str TypeError)
    from pyrender.platforms import egl as pegl

    EGL = pegl.egl
    pegl._ensure_egl_loaded()
    devices = pegl.query_devices()
    try:
        query = EGL.eglGetProcAddress("eglQueryDeviceAttribEXT")
        proto = ctypes.CFUNCTYPE(EGL.EGLBoolean, ctypes.c_void_p, EGL.EGLint, ctypes.POINTER(ctypes.c_long))
        fn = proto(query) if query else None
    except Exception:  # noqa: BLE001  (missing extension: treat every device as software)
        fn = None
    out: list[int | None] = []
    for dev in devices:
        value = ctypes.c_long(-1)
        # pyrender's EGLDevice keeps the EGLDeviceEXT handle as ``_display`` (pyrender/platforms/egl.py)
        ok = fn is not None and fn(ctypes.cast(dev._display, ctypes.c_void_p), EGL_CUDA_DEVICE_NV, ctypes.byref(value))
        out.append(int(value.value) if ok and value.value >= 0 else None)
    return out


def select_egl_device(cuda_visible: str | None = None) -> int:
    """Point pyrender at the EGL device of this process's (first visible) CUDA GPU.

    Ray sets ``CUDA_VISIBLE_DEVICES`` for a task that asked for a GPU; its first entry is
    the physical CUDA index. With no GPU (or no NVIDIA EGL), keeps EGL device 0, which is
    Mesa's software renderer on CPU machines. Returns the EGL device index chosen.
    """
    if "EGL_DEVICE_ID" in os.environ:
        return int(os.environ["EGL_DEVICE_ID"])
    visible = cuda_visible if cuda_visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES", "")
    first = visible.split(",")[0].strip()
    index = 0
    if first.isdigit():
        try:
            ids = egl_devices_cuda_ids()
            if int(first) in ids:
                index = ids.index(int(first))
        except Exception:  # noqa: BLE001  (no device query extension: stay on device 0)
            index = 0
    os.environ["EGL_DEVICE_ID"] = str(index)
    return index

