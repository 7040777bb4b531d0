"""Everything in shared/GPU.md in one run, one report file: what scripts/gpu_check.sh runs.

    python benchmarks/gpu_check.py [--out REPORT.json] [--budget-s 420] [--mode auto|gpu|cpu]

GPU mode (a CUDA device): the sd15 trainer at paper size with random weights (stage 1 batch 4 at
512^2 bf16 with and without gradient checkpointing, fused Adam as the trainer now uses and
torch's default foreach Adam as it used before; stage 2 24 frames), a
torch-profiler table of a step that misses its target, fp16 (GradScaler) steps checked for
NaN, seconds per 24-frame clip at 25 DDIM steps with guidance, the EGL device picked for each
CUDA_VISIBLE_DEVICES, the MLO render benchmark (ms per 13-layer frame) and seconds per Objaverse
object in-process, with the GL renderer string that says which GPU drew them.
CPU mode: the same checks at tiny sizes (the tiny preset, 64^2, 4 frames, 2 DDIM steps, Mesa's
software EGL), to prove the script; the report says which GPU checks it skipped.

Every check runs in its own try block: a failure is recorded with a one-line reason and the
next check runs. A check whose estimate would pass ``--budget-s`` is skipped (and says so).
The report (JSON) is rewritten after every check (temp file, then rename): a run killed at its
time limit still leaves every figure it had.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGETS = {"stage1_it_per_s": 2.0, "stage1_peak_gib": 40.0, "stage2_s_per_it": 1.5, "stage2_peak_gib": 60.0}
SIZES = {  # what each mode runs
    "gpu": dict(preset="sd15", stage1_batch=4, frames=24, steps=5, stage2_steps=3, fp16_steps=4, sample_steps=25,
                render_res=512, render_repeats=9, object_frames=24, objects=3),
    "cpu": dict(preset="tiny", stage1_batch=2, frames=4, steps=2, stage2_steps=2, fp16_steps=2, sample_steps=2,
                render_res=128, render_repeats=3, object_frames=4, objects=2),
}


class Report:
    """The report file: header, rows (check, row, value, note, figures), skipped, errors."""

    def __init__(self, path: Path, mode: str, budget_s: float):
        self.path, self.t0, self.budget_s = path, time.perf_counter(), budget_s
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        self.data = {"report": "manivideo gpu_check", "date_utc": datetime.datetime.now(datetime.UTC).isoformat(),
                     "mode": mode, "gpu": gpu, "host": platform.node(), "python": platform.python_version(),
                     "torch": torch.__version__, "cuda": torch.version.cuda, "command": " ".join(sys.argv),
                     "budget_s": budget_s, "sizes": SIZES[mode], "rows": [], "skipped": [], "errors": [],
                     "profiles": {}, "elapsed_s": 0.0}
        try:
            import diffusers

            self.data["diffusers"] = diffusers.__version__
        except ImportError:
            self.data["diffusers"] = None
        self.write()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)

    def row(self, check: str, row: dict) -> None:
        self.data["rows"].append({"check": check, **row})
        print(f"  {row['row']}: {row['value']}  ({row.get('note', '')})", flush=True)
        self.write()

    def skip(self, check: str, reason: str) -> None:
        self.data["skipped"].append({"check": check, "reason": reason})
        print(f"  skipped {check}: {reason}", flush=True)
        self.write()

    def error(self, check: str, e: BaseException) -> None:
        line = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        self.data["errors"].append({"check": check, "error": line})
        print(f"  error in {check}: {line}", flush=True)
        self.write()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- trainer -----------------------------------------------------------------------------------

def check_trainer(rep: Report, mode: str, dev: torch.device) -> None:
    from benchmarks.train_step import bench_step

    z = SIZES[mode]
    common = dict(stage1_batch=z["stage1_batch"], frames=z["frames"])
    runs = [("stage1", True, False, z["steps"]), ("stage1", False, False, z["steps"]),
            ("stage1", True, True, z["steps"]), ("stage2", True, False, z["stage2_steps"])]
    for stage, ck, foreach, steps in runs:
        name = f"trainer_{stage}_{'ckpt' if ck else 'no_ckpt'}{'_foreach' if foreach else ''}"
        if not _time_left(rep, name, 90 if mode == "gpu" else 60):
            continue
        try:
            r = bench_step(z["preset"], stage, dev, steps, checkpointing=ck, adam="foreach" if foreach else "fused",
                           **common)
            r["note"] += _target_note(stage, r) if mode == "gpu" else ""
            rep.row(name, r)
            if mode == "gpu" and not foreach and ck and _missed(stage, r) and _time_left(rep, "profile", 60):
                rep.data["profiles"][name] = profile_step(z["preset"], stage, dev, **common)
                rep.write()
        except Exception as e:  # noqa: BLE001
            rep.error(name, e)
        _free()


def _missed(stage: str, r: dict) -> bool:
    if stage == "stage1":
        return r["it_per_s"] < TARGETS["stage1_it_per_s"] or r["peak_gib"] > TARGETS["stage1_peak_gib"]
    return r["s_per_it"] > TARGETS["stage2_s_per_it"] or r["peak_gib"] > TARGETS["stage2_peak_gib"]


def _target_note(stage: str, r: dict) -> str:
    if stage == "stage1":
        return f"; target >= {TARGETS['stage1_it_per_s']} it/s under {TARGETS['stage1_peak_gib']:.0f} GiB: " + \
            ("missed" if _missed(stage, r) else "met")
    return f"; target <= {TARGETS['stage2_s_per_it']} s/it under {TARGETS['stage2_peak_gib']:.0f} GiB: " + \
        ("missed" if _missed(stage, r) else "met")


def profile_step(preset: str, stage: str, dev: torch.device, **over) -> str:
    """torch.profiler table (top ops by self CUDA time) of one step after a warm-up."""
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.train_step import build_on, synthetic_batch
    from trainer import train as T
    from trainer.config import load_config

    cfg = load_config(preset, overrides=over)
    model = build_on(cfg, stage, dev)
    model.enable_gradient_checkpointing()
    model.hold_frozen_in(torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5, fused=True)
    batch = synthetic_batch(cfg.batch(stage), 1 if stage == "stage1" else cfg.frames, cfg.resolution)
    sched, gen = T.make_scheduler(cfg), torch.Generator(dev).manual_seed(0)

    def step():
        T.diffusion_loss(model, model, batch, sched, gen, cfg, dev).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15)


def check_fp16(rep: Report, mode: str, dev: torch.device) -> None:
    from benchmarks.train_step import bench_step

    z = SIZES[mode]
    if not _time_left(rep, "fp16_steps", 60):
        return
    try:
        r = bench_step(z["preset"], "stage1", dev, z["fp16_steps"], mixed_precision="fp16",
                       stage1_batch=z["stage1_batch"])
        ok = r["nonfinite_steps"] == 0
        rep.row("fp16_steps", {**r, "row": f"fp16 (GradScaler) {r['row']}",
                               "value": f"{len(r['losses'])} steps, {'no NaN/inf' if ok else 'NON-FINITE loss'}",
                               "note": f"losses {', '.join(f'{x:.4f}' for x in r['losses'])}; {r['value']}"})
    except Exception as e:  # noqa: BLE001
        rep.error("fp16_steps", e)
    _free()


def check_sampling(rep: Report, mode: str, dev: torch.device) -> None:
    """Seconds per clip: F frames, DDIM steps with guidance, a stage-2 model held in the autocast dtype."""
    from benchmarks.train_step import build_on, synthetic_item
    from trainer.config import load_config
    from trainer.inference import sample_clips

    z = SIZES[mode]
    if not _time_left(rep, "sampling", 90 if mode == "gpu" else 60):
        return
    try:
        cfg = load_config(z["preset"], overrides=dict(frames=z["frames"]))
        model = build_on(cfg, "stage2", dev).eval().requires_grad_(False)
        if dev.type == "cuda":
            model.hold_frozen_in(torch.bfloat16)
        items = [synthetic_item(z["frames"], cfg.resolution)]
        sample_clips(model, items, cfg, dev, steps=2)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        out = sample_clips(model, items, cfg, dev, steps=z["sample_steps"])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        s = time.perf_counter() - t0
        finite = bool(torch.isfinite(out["video"]).all())
        mem = f"{torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB peak allocated" if dev.type == "cuda" else ""
        rep.row("sampling", {"row": f"{z['preset']} stage2 sampling ({z['frames']} frames, {cfg.resolution}^2, "
                                    f"{z['sample_steps']} DDIM steps, guidance {cfg.guidance_scale}, {dev.type})",
                             "value": f"{s:.2f} s/clip", "note": f"{mem}; video finite: {finite}; VAE decode included",
                             "s_per_clip": s, "finite": finite})
        del model
    except Exception as e:  # noqa: BLE001
        rep.error("sampling", e)
    _free()


# --- rendering ---------------------------------------------------------------------------------

_EGL_PROBE = """
import json, os
from pipeline.render import egl
ids = egl.egl_devices_cuda_ids()
pick = egl.select_egl_device()
from pipeline.render.context import shared_context
info = shared_context(64).info()
print(json.dumps({"cuda_ids_per_egl_device": ids, "picked": pick, "renderer": info["renderer"]}))
"""


def check_egl_device(rep: Report, mode: str) -> None:
    """Which EGL device pipeline/render/egl.py picks for each CUDA_VISIBLE_DEVICES (fresh process each)."""
    n = torch.cuda.device_count()
    for visible in [str(i) for i in range(max(n, 1))] + [""]:
        name = f"egl_device[CUDA_VISIBLE_DEVICES={visible!r}]"
        env = {k: v for k, v in os.environ.items() if k != "EGL_DEVICE_ID"}
        env.update(CUDA_VISIBLE_DEVICES=visible, PYOPENGL_PLATFORM="egl",
                   PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
        try:
            p = subprocess.run([sys.executable, "-c", _EGL_PROBE], env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=120)
            if p.returncode != 0:
                raise RuntimeError((p.stderr.strip().splitlines() or ["no output"])[-1])
            got = json.loads(p.stdout.strip().splitlines()[-1])
            rep.row("egl_device", {"row": name, "value": f"EGL device {got['picked']} ({got['renderer']})",
                                   "note": f"CUDA index per EGL device: {got['cuda_ids_per_egl_device']}", **got})
        except Exception as e:  # noqa: BLE001
            rep.error(name, e)


def check_mlo_render(rep: Report, mode: str) -> None:
    """benchmarks/render_mlo.py's atlas path: ms per 13-layer frame, 1 frame per call and 8 per call."""
    z = SIZES[mode]
    if not _time_left(rep, "mlo_render", 60):
        return
    try:
        from benchmarks import render_mlo as B
        from pipeline.render import egl
        from pipeline.render.cameras import intrinsics
        from pipeline.render.context import shared_context
        from pipeline.render.layers import LayerRenderer
        from pipeline.render.mlo import HandTrack, ObjectTrack, render_mlo

        egl.select_egl_device()
        r = z["render_res"]
        K = intrinsics(r, 40.0)
        ctx = shared_context(r)
        lr = LayerRenderer(ctx, r, near=0.05, far=50.0)
        obj, hands = B.scene()
        t = 8
        clip = [B.scene(i) for i in range(t)]
        clip_hands = {s: HandTrack(clip[0][1][s].model, np.concatenate([c[1][s].vertices for c in clip]),
                                   np.ones(t, bool)) for s in ("left", "right")}
        clip_obj = ObjectTrack(obj.vertices, obj.normals, obj.faces, np.concatenate([c[0].modelviews for c in clip]),
                               np.ones(t, bool))
        ms = B.timed_interleaved({"one": lambda: render_mlo(lr, K, 1, obj, hands),
                                  "clip": lambda: render_mlo(lr, K, t, clip_obj, clip_hands)},
                                 repeats=z["render_repeats"])
        renderer = ctx.info()["renderer"]
        rep.row("mlo_render", {"row": f"MLO render, 13 layers, {r}^2 (EGL device {os.environ.get('EGL_DEVICE_ID')})",
                               "value": f"{ms['one']:.2f} ms/frame (1 frame/call), {ms['clip'] / t:.2f} ms/frame "
                                        f"({t} frames/call)",
                               "note": f"GL renderer: {renderer}; median of {z['render_repeats']}",
                               "ms_per_frame": ms["one"], "ms_per_frame_clip": ms["clip"] / t, "renderer": renderer})
    except Exception as e:  # noqa: BLE001
        rep.error("mlo_render", e)


