"""Stores shared by pipeline tests of several folders (hoi/, test_view.py): a synthetic
DexYCB-layout dataset (make-demo-hoi) and an HOI store rendered from it."""

from __future__ import annotations

from pathlib import Path

import pytest

HOI_FRAMES, HOI_RES = 4, 96


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    from pipeline.hoi.demo.dexycb import make_demo

    return make_demo(tmp_path_factory.mktemp("dexycb") / "demo", n_frames=12)


@pytest.fixture(scope="session")
def hoi_store(ray_cluster, demo_root, tmp_path_factory) -> Path:
    """render-hoi dexycb --hand-model stand-in through the real runner (Ray)."""
    from pipeline.hoi.commands import render_hoi

    out = tmp_path_factory.mktemp("hoi") / "hoi.zarr"
    render_hoi("dexycb", root=demo_root, hand_model="stand-in", out=out, frames=HOI_FRAMES, resolution=HOI_RES,
               samples_per_shard=4, workers=2, progress=False)
    return out
