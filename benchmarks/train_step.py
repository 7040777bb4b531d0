"""Trainer throughput: data-loader clips/s from a real store, tiny step time on CPU, sd15 on GPU.

    python cli.py render-objaverse --source builtin --out /tmp/bench.zarr --workers 2   # 24 x 512^2 clips
    python benchmarks/train_step.py --store /tmp/bench.zarr
    # optional, the heavy case (13 layers): an HOI store at 24 x 512^2
    python cli.py make-demo-hoi /tmp/dex24 --frames 24
    python cli.py render-hoi dexycb --root /tmp/dex24 --hand-model stand-in --out /tmp/bench_hoi.zarr --frames 24
    python benchmarks/train_step.py --store /tmp/bench.zarr --store /tmp/bench_hoi.zarr
    python benchmarks/train_step.py --store /tmp/bench_hoi.zarr --loader-only --dense   # the dense path
    python benchmarks/train_step.py --store /tmp/bench_hoi.zarr --loader-only --s3      # + from a local S3 server

Rows:
  * loader: clips/s of T-frame windows (stage-2 items) through the DataLoader with N spawned
    workers, after the first batch (worker start-up excluded): the median of --repeats runs and
    each run, and the bytes moved per clip. Target: >= 4 clips/s of 24 x 512^2 13-layer HOI clips
    with 2 workers. Layer maps move as bounding-box crops (trainer.compact); --dense moves them
    dense (the earlier path), --codec-pipeline zarrs decodes with the optional Rust pipeline.
  * loader from object storage (--s3): the same store copied into a bucket of a local S3-compatible
    server (moto's server mode on 127.0.0.1, ``tests/s3_server.py``; a dev dependency) and read through
    its ``s3://`` URL, beside the local-disk row of the same run. moto is a Python server: its
    per-request cost, not the network, bounds this figure (a real bucket answers many requests in
    parallel; the loader reads a sample's arrays concurrently and prefetches deeper from object stores).
  * tiny stage1 / stage2 step: one optimiser step of the tiny preset on CPU (data already loaded).
  * sd15 stage1 (batch 4) / stage2 (24 frames) at 512^2, bf16 + gradient checkpointing: only with a
    CUDA GPU (targets on 80 GB: stage 1 >= 2 it/s under 40 GB; stage 2 <= 1.5 s/it under 60 GB).
    Without one the rows say "not measured". scripts/gpu_check.sh measures these and more on a GPU.
  * --budget: the memory budget of one sd15 step (parameters, gradients, Adam state, activations,
    peak) per stage, traced on the CPU from a model built out of a diffusers SD1.5-layout folder
    (benchmarks/memory_budget.py; ~3 min a row on 2 cores). "traced (CPU)", never a GPU figure:

    python benchmarks/train_step.py --loader-only --budget --sd15-folder /tmp/sd15_random
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.store import N_LAYERS  # noqa: E402
from trainer import train as T  # noqa: E402
from trainer.compact import batch_bytes  # noqa: E402
from trainer.conditions import collate  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.data import CODEC_PIPELINES, MixedStores, make_loader, use_codec_pipeline  # noqa: E402
from trainer.model import build_model  # noqa: E402


def bench_loader(store: str, workers: int, frames: int, clips: int, repeats: int = 3, compact: bool = True,
                 codec_pipeline: str = "auto") -> dict:
    """clips/s of the DataLoader: ``repeats`` runs of ``clips`` clips after a warm-up batch; the median
    and the range of the runs, and the bytes a worker moves per clip (the collated batch's tensors)."""
    cfg = load_config("sd15", overrides=dict(stores=[store], frames=frames, num_workers=workers))
    ds = MixedStores(cfg.stores, cfg, frames=frames)
    res = ds.readers[0].layout.resolution
    it = iter(make_loader(ds, 1, num_workers=workers, compact=compact, codec_pipeline=codec_pipeline))
    codec_pipeline = use_codec_pipeline(codec_pipeline)  # what the workers resolved "auto" to
    next(it)  # worker start-up (spawn + imports) is not throughput
    rates, moved = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(clips):
            moved.append(batch_bytes(next(it)))
        rates.append(clips / (time.perf_counter() - t0))
    how = "boxes" if compact else "dense"
    return {"row": f"loader ({workers} workers, {frames}x{res}^2, {ds.readers[0].layout.kind}, {how}, "
                   f"{codec_pipeline})",
            "value": f"{np.median(rates):.2f} clips/s",
            "note": f"runs {' '.join(f'{r:.2f}' for r in rates)}; {np.median(moved) / 2**20:.0f} MB/clip moved"}


def synthetic_item(f: int, r: int, seed: int = 0) -> dict:
    """A raw item (trainer.data.MixedStores.load layout) with all 13 layers (the heaviest case: HOI
    data), random content: F frames at r x r."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.4, 0.6, (f, N_LAYERS, r, r)).astype(np.float16)
    return {"rgb": rng.integers(0, 256, (f, r, r, 3), dtype=np.uint8),
            "normal": rng.integers(1, 256, (f, N_LAYERS, r, r, 3), dtype=np.uint8), "depth": depth,
            "layer_idx": np.arange(N_LAYERS, dtype=np.int64), "refs": rng.integers(0, 256, (7, r, r, 3), dtype=np.uint8),
            "points": rng.normal(size=(2048, 6)).astype(np.float32), "source": np.int64(1),
            "ref_keep": np.float32(1), "jitter": np.ones(3, np.float32), "flip": np.bool_(False)}


def synthetic_batch(b: int, f: int, r: int, seed: int = 0) -> dict:
    """A collated raw batch of ``b`` copies of ``synthetic_item``."""
    return collate([synthetic_item(f, r, seed)] * b)


def build_on(cfg, stage: str, device: torch.device):
    """The model built directly on ``device`` (sd15 on a GPU: seconds instead of a CPU init and copy)."""
    with device:
        return build_model(cfg, stage)


def bench_step(preset: str, stage: str, device: torch.device, steps: int, batch: dict | None = None,
               checkpointing: bool | None = None, adam: str = "fused", model=None, **over) -> dict:
    """Median seconds of one optimiser step (step 0 warms up and is not counted) and the peak memory.

    ``checkpointing``: None = the preset's. ``adam``: "fused" (what the trainer uses on CUDA) or
    "foreach" (torch's default on CUDA, the trainer's before). Mixed precision as the trainer does it on CUDA: autocast, frozen weights held
    in the autocast dtype, a GradScaler for fp16. Returns a row (row, value, note) plus the figures
    (s_per_it, it_per_s, peak_gib, nonfinite_steps, losses)."""
    cfg = load_config(preset, overrides=over)
    if checkpointing is not None:
        cfg.gradient_checkpointing = checkpointing
    model = model or build_on(cfg, stage, device)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if cfg.mixed_precision != "no" and device.type == "cuda":
        model.hold_frozen_in(torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr(stage), **{"fused": dict(fused=True), "foreach": dict(foreach=True)}[adam])
    scaler = torch.amp.GradScaler(device.type) if cfg.mixed_precision == "fp16" else None
    sched = T.make_scheduler(cfg)
    f = 1 if stage == "stage1" else cfg.frames
    batch = batch or synthetic_batch(cfg.batch(stage), f, cfg.resolution)
    gen = torch.Generator(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    times, losses, nonfinite = [], [], 0
    for i in range(steps + 1):  # step 0 warms up (allocator, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen.manual_seed(i)
        loss = T.diffusion_loss(model, model, batch, sched, gen, cfg, device)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
        nonfinite += not np.isfinite(losses[-1])
    s = float(np.median(times[1:]))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        mem = f"{peak:.1f} GiB peak allocated"
    else:
        peak = T.peak_memory_mb(device) / 1024
        mem = f"{peak:.1f} GiB peak RSS (process)"
    shape = f"batch {cfg.batch(stage)}" + ("" if stage == "stage1" else f", {cfg.frames} frames")
    opts = [cfg.mixed_precision if cfg.mixed_precision != "no" else "fp32",
            "checkpointing" if cfg.gradient_checkpointing else "no checkpointing", f"{adam} Adam"]
    return {"row": f"{preset} {stage} step ({shape}, {cfg.resolution}^2, {', '.join(opts)}, {device.type})",
            "value": f"{s:.3f} s/it ({1 / s:.2f} it/s)", "note": mem + (f"; {nonfinite} non-finite losses"
                                                                        if nonfinite else ""),
            "s_per_it": s, "it_per_s": 1 / s, "peak_gib": peak, "nonfinite_steps": nonfinite, "losses": losses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", action="append", help="store(s) to read (repeatable); default /tmp/bench.zarr")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="loader runs of --clips clips (median and range)")
    ap.add_argument("--dense", action="store_true", help="move dense layer maps (the path before boxes)")
    ap.add_argument("--codec-pipeline", choices=CODEC_PIPELINES, default="auto",
                    help="zarr-python's codec pipeline or the Rust one of the optional 'zarrs' package "
                         "(auto: zarrs when installed)")
    ap.add_argument("--loader-only", action="store_true", help="skip the step rows")
    ap.add_argument("--s3", action="store_true", help="also read each store from a local S3 server (moto)")
    ap.add_argument("--budget", action="store_true",
                    help="add the sd15 memory budget rows, traced on the CPU (benchmarks/memory_budget.py)")
    ap.add_argument("--sd15-folder", default="/tmp/sd15_random",
                    help="diffusers SD1.5-layout folder for --budget (written with random weights if missing)")
    ap.add_argument("--budget-json", help="also write the --budget figures to this JSON file")
    args = ap.parse_args()
    rows = []
    server = start_s3() if args.s3 else None
    for store in args.store or ["/tmp/bench.zarr"]:
        if (Path(store) / "zarr.json").exists():  # a local store (--s3 copies it into the bucket)
            rows.append(bench_loader(store, args.workers, args.frames, args.clips, args.repeats, not args.dense,
                                     args.codec_pipeline))
            if server is not None:
                from schemas.storage import copy_all

                url = f"s3://bench/{Path(store).name}"
                t0 = time.perf_counter()
                nbytes = copy_all(store, url)
                row = bench_loader(url, args.workers, args.frames, args.clips, args.repeats, not args.dense,
                                   args.codec_pipeline)
                row["row"] = row["row"].replace("loader (", "loader from local S3 server (")
                row["note"] += f"; store uploaded ({nbytes / 2**20:.0f} MiB in {time.perf_counter() - t0:.0f} s)"
                rows[-1]["row"] = rows[-1]["row"].replace("loader (", "loader from local disk (")
                rows.append(row)
        else:
            rows.append({"row": "loader", "value": "skipped", "note": f"no store at {store} (see docstring)"})
    if not args.loader_only:
        rows.extend(step_rows(args.steps))
    if args.budget:
        rows.extend(budget_rows(args.sd15_folder, args.budget_json))
    w = max(len(r["row"]) for r in rows)
    v = max(len(r["value"]) for r in rows)
    print(f"{'benchmark':<{w}}  {'result':<{v}}  note")
    print("-" * (w + v + 30))
    for r in rows:
        print(f"{r['row']:<{w}}  {r['value']:<{v}}  {r['note']}")


def start_s3():
    """moto's S3 server on 127.0.0.1 with a bucket "bench"; the environment points obstore at it (the
    loader's spawned workers inherit it)."""
    import atexit
    import os

    from tests.s3_server import LocalS3, free_port, s3_env

    port = free_port()
    os.environ.update(s3_env(port))
    server = LocalS3(port).start()
    atexit.register(server.stop)
    server.make_bucket("bench")
    return server


def step_rows(steps: int) -> list[dict]:
    rows = []
    cpu = torch.device("cpu")
    rows.append(bench_step("tiny", "stage1", cpu, steps))
    rows.append(bench_step("tiny", "stage2", cpu, steps))
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        rows.append(bench_step("sd15", "stage1", gpu, steps))
        rows.append(bench_step("sd15", "stage2", gpu, steps))
    else:
        for stage, shape in (("stage1", "batch 4"), ("stage2", "24 frames")):
            rows.append({"row": f"sd15 {stage} step ({shape}, 512^2)", "value": "not measured", "note": "no CUDA GPU"})
    return rows


def budget_rows(folder: str, json_path: str | None = None) -> list[dict]:
    """Traced memory budget of sd15 steps (now vs before the memory work; with and without checkpointing)."""
    import json

    from benchmarks.memory_budget import (
        format_rows,
        trace_flops,
        trace_optimizer,
        trace_step,
        write_random_sd15,
    )

    write_random_sd15(folder)
    runs = [("stage1", True, False), ("stage1", True, True), ("stage1", False, False),
            ("stage2", True, False), ("stage2", True, True), ("stage2", False, False)]
    results, rows = [], []
    for stage, checkpointing, before in runs:  # "before": also the optimizer it used (torch's CUDA default)
        results.append(trace_step(folder, stage, checkpointing=checkpointing, before=before,
                                  optimizer="foreach" if before else "fused"))
        rows.extend(format_rows(results[-1:]))
        print(rows[-1], flush=True)
    adam = [trace_optimizer(folder, "stage1", impl) for impl in ("fused", "foreach", "for-loop")]
    for a in adam:
        rows.append({"row": f"sd15 stage1 Adam ({a['impl']}), {a['trainable_params'] / 1e9:.3f} B trainable",
                     "value": f"state {a['state_bytes'] / 2**30:.2f} GiB",
                     "note": f"traced (CPU): + {a['step_transient_bytes'] / 2**30:.2f} GiB of temporaries during the step"})
        print(rows[-1], flush=True)
    flops = {str(per_clip): trace_flops(folder, "stage2", per_clip) for per_clip in (False, True)}
    rows.append({"row": "sd15 stage2 step FLOPs (24 frames, fwd + recompute + bwd), reference K/V per clip",
                 "value": f"{flops['True'] / 1e12:.1f} TFLOP", "note": f"traced (CPU): per frame (before) "
                                                                      f"{flops['False'] / 1e12:.1f} TFLOP"})
    print(rows[-1], flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps({"steps": results, "adam": adam, "flops": flops}, indent=2))
    return rows


if __name__ == "__main__":
    main()
