"""Objaverse rendering: this pipeline vs a plain pyrender baseline, side by side in one run.

    python benchmarks/render_objaverse.py [--frames 24] [--resolution 512] [--objects 10]

Measures, on the built-in demo objects (copied to reach --objects):
  * seconds per object in one process: this pipeline (one EGL context, scene built once
    per object, all T object-layer maps in one atlas pass) vs the plain way (a new
    pyrender scene per render, default 4x MSAA; normals by a normal-coloured flat-shaded
    mesh, depth from pyrender's depth buffer) -- same outputs: T RGB frames, T normal and
    depth maps, six reference views;
  * renders per second (images produced / s);
  * bytes per sample on disk, from a real store written by the runner;
  * the whole job with 1 and 2 Ray workers: wall time (start-up included) and steady-state
    objects/s (between the first and the last finished shard), and both speed-ups.
Reports medians; machines are noisy, so read the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pipeline.render import egl  # noqa: E402, F401
from schemas.config import RenderConfig  # noqa: E402


def demo_meshes(folder: Path, n: int) -> list[Path]:
    from pipeline.objaverse.sources.builtin import builtin_uids, write_builtin

    base = [write_builtin(uid, folder / "base") for uid in builtin_uids()]
    out = []
    for i in range(n):
        dst = folder / "objects" / f"obj{i:03d}-{base[i % len(base)].name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(base[i % len(base)], dst)
        out.append(dst)
    return out


def pipeline_seconds(paths, cfg) -> list[float]:
    from pipeline.mesh_io import load_object
    from pipeline.objaverse.sample import render_object
    from pipeline.render.workers import worker_renderers

    renderers = worker_renderers(cfg.resolution, cfg.yfov_deg)
    times = []
    for p in paths:
        t0 = time.perf_counter()
        render_object(load_object(p.stem, p, cfg.max_file_mb, cfg.max_faces, cfg.max_texture_px), cfg, renderers)
        times.append(time.perf_counter() - t0)
    return times


def interleaved_seconds(paths, cfg, repeats: int) -> tuple[list[float], list[float]]:
    """Per object and repeat, this pipeline then the baseline, so both see the same machine load."""
    ours, base = [], []
    for _ in range(repeats):
        for p in paths:
            ours += pipeline_seconds([p], cfg)
            base += baseline_seconds([p], cfg)
    return ours, base


_BASELINE = {}


def _baseline_renderer(resolution):
    import pyrender

    if resolution not in _BASELINE:
        _BASELINE[resolution] = pyrender.OffscreenRenderer(resolution, resolution)
    return _BASELINE[resolution]


def baseline_seconds(paths, cfg) -> list[float]:
    """The plain way: every image is its own pyrender scene and render."""
    import pyrender
    import trimesh

    from pipeline.objaverse import trajectory
    from pipeline.render.cameras import look_at, reference_view_poses
    from pipeline.seeding import sample_rng
    from schemas import REF_VIEW_NAMES

    r = _baseline_renderer(cfg.resolution)
    cam = pyrender.PerspectiveCamera(yfov=np.radians(cfg.yfov_deg))
    cam_pose = look_at((0, 0, cfg.cam_distance))
    times = []
    for p in paths:
        t0 = time.perf_counter()
        tm = trimesh.load_scene(str(p))
        lo, hi = tm.bounds
        centre = (lo + hi) / 2
        scale = 0.5 / np.linalg.norm(tm.to_mesh().vertices - centre, axis=1).max()
        norm = np.diag([scale, scale, scale, 1.0])
        norm[:3, 3] = -centre * scale
        flat = tm.to_mesh()
        flat.apply_transform(norm)
        q, t = trajectory.simulate(sample_rng(0, p.stem, 0, "trajectory"), cfg.frames, cfg.yfov_deg,
                                   cfg.cam_distance, cfg.max_rotation_deg)

        def scene_with(mesh_nodes, pose, camera_pose):
            s = pyrender.Scene(ambient_light=[0.35] * 3, bg_color=[0, 0, 0, 0])
            for m, local in mesh_nodes:
                s.add(m, pose=pose @ local)
            s.add(cam, pose=camera_pose)
            s.add(pyrender.DirectionalLight(intensity=2.5), pose=camera_pose)
            return s

        rgb_nodes = [(pyrender.Mesh.from_trimesh(g), norm @ tm.graph[n][0]) for n in tm.graph.nodes_geometry
                     for g in [tm.geometry[tm.graph[n][1]]]]
        for pose in trajectory.object_poses(q, t):
            r.render(scene_with(rgb_nodes, pose, cam_pose))  # RGB
            world = flat.copy()
            world.apply_transform(pose)
            cam_normals = world.vertex_normals @ np.linalg.inv(cam_pose)[:3, :3].T
            colored = trimesh.Trimesh(world.vertices, world.faces, vertex_colors=((cam_normals + 1) / 2 * 255).astype(np.uint8),
                                      process=False)
            r.render(scene_with([(pyrender.Mesh.from_trimesh(colored), np.eye(4))], np.eye(4), cam_pose),
                     flags=pyrender.RenderFlags.FLAT)  # normals + depth
        for view in reference_view_poses(cfg.cam_distance, REF_VIEW_NAMES):
            r.render(scene_with(rgb_nodes, np.eye(4), view))
        times.append(time.perf_counter() - t0)
    # no r.delete(): it would terminate the EGL display that every context of this process shares
    return times


def job_seconds(folder: Path, out: Path, cfg, workers: int) -> tuple[float, float, int]:
    """(whole-job wall seconds, steady-state objects/s, samples). Steady state = objects
    finished after the first one, over the time between the first and the last marker
    (excludes worker start-up: imports, EGL context creation)."""
    import json

    import ray

    from pipeline.engine import runner, shard_writer
    from pipeline.objaverse import job as objaverse_job

    if ray.is_initialized():
        ray.shutdown()
    runner._init_ray(workers, None)
    job = objaverse_job.build_job(str(folder), out, cfg, workers=workers)
    t0 = time.perf_counter()
    summary = runner.run(job, workers=workers, progress=False, overwrite=True)
    wall = time.perf_counter() - t0
    ray.shutdown()
    ends = sorted(json.loads(shard_writer.marker_path(out, k).read_text())["finished"]
                  for k in shard_writer.completed_shards(out))
    steady = (len(ends) - workers) / (ends[-1] - ends[workers - 1]) if len(ends) > workers else float("nan")
    return wall, steady, summary.samples_ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--objects", type=int, default=40, help="objects in the 1 vs 2 worker jobs")
    ap.add_argument("--repeats", type=int, default=2, help="repeats of the 5 demo objects, one process")
    args = ap.parse_args()
    cfg = RenderConfig(frames=args.frames, resolution=args.resolution, samples_per_shard=1).validate()
    tmp = Path(tempfile.mkdtemp(prefix="bench-objaverse-"))
    try:
        paths = demo_meshes(tmp, args.objects)
        ours, base = interleaved_seconds(paths[:5], cfg, args.repeats)
        images = 3 * cfg.frames + 6  # rgb + normal + depth per frame, six reference views
        from pipeline.engine.shard_writer import store_bytes

        w1, r1, n1 = job_seconds(tmp / "objects", tmp / "w1.zarr", cfg, 1)
        w2, r2, n2 = job_seconds(tmp / "objects", tmp / "w2.zarr", cfg, 2)
        per_sample = store_bytes(tmp / "w2.zarr") / max(n2, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mo, mb = statistics.median(ours), statistics.median(base)
    print(f"\nrender-objaverse benchmark: 5 demo objects x {args.repeats} (one process), {args.objects} objects "
          f"(Ray jobs), T={cfg.frames}, R={cfg.resolution}, "
          f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}, renderer: {renderer_name()}")
    print(f"{'':34}{'this pipeline':>16}{'plain pyrender':>16}{'ratio':>9}")
    print(f"{'s/object, 1 process (median)':34}{mo:>16.2f}{mb:>16.2f}{mb / mo:>8.2f}x")
    print(f"{'renders/s':34}{images / mo:>16.1f}{images / mb:>16.1f}{mb / mo:>8.2f}x")
    print(f"{'bytes/sample on disk':34}{per_sample / 2**20:>12.2f} MiB{'-':>16}")
    print(f"{'job wall, 1 worker':34}{w1:>14.1f} s  ({n1} samples)")
    print(f"{'job wall, 2 workers':34}{w2:>14.1f} s  ({n2} samples)")
    print(f"{'steady objects/s, 1 / 2 workers':34}{r1:>14.2f}  / {r2:.2f}")
    print(f"{'speed-up 1 -> 2 workers, job wall':34}{w1 / w2:>15.2f}x")
    print(f"{'speed-up 1 -> 2 workers, steady':34}{r2 / r1:>15.2f}x")


def renderer_name() -> str:
    from pipeline.render.context import shared_context

    return shared_context(64).info()["renderer"]


if __name__ == "__main__":
    main()