def check_objaverse(rep: Report, mode: str) -> None:
    """Seconds per built-in Objaverse-format object through load + render_object, in this process."""
    z = SIZES[mode]
    if not _time_left(rep, "objaverse_object", 90):
        return
    try:
        from benchmarks.render_objaverse import demo_meshes, pipeline_seconds
        from pipeline.render import egl
        from pipeline.render.context import shared_context
        from schemas.config import RenderConfig

        egl.select_egl_device()
        r = z["render_res"] if mode == "cpu" else 512
        cfg = RenderConfig(frames=z["object_frames"], resolution=r, samples_per_shard=1).validate()
        with tempfile.TemporaryDirectory() as tmp:
            paths = demo_meshes(Path(tmp), z["objects"] + 1)
            pipeline_seconds(paths[0], cfg, "atlas")  # warm-up: context, shaders
            secs = [pipeline_seconds(p, cfg, "atlas") for p in paths[1:]]
        renderer = shared_context(r).info()["renderer"]
        rep.row("objaverse_object", {"row": f"Objaverse object in-process ({cfg.frames} frames, {r}^2, atlas RGB)",
                                     "value": f"{np.median(secs):.2f} s/object",
                                     "note": f"objects {', '.join(f'{s:.2f}' for s in secs)} s; GL renderer: {renderer}",
                                     "s_per_object": float(np.median(secs)), "renderer": renderer})
    except Exception as e:  # noqa: BLE001
        rep.error("objaverse_object", e)


