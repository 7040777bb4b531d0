"""EGL contexts: dropping one (closed or garbage-collected) must not break the others, which
share one EGL display per process (pyrender's own delete() terminates that display)."""

from __future__ import annotations

import gc

import numpy as np


def test_dropped_contexts_leave_the_shared_display_working():
    from pipeline.render.cameras import intrinsics
    from pipeline.render.context import GLContext
    from pipeline.render.layers import Draw
    from pipeline.render.workers import worker_renderers

    R = 48
    rs = worker_renderers(R, 40.0)  # live before, in use after the others go
    closed = GLContext(32)
    closed.close()
    dropped = GLContext(40)  # never closed: garbage collection frees it
    del closed, dropped
    gc.collect()
    v = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0, 0.5, 0]], np.float32)
    rs.layers.upload("tri", v, np.tile([0, 0, 1.0], (3, 1)), np.array([[0, 1, 2]]))
    mv = np.eye(4)
    mv[2, 3] = -2.0
    normal, depth = rs.layers.render([[Draw("tri", mv)]], intrinsics(R, 40.0))
    rs.layers.delete("tri")
    assert (depth > 0).sum() > 50 and np.allclose(depth[depth > 0], 2.0, atol=1e-3)
