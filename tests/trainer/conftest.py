"""Real stores for trainer tests, made once per session.

* ``objaverse_store``: the pipeline's own render-objaverse job on the built-in objects
  (EGL render, 4 frames at 64 px, 2 samples).
* ``hoi_store``: the HOI pipeline's render-hoi on its DexYCB-layout demo (stand-in hands,
  13 layers, 4 frames at 64 px).
* ``human_store``: the human pipeline itself: render-human on its demo (a drawn figure with
  OpenPose JSON keypoints; 4 frames at 64 px; frame folders with and without masks, an mp4).
* ``write_hoi_store`` (hand layers only, no object): an HOI-kind store written with the shard
  writer (create_store / write_samples / write_marker) from synthetic but contract-valid arrays:
  each layer is a disc at its own depth, so layers overlap and D is non-trivial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas.store import N_POINTS, StoreLayout

FRAMES, RES = 4, 64


@pytest.fixture(scope="session")
def objaverse_store(ray_cluster, tmp_path_factory) -> Path:
    from pipeline.engine import runner
    from pipeline.objaverse import job as objaverse_job
    from schemas.config import RenderConfig

    out = tmp_path_factory.mktemp("stores") / "objaverse.zarr"
    cfg = RenderConfig(frames=FRAMES, resolution=RES, samples_per_shard=1).validate()
    job = objaverse_job.build_job("builtin", out, cfg, limit=2, workers=1)
    runner.run(job, 1, progress=False)
    return out


def _disc_sample(layout: StoreLayout, rng: np.random.Generator) -> dict:
    T, R, L = layout.frames, layout.resolution, len(layout.layers)
    yy, xx = np.mgrid[0:R, 0:R] + 0.5
    normal = np.zeros((T, L, R, R, 3), np.uint8)
    depth = np.zeros((T, L, R, R), np.float16)
    for t in range(T):
        for k in range(L):
            cx, cy, rad = rng.uniform(0.3 * R, 0.7 * R), rng.uniform(0.3 * R, 0.7 * R), rng.uniform(0.1 * R, 0.3 * R)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < rad**2
            n = np.array([(k % 3) - 1, 0.5, 1.0])
            n = n / np.linalg.norm(n)
            normal[t, k][inside] = np.round((n + 1) / 2 * 255).astype(np.uint8)
            depth[t, k][inside] = 0.5 + 0.01 * k + 0.001 * t
    pts = rng.normal(size=(N_POINTS, 3)).astype(np.float32)
    pn = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    s = {
        "rgb": rng.integers(0, 256, (T, R, R, 3), dtype=np.uint8),
        "mlo_normal": normal, "mlo_depth": depth, "layer_present": (depth > 0).any(axis=(2, 3)),
        "ref_views": rng.integers(0, 256, (6, R, R, 3), dtype=np.uint8),
        "background": rng.integers(0, 256, (R, R, 3), dtype=np.uint8),
        "points": pts * 0.3, "point_normals": pn.astype(np.float32),
        "obj_rot": np.tile(np.array([0, 0, 0, 1], np.float32), (T, 1)), "obj_trans": np.zeros((T, 3), np.float32),
        "obj_scale": np.ones(1, np.float32),
        "K": np.eye(3, dtype=np.float32), "cam_pose": np.eye(4, dtype=np.float32),
        "mano_pose": np.zeros((T, 2, 48), np.float32), "mano_betas": np.zeros((2, 10), np.float32),
        "mano_trans": np.zeros((T, 2, 3), np.float32), "hand_valid": np.ones((T, 2), bool),
        "joints_3d": np.zeros((T, 2, 21, 3), np.float32), "joints_2d": np.zeros((T, 2, 21, 2), np.float32),
        "valid": np.ones((T, R, R), bool), "hand_inside": np.ones((T, 2), np.float32),
    }
    # arrays the contract gains later default to zeros of their contract shape
    return {a.name: s[a.name] if a.name in s else np.zeros(layout.sample_shape(a.name), a.dtype)
            for a in layout.arrays}


def write_hoi_store(out: Path, layers: tuple[str, ...], n: int = 2, seed: int = 0) -> Path:
    from pipeline.engine import shard_writer

    layout = StoreLayout(kind="hoi", frames=FRAMES, resolution=RES, layers=layers, samples_per_shard=n)
    shard_writer.create_store(out, layout, 1, {"title": "trainer test store"})
    rng = np.random.default_rng(seed)
    shard_writer.write_samples(out, layout, list(range(n)), [_disc_sample(layout, rng) for _ in range(n)])
    shard_writer.write_marker(out, 0, [{"key": f"seq{i}/cam0", "rows": [i], "ok": True} for i in range(n)])
    return out


@pytest.fixture(scope="session")
def hoi_store(ray_cluster, tmp_path_factory) -> Path:
    """The HOI pipeline itself: its DexYCB-layout demo (stand-in hands) through render-hoi."""
    from pipeline.engine import runner
    from pipeline.hoi import job as hoi_job
    from pipeline.hoi.demo.dexycb import make_demo
    from schemas.config import HoiConfig

    root = tmp_path_factory.mktemp("dexycb")
    make_demo(root, FRAMES, 0)
    out = tmp_path_factory.mktemp("stores") / "hoi.zarr"
    cfg = HoiConfig(frames=FRAMES, resolution=RES, samples_per_shard=2, hand_model="stand-in").validate()
    job = hoi_job.build_job("dexycb", root, out, cfg, {"subjects": None, "sequences": None, "cameras": None},
                                None, 0.0)
    runner.run(job, 1, progress=False)
    return out


@pytest.fixture(scope="session")
def human_store(ray_cluster, tmp_path_factory) -> Path:
    """render-human on make-demo-human's three videos (8 frames each: two clips per video)."""
    from pipeline.engine import runner
    from pipeline.human import job as human_job
    from pipeline.human.config import HumanConfig
    from pipeline.human.demo import make_demo

    root = tmp_path_factory.mktemp("human_demo")
    make_demo(root, 2 * FRAMES, 0)
    out = tmp_path_factory.mktemp("stores") / "human.zarr"
    cfg = HumanConfig(frames=FRAMES, resolution=RES, samples_per_shard=2).validate()
    runner.run(human_job.build_job(root, out, cfg, 1), 1, progress=False)
    return out


@pytest.fixture
def tiny_cfg(objaverse_store, tmp_path):
    """The tiny preset on the Objaverse store with deterministic augmentation off."""
    from trainer.config import load_config

    # split="all": tests index the store's samples directly (the held-out split has its own tests)
    return load_config("tiny", overrides=dict(stores=[str(objaverse_store)], run_dir=str(tmp_path / "run"),
                                              log_every=1, ckpt_every=0, val_every=0, split="all"))


@pytest.fixture(scope="session")
def stage1_run(objaverse_store, hoi_store, tmp_path_factory):
    """4 steps with accumulation, EMA, warm-up, min-SNR and a checkpoint at step 2."""
    from trainer.config import load_config
    from trainer.train import train

    cfg = load_config("tiny", overrides=dict(
        stores=[str(objaverse_store), str(hoi_store)], run_dir=str(tmp_path_factory.mktemp("run1")),
        grad_accum=2, ema_decay=0.9, warmup_steps=3, snr_gamma=5.0, log_every=1, ckpt_every=2, val_every=4))
    return cfg, train(cfg, "stage1", max_steps=4)