def _time_left(rep: Report, check: str, estimate_s: float) -> bool:
    if rep.elapsed() + estimate_s > rep.budget_s:
        rep.skip(check, f"time: {rep.elapsed():.0f} s spent, ~{estimate_s:.0f} s more would pass --budget-s "
                        f"{rep.budget_s:.0f}")
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "out"), "gpu_check.json"),
                    help="report file (default $OUT/gpu_check.json, or out/gpu_check.json)")
    ap.add_argument("--budget-s", type=float, default=420, help="skip checks that would run past this (seconds)")
    ap.add_argument("--mode", choices=("auto", "gpu", "cpu"), default="auto",
                    help="gpu: paper sizes (needs CUDA); cpu: tiny sizes; auto: gpu when CUDA is available")
    ap.add_argument("--only", help="comma-separated checks: trainer,fp16,sampling,egl,mlo,objaverse")
    args = ap.parse_args()
    mode = ("gpu" if torch.cuda.is_available() else "cpu") if args.mode == "auto" else args.mode
    if mode == "gpu" and not torch.cuda.is_available():
        print("gpu_check: --mode gpu needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    rep = Report(Path(args.out), mode, args.budget_s)
    dev = torch.device("cuda" if mode == "gpu" else "cpu")
    print(f"gpu_check: mode {mode}, {rep.data['gpu'] or 'no GPU'}, torch {torch.__version__}, "
          f"diffusers {rep.data['diffusers']}, report {args.out}", flush=True)
    if mode == "cpu":
        for what in ("sd15 trainer at paper size (stage 1 batch 4 / stage 2 24 frames, 512^2)", "torch profiler",
                     "sampling at 24 frames x 25 DDIM steps", "NVIDIA EGL (Mesa's software EGL renders instead)"):
            rep.skip(what, "no CUDA GPU: measured at tiny sizes instead")
    checks = {"trainer": lambda: check_trainer(rep, mode, dev), "fp16": lambda: check_fp16(rep, mode, dev),
              "sampling": lambda: check_sampling(rep, mode, dev), "egl": lambda: check_egl_device(rep, mode),
              "mlo": lambda: check_mlo_render(rep, mode), "objaverse": lambda: check_objaverse(rep, mode)}
    wanted = args.only.split(",") if args.only else list(checks)
    unknown = sorted(set(wanted) - set(checks))
    if unknown:
        print(f"gpu_check: unknown checks {unknown}; have {list(checks)}", file=sys.stderr)
        return 2
    for name in wanted:
        print(f"[{rep.elapsed():6.1f} s] {name}", flush=True)
        checks[name]()
    rep.write()
    d = rep.data
    print(f"done in {d['elapsed_s']} s: {len(d['rows'])} figures, {len(d['skipped'])} skipped, "
          f"{len(d['errors'])} errors -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
