"""Small synthetic datasets in each supported dataset's exact on-disk layout (stand-in hands,
not MANO), for ``make-demo-hoi --layout NAME``, the tests and the demo.

``LAYOUTS`` maps a layout name to ``module:function``; the function is
``make_demo(out: Path, n_frames: int, seed: int) -> Path``.
"""

from __future__ import annotations

import importlib

from pipeline.errors import UserError

LAYOUTS = {
    "dexycb": "pipeline.hoi.demo.dexycb:make_demo",
    "arctic": "pipeline.hoi.demo.arctic:make_demo",
    "taco": "pipeline.hoi.demo.taco:make_demo",
    "oakink2": "pipeline.hoi.demo.oakink2:make_demo",
    "hot3d": "pipeline.hoi.demo.hot3d:make_demo",
}


def make_demo(layout: str, out, n_frames: int, seed: int = 0):
    if layout not in LAYOUTS:
        raise UserError(f"unknown --layout {layout!r}; available: {', '.join(LAYOUTS)}")
    module, fn = LAYOUTS[layout].split(":")
    return getattr(importlib.import_module(module), fn)(out, n_frames, seed)
