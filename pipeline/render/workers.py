"""What a worker process keeps between items: one EGL context and the renderers on it."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass
class Renderers:
    """What a worker keeps between objects: one EGL context and the two renderers on it."""

    context: object
    layers: object
    rgb: object


@functools.cache
def worker_renderers(resolution: int, yfov_deg: float) -> Renderers:
    """Created once per worker process (per resolution and field of view)."""
    from pipeline.render.context import shared_context
    from pipeline.render.layers import LayerRenderer
    from pipeline.render.rgb import RGBRenderer

    ctx = shared_context(resolution)
    return Renderers(ctx, LayerRenderer(ctx, resolution, near=0.05, far=100.0), RGBRenderer(ctx, yfov_deg))


