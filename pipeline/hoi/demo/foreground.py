"""What the demo scene draws at each pixel, without the room: the truth the tests compare the
MLO layers with ("the layers sit on the image").

``render_foreground`` renders ``demo.scene.HandoverScene`` (both hands and the box, nothing a
demo writer adds to it afterwards) over a black backdrop instead of the room, by rendering with
a black copy of the scene renderer's cached backdrop.
"""

from __future__ import annotations

import numpy as np

MIN_LEVEL = 24     # a pixel is foreground when some channel is at least this (edges below half cover drop out)


def render_foreground(scene, cam_pose: np.ndarray, K: np.ndarray, W: int, H: int, frame: int) -> np.ndarray:
    """bool [H,W]: pixels the hands or the box cover at ``frame`` for a camera (camera -> scene
    [4,4], OpenCV axes; K [3,3] OpenCV pixel centres), as ``scene.render_rgb`` draws them."""
    ctx, pyscene, nodes, cam, bg = scene._renderer(W, H)
    scene._gl[(W, H)] = (ctx, pyscene, nodes, cam, np.zeros_like(bg))
    try:
        img = scene.render_rgb(cam_pose, K, W, H, frame)
    finally:
        scene._gl[(W, H)] = (ctx, pyscene, nodes, cam, bg)
    return img.max(axis=-1) >= MIN_LEVEL
