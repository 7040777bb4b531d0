"""Hand-object dataset adapters, one file each, behind ``pipeline.hoi.adapter.HoiAdapter``.

``ADAPTERS`` maps the name users type (``render-hoi NAME``) to ``module:Class``; the module
is imported only when that dataset is used.
"""

from __future__ import annotations

import importlib

from pipeline.errors import UserError

ADAPTERS = {
    "dexycb": "pipeline.hoi.datasets.dexycb:DexYCBAdapter",
    "arctic": "pipeline.hoi.datasets.arctic:ArcticAdapter",
    "taco": "pipeline.hoi.datasets.taco:TacoAdapter",
    "oakink2": "pipeline.hoi.datasets.oakink2:OakInk2Adapter",
    "hot3d": "pipeline.hoi.datasets.hot3d:Hot3DAdapter",
    "sequence": "pipeline.hoi.datasets.sequence:SequenceAdapter",
}


def get_adapter(name: str):
    """A new adapter instance for dataset ``name`` (UserError naming the choices otherwise)."""
    if name not in ADAPTERS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(ADAPTERS)}")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
