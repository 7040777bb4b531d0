"""Objaverse rendering: this pipeline vs a plain pyrender baseline, side by side in one run.

    LP_NUM_THREADS=1 python benchmarks/render_objaverse.py [--frames 24] [--resolution 512]
        [--repeats 3] [--objects 24] [--jobs 3] [--sheet out/rgb_atlas_vs_pyrender.png]

On the built-in demo objects (copied to reach --objects), in one run:
  1. seconds per object in one process, interleaved per object (so all see the same load):
     * this pipeline (``--rgb-renderer atlas``): RGB frames and reference views drawn by the
       project's PBR shader as tiles of one MSAA atlas pass each, layer maps in one pass;
     * the same pipeline with ``--rgb-renderer pyrender`` (one pyrender render per image);
     * the plain way: a new pyrender scene per render, default 4x MSAA; normals by a
       normal-coloured flat-shaded mesh, depth from pyrender's depth buffer;
     all three produce T RGB frames, T normal and depth maps, six reference views.
  2. agreement of the atlas RGB with pyrender's (same object, poses, lights, background):
     PSNR and SSIM per demo object (frames and reference views), and a contact sheet
     (per object: pyrender row above atlas row; frames 0, T/2, T-1 and the front view);
  3. Ray jobs with 1 and 2 workers, alternated and repeated (--jobs): wall time, steady
     objects/s of the job (start-up excluded; auto shard size, as a user runs it), seconds
     per object per busy worker (start-up and the end-of-job tail excluded: see job_run) as
     median [min - max], the per-stage seconds of an object inside a job, read from the
     shard markers (each item's ``timings``: what a user reads to find slow objects; the
     shard's one file write, ``flush_seconds``, shared over its objects), and the
     compression of one sample array by array.
Medians throughout; the load average is printed with the figures (the machine is shared).
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

os.environ.setdefault("LP_NUM_THREADS", "1")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pipeline.render import egl  # noqa: E402, F401
from schemas.config import RenderConfig  # noqa: E402

STAGES = ("fetch", "load", "normalise", "setup", "references", "points", "trajectory", "render_layers",
          "render_rgb", "encode", "flush (per object, outside the item)")


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


def pipeline_seconds(path: Path, cfg, rgb_renderer: str) -> float:
    """One object through load + render_object (what a worker does), with this RGB renderer."""
    from pipeline.assets.mesh_io import load_object
    from pipeline.objaverse.sample import render_object
    from pipeline.render.workers import worker_renderers

    renderers = worker_renderers(cfg.resolution, cfg.yfov_deg, rgb_renderer)
    t0 = time.perf_counter()
    render_object(load_object(path.stem, path, cfg.max_file_mb, cfg.max_faces, cfg.max_texture_px), cfg, renderers)
    return time.perf_counter() - t0


_BASELINE = {}


def baseline_seconds(p: Path, cfg) -> float:
    """The plain way: every image is its own pyrender scene and render."""
    import pyrender
    import trimesh

    from pipeline.objaverse import trajectory
    from pipeline.render.cameras import look_at, reference_view_poses
    from pipeline.seeding import sample_rng
    from schemas import REF_VIEW_NAMES

    if cfg.resolution not in _BASELINE:
        _BASELINE[cfg.resolution] = pyrender.OffscreenRenderer(cfg.resolution, cfg.resolution)
    r = _BASELINE[cfg.resolution]  # never deleted: delete() terminates the EGL display every context shares
    cam = pyrender.PerspectiveCamera(yfov=np.radians(cfg.yfov_deg))
    cam_pose = look_at((0, 0, cfg.cam_distance))
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
        colored = trimesh.Trimesh(world.vertices, world.faces, process=False,
                                  vertex_colors=((cam_normals + 1) / 2 * 255).astype(np.uint8))
        r.render(scene_with([(pyrender.Mesh.from_trimesh(colored), np.eye(4))], np.eye(4), cam_pose),
                 flags=pyrender.RenderFlags.FLAT)  # normals + depth
    for view in reference_view_poses(cfg.cam_distance, REF_VIEW_NAMES):
        r.render(scene_with(rgb_nodes, np.eye(4), view))
    return time.perf_counter() - t0


def interleaved_seconds(paths, cfg, repeats: int) -> dict[str, list[float]]:
    """Per repeat and object the three methods back to back (order rotated per object)."""
    runs = {
        "atlas": lambda p: pipeline_seconds(p, cfg, "atlas"),
        "pyrender": lambda p: pipeline_seconds(p, cfg, "pyrender"),
        "baseline": lambda p: baseline_seconds(p, cfg),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up: contexts, shader compiles, imports
        fn(paths[0])
    names = list(runs)
    for rep in range(repeats):
        for j, p in enumerate(paths):
            for k in range(3):
                name = names[(rep + j + k) % 3]
                times[name].append(runs[name](p))
        print(f"  one process: repeat {rep + 1}/{repeats} done", flush=True)
    return times


def agreement(paths, cfg, sheet: Path | None) -> list[tuple[str, float, float, float, float]]:
    """(object, PSNR frames, SSIM frames, PSNR refs, SSIM refs) of atlas vs pyrender RGB."""
    from pipeline.assets.mesh_io import load_object
    from pipeline.objaverse.sample import render_object
    from pipeline.render.image_metrics import psnr, ssim
    from pipeline.render.workers import worker_renderers

    rows, strips = [], []
    for p in paths:
        obj = load_object(p.stem, p, cfg.max_file_mb, cfg.max_faces, cfg.max_texture_px)
        s = {k: render_object(obj, cfg, worker_renderers(cfg.resolution, cfg.yfov_deg, k))[0]
             for k in ("pyrender", "atlas")}
        a, b = s["atlas"], s["pyrender"]
        np.testing.assert_array_equal(a["mlo_depth"], b["mlo_depth"])  # geometry layers do not depend on RGB
        rows.append((p.stem, psnr(a["rgb"], b["rgb"]), ssim(a["rgb"], b["rgb"]),
                     psnr(a["ref_views"], b["ref_views"]), ssim(a["ref_views"], b["ref_views"])))
        T = cfg.frames
        for x in (b, a):
            strips.append(np.concatenate([x["rgb"][0], x["rgb"][T // 2], x["rgb"][T - 1], x["ref_views"][0]], 1))
    if sheet is not None:
        from PIL import Image

        sheet.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(strips, 0)).save(sheet)
    return rows


def job_run(folder: Path, out: Path, cfg, workers: int) -> tuple[float, float, float, int, list[dict]]:
    """(whole-job wall seconds, steady objects/s of the job, steady seconds per object per worker,
    samples, item records), with the shard size a user gets (``--samples-per-shard 0``: auto).

    Job steady rate, from the shard journals' item start times s_0 <= s_1 <= ...: the objects
    started after the first ``workers`` ones (which carry worker start-up: imports, EGL
    context, shader compiles) over the time from s_workers to the last shard's finish; on a
    small job it includes the tail where one worker has run out of shards and idles.
    Per worker (the journal's ``pid``): from the start of its second object to the end of its
    last one (its next start, or its shard's finish), over the objects in between; the median
    over workers. That is the cost of an object to a busy worker, start-up and tail excluded."""
    import dataclasses
    import json

    import ray

    from pipeline.engine import runner, shard_writer
    from pipeline.objaverse import job as objaverse_job

    if ray.is_initialized():
        ray.shutdown()
    runner._init_ray(workers, None)
    job = objaverse_job.build_job(str(folder), out, dataclasses.replace(cfg, samples_per_shard=0), workers=workers)
    t0 = time.perf_counter()
    summary = runner.run(job, workers=workers, progress=False, overwrite=True)
    wall = time.perf_counter() - t0
    ray.shutdown()
    markers = shard_writer.read_markers(out)
    events = []  # (start, pid, shard finish)
    for m in markers:
        for line in shard_writer.journal_path(out, m["shard"]).read_text().splitlines():
            if line.startswith("start "):
                rec = json.loads(line.split(" ", 1)[1])
                events.append((rec["t"], rec["pid"], m["finished"]))
    events.sort()
    starts = [t for t, _, _ in events]
    end = max(m["finished"] for m in markers)
    n = len(starts)
    steady = (n - workers) / (end - starts[workers]) if n > workers else float("nan")
    per_worker = []
    for pid in sorted({p for _, p, _ in events}):
        mine = [(t, fin) for t, p, fin in events if p == pid]
        if len(mine) >= 3:
            last_end = max(fin for _, fin in mine)  # its last shard's finish (flush and marker included)
            per_worker.append((last_end - mine[1][0]) / (len(mine) - 1))
    records = [r for m in markers for r in m["items"] if r["ok"]]
    flush = sum(m.get("flush_seconds", 0.0) for m in markers) / max(len(records), 1)
    for r in records:
        r.setdefault("timings", {})["flush (per object, outside the item)"] = flush
    per = statistics.median(per_worker) if per_worker else float("nan")
    return wall, steady, per, summary.samples_ok, records


def write_breakdown(store: Path, repeats: int = 3) -> list[tuple[str, float, float, float]]:
    """(array, median seconds, MiB raw, MB stored) to compress one sample of ``store`` array by
    array, as a shard task does (``shard_file.ShardSpec.encode_row``, one core): what the "encode"
    stage is made of, beside the contract check."""
    import zarr
    from numcodecs import blosc

    from pipeline.engine import shard_file
    from schemas.reader import StoreReader

    blosc.set_nthreads(1)  # as in a worker (shard_task): one core each
    reader = StoreReader(store)
    sample = reader.read(0)
    rows = []
    for spec in reader.layout.arrays:
        arr = zarr.open_array(str(Path(store) / spec.name), mode="r")
        sf = shard_file.ShardSpec.of(arr, Path(store) / spec.name)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            chunks = sf.encode_row(0, sample[spec.name])
            times.append(time.perf_counter() - t0)
        rows.append((spec.name, statistics.median(times), np.asarray(sample[spec.name]).nbytes / 2**20,
                     sum(map(len, chunks.values())) / 1e6))
    return sorted(rows, key=lambda r: -r[1])


def spread(xs: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))} - {fmt.format(max(xs))}]"


def stage_table(records: list[dict]) -> list[tuple[str, float, float]]:
    """(stage, median seconds per object, share of the item's seconds) over item records."""
    rows = []
    total = statistics.median(r["seconds"] for r in records)
    for st in STAGES:
        xs = [r.get("timings", {}).get(st, 0.0) for r in records]
        rows.append((st, statistics.median(xs), statistics.median(xs) / total))
    other = [r["seconds"] - sum(v for k, v in r.get("timings", {}).items() if k in STAGES[:-1]) for r in records]
    rows.append(("other (in the task)", statistics.median(other), statistics.median(other) / total))
    rows.append(("item total (record seconds)", total, 1.0))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the 5 demo objects, one process")
    ap.add_argument("--objects", type=int, default=40, help="objects per Ray job (40: with 2 workers, shards "
                    "of 10 hold two of each demo object, so both workers get the same mix)")
    ap.add_argument("--jobs", type=int, default=3, help="repeats of the 1- and 2-worker jobs (alternated)")
    ap.add_argument("--sheet", type=Path, default=Path("out/rgb_atlas_vs_pyrender.png"), help="contact sheet PNG")
    args = ap.parse_args()
    cfg = RenderConfig(frames=args.frames, resolution=args.resolution, samples_per_shard=1).validate()
    tmp = Path(tempfile.mkdtemp(prefix="bench-objaverse-"))
    t_start = time.time()
    try:
        paths = demo_meshes(tmp, max(args.objects, 5))
        print(f"agreement atlas vs pyrender on the 5 demo objects (T={cfg.frames}, R={cfg.resolution}) ...", flush=True)
        agree = agreement(paths[:5], cfg, args.sheet)
        print("one process, interleaved ...", flush=True)
        load_1 = os.getloadavg()
        times = interleaved_seconds(paths[:5], cfg, args.repeats)
        from pipeline.engine.shard_writer import store_bytes

        jobs: dict[int, list] = {1: [], 2: []}
        for rep in range(args.jobs):
            for w in (1, 2) if rep % 2 == 0 else (2, 1):
                jobs[w].append(job_run(tmp / "objects", tmp / f"w{w}.zarr", cfg, w))
                print(f"  job {rep + 1}/{args.jobs}, {w} worker(s): {jobs[w][-1][0]:.1f} s", flush=True)
        per_sample = store_bytes(tmp / "w2.zarr") / max(jobs[2][-1][3], 1)
        writes = write_breakdown(tmp / "w2.zarr")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_2 = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nrender-objaverse benchmark: T={cfg.frames}, R={cfg.resolution}, LP_NUM_THREADS="
          f"{os.environ.get('LP_NUM_THREADS')}, renderer: {renderer_name()}, {os.cpu_count()} CPUs, "
          f"load average {load_1[0]:.1f} (start) / {load_2[0]:.1f} (end), {time.time() - t_start:.0f} s")
    print(f"\n1. one process, 5 demo objects x {args.repeats}, interleaved: seconds per object, median [min - max]")
    for k, label in (("atlas", "this pipeline (--rgb-renderer atlas)"), ("pyrender", "this pipeline, --rgb-renderer "
                     "pyrender"), ("baseline", "plain pyrender baseline")):
        print(f"   {label:40}{spread(times[k]):>24}   baseline / this = {med['baseline'] / med[k]:.2f}x")
    images = 3 * cfg.frames + 6
    print(f"   renders/s (rgb + normal + depth per frame, 6 views): atlas {images / med['atlas']:.1f}, "
          f"baseline {images / med['baseline']:.1f}")
    per_obj = [b / a for a, b in zip(times["atlas"], times["baseline"], strict=True)]
    print(f"   per-object ratio baseline/atlas (paired runs): median {spread(per_obj)}")
    n_obj = len(agree)
    print(f"   {'object (median of ' + str(args.repeats) + ')':36}{'atlas':>8}{'pyrender':>10}{'baseline':>10}{'ratio':>8}")
    for j, (name, *_) in enumerate(agree):
        m = {k: statistics.median(v[j::n_obj]) for k, v in times.items()}
        print(f"   {name:36}{m['atlas']:>8.3f}{m['pyrender']:>10.3f}{m['baseline']:>10.3f}"
              f"{m['baseline'] / m['atlas']:>7.2f}x")
    print(f"\n2. atlas vs pyrender RGB (contact sheet: {args.sheet}; per object pyrender row above atlas row)")
    print(f"   {'object':36}{'PSNR frames':>12}{'SSIM frames':>12}{'PSNR refs':>11}{'SSIM refs':>11}")
    for name, pf, sf, pr, sr in agree:
        print(f"   {name:36}{pf:>10.1f}dB{sf:>12.4f}{pr:>9.1f}dB{sr:>11.4f}")
    print(f"\n3. Ray jobs, {args.objects} objects, {args.jobs} jobs each, median [min - max]")
    wall = {w: [j[0] for j in jobs[w]] for w in (1, 2)}
    rate = {w: [j[1] for j in jobs[w]] for w in (1, 2)}
    busy = {w: [j[2] for j in jobs[w]] for w in (1, 2)}
    print(f"   job wall, 1 worker   {spread(wall[1], '{:.1f}')} s")
    print(f"   job wall, 2 workers  {spread(wall[2], '{:.1f}')} s")
    print(f"   steady objects/s of the job (tail included): 1 worker {spread(rate[1])}, 2 workers {spread(rate[2])}")
    print(f"   speed-up 1 -> 2 workers: job wall {statistics.median(wall[1]) / statistics.median(wall[2]):.2f}x, "
          f"steady {statistics.median(rate[2]) / statistics.median(rate[1]):.2f}x")
    print(f"   s/object per busy worker (start-up and tail excluded; target <= 0.6): "
          f"1 worker {spread(busy[1], '{:.3f}')}, 2 workers {spread(busy[2], '{:.3f}')}")
    print(f"   s/object per worker from the job rate (tail included): 1 worker {spread([1 / r for r in rate[1]], '{:.3f}')}, "
          f"2 workers {spread([2 / r for r in rate[2]], '{:.3f}')}")
    print(f"   bytes/sample on disk {per_sample / 2**20:.2f} MiB ({per_sample / 1e6:.2f} MB)")
    for w in (1, 2):
        item = statistics.median(r["seconds"] for j in jobs[w] for r in j[4])
        per = statistics.median(busy[w])
        print(f"   {w} worker(s): {per:.3f} s/object per busy worker = item {item:.3f} s (record, median) + "
              f"{per - item:.3f} s (shard flush, marker, scheduling, and the mean-median gap of the object mix)")
    for w in (1, 2):
        recs = [r for j in jobs[w] for r in j[4]]
        print(f"\n   per-stage seconds of an object inside a job, {w} worker(s) ({len(recs)} items; shard markers)")
        for st, sec, share in stage_table(recs):
            print(f"     {st:32}{sec:>8.3f} s {100 * share:>6.1f} %")
    print("\n   the encode stage by array (one sample compressed as a shard task does, median of 3):")
    for name, sec, mib, mb in writes:
        print(f"     {name:32}{sec:>8.3f} s {mib:>8.1f} MiB raw {mb:>8.2f} MB stored")
    print(f"\n   one process for comparison: {med['atlas']:.3f} s/object (includes load + normalise, no write)")


def renderer_name() -> str:
    from pipeline.render.context import shared_context

    return shared_context(64).info()["renderer"]


if __name__ == "__main__":
    main()
