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


RGB_RENDERERS = ("atlas", "pyrender")  # rgb_atlas.AtlasRGBRenderer (default), rgb.RGBRenderer


@functools.cache
def worker_renderers(resolution: int, yfov_deg: float, rgb_renderer: str = "atlas") -> Renderers:
    """Created once per worker process (per resolution, field of view and RGB renderer)."""
    from pipeline.render.context import shared_context
    from pipeline.render.layers import LayerRenderer

    if rgb_renderer not in RGB_RENDERERS:
        raise ValueError(f"rgb_renderer must be one of {RGB_RENDERERS}, got {rgb_renderer!r}")
    ctx = shared_context(resolution)
    if rgb_renderer == "pyrender":
        from pipeline.render.rgb import RGBRenderer

        rgb = RGBRenderer(ctx, yfov_deg)
    else:
        from pipeline.render.rgb_atlas import AtlasRGBRenderer

        rgb = AtlasRGBRenderer(ctx, resolution, yfov_deg, near=0.05, far=100.0)
    return Renderers(ctx, LayerRenderer(ctx, resolution, near=0.05, far=100.0), rgb)


