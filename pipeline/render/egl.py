"""EGL set-up: the headless platform and which EGL device a worker renders on.

PyOpenGL picks its platform once, at first import, from ``PYOPENGL_PLATFORM``; so this
module must be imported before OpenGL/pyrender. pyrender's EGL platform renders on the EGL
device numbered ``EGL_DEVICE_ID``. EGL device numbers are not CUDA indices (EGL also lists
software devices, in another order), so on a GPU worker we map the CUDA device Ray gave us
to the EGL device whose ``EGL_CUDA_DEVICE_NV`` attribute says it is that GPU
(``choose_egl_device``: the attribute counts among the GPUs the process can see).
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
    """For each EGL device (in EGL order), its ``EGL_CUDA_DEVICE_NV`` attribute, or None (a
    software or non-NVIDIA device, or no device query extension).

    That attribute is the device's CUDA ordinal in this process: its position among the GPUs
    ``CUDA_VISIBLE_DEVICES`` lets the process see, not the physical index (NVIDIA's EGL maps
    devices through the CUDA driver, which applies ``CUDA_VISIBLE_DEVICES``; GPUs it hides have
    no mapping). pyrender is imported first: importing ``OpenGL.EGL`` before it breaks
    PyOpenGL's GL extension checks, and pyrender's import installs the EGL platform.
    """
    import ctypes

    from pyrender.platforms import egl as pegl

    EGL = pegl.egl  # OpenGL.EGL, imported by pyrender once its EGL platform is installed
    query = pegl._get_egl_func("eglQueryDeviceAttribEXT", EGL.EGLBoolean, pegl._EGLDeviceEXT, EGL.EGLint,
                               ctypes.POINTER(ctypes.c_ssize_t))
    out: list[int | None] = []
    for dev in pegl.query_devices():
        value = ctypes.c_ssize_t(-1)
        ok = query is not None and query(dev._display, EGL_CUDA_DEVICE_NV, ctypes.byref(value))
        out.append(int(value.value) if ok and value.value >= 0 else None)
    return out


def choose_egl_device(cuda_ids: list[int | None], cuda_visible: str | None) -> int:
    """The EGL device to render on, from ``egl_devices_cuda_ids()`` as this process sees it.

    Ray gives a task that asked for GPUs ``CUDA_VISIBLE_DEVICES=<its GPU ids>``: its (first)
    GPU is then CUDA ordinal 0 of the process, so the EGL device reporting 0 is the GPU Ray
    assigned. With ``CUDA_VISIBLE_DEVICES`` unset (all GPUs visible) that is the first GPU; set
    but empty (no GPU), or no NVIDIA EGL device at all: EGL device 0 (Mesa's software renderer
    on machines without a GPU).
    """
    if cuda_visible is not None and not cuda_visible.strip():
        return 0
    return cuda_ids.index(0) if 0 in cuda_ids else 0


def select_egl_device(cuda_visible: str | None = None) -> int:
    """Point pyrender at the EGL device of this process's (first visible) CUDA GPU
    (``choose_egl_device``) unless ``EGL_DEVICE_ID`` is set; returns the EGL device index."""
    if "EGL_DEVICE_ID" in os.environ:
        return int(os.environ["EGL_DEVICE_ID"])
    visible = cuda_visible if cuda_visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        ids = egl_devices_cuda_ids() if visible is None or visible.strip() else []
    except Exception:  # noqa: BLE001  (no device query extension: stay on device 0)
        ids = []
    index = choose_egl_device(ids, visible)
    os.environ["EGL_DEVICE_ID"] = str(index)
    return index
